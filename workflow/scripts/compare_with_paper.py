# Thin entry point for rule compare_with_paper (logic: s3vae.reporting.tables).
from pathlib import Path

from s3vae.reporting.tables import paper_comparison
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
text = paper_comparison(dict(snakemake.input.items()), snakemake.params.seeds)
Path(snakemake.output[0]).write_text(text)
print(text)
