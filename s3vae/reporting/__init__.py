"""Tables (CSV, Markdown beside the paper's values), figures and training curves."""
