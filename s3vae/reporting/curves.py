"""Training curves: every loss term, KL_f, KL_t, the MI estimate, its critic's fit and steps/s from ``steps.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

PANELS = (("reconstruction", ("recon",)), ("KL", ("kl_f", "kl_t")), ("L_SCC, L_DFP", ("scc", "dfp")),
          ("L_MI", ("mi",)), ("CLUB critic -log q", ("mi_fit",)), ("static adversary", ("adv", "conf")),
          ("steps/s", ("steps_per_s",)))


def read_steps(path: str | Path) -> dict[str, list[float]]:
    """Columns of a ``steps.csv`` (s3vae.train.StepLog) as float lists; empty cells become NaN."""
    rows = list(csv.DictReader(open(path)))
    if not rows:
        raise ValueError(f"{path}: no logged steps (the run was shorter than train.log_every)")
    return {k: [float(r[k]) if r[k] != "" else float("nan") for r in rows] for k in rows[0]}


def plot_training(steps_csv: str | Path, out_png: str | Path, title: str = "") -> Path:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = read_steps(steps_csv)
    panels = [(t, [k for k in keys if k in cols and not all(math.isnan(v) for v in cols[k])])
              for t, keys in PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    for ax, (t, keys) in zip(axes[0], panels):
        for k in keys:
            ax.plot(cols["step"], cols[k], label=k)
        ax.set(title=t, xlabel="step")
        if t == "reconstruction":
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
