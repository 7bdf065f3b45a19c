"""Tables from evaluation files: every number is computed by the pipeline, mean ± std over seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from s3vae.evaluate import summary_row

METRICS = ("acc", "IS", "H_y_x", "H_y", "acc_dynamic", "acc_static")


def table1(eval_paths: list[str], judge_metrics: str | None, rows: list[str], seeds: list[int]) -> list[dict]:
    """One row per variant: each metric's mean and std over seeds (evaluation files are named
    ``.../eval/{variant}/seed{seed}.json``). Accuracies in percent, as in the paper."""
    by_variant: dict[str, list[dict]] = {r: [] for r in rows}
    for p in eval_paths:
        p = Path(p)
        variant = p.parent.name
        if variant in by_variant:
            by_variant[variant].append(summary_row(json.loads(p.read_text())))
    judge = json.loads(Path(judge_metrics).read_text())["test_accuracy"] if judge_metrics else {}
    table = []
    for variant in rows:
        runs = by_variant[variant]
        if not runs:
            raise ValueError(f"no evaluation files for variant {variant!r} among {eval_paths}")
        row = {"method": variant, "n_seeds": len(runs)}
        for m in METRICS:
            vals = [r[m] for r in runs if m in r]
            if not vals:
                continue
            scale = 100.0 if m.startswith("acc") else 1.0
            row[m] = scale * float(np.mean(vals))
            row[f"{m}_std"] = scale * float(np.std(vals))
        for k, v in judge.items():
            row[f"judge_test_acc_{k}"] = 100.0 * v
        table.append(row)
    return table


def write_csv(table: list[dict], path: str | Path, digits: int = 4) -> None:
    fields = list(dict.fromkeys(k for row in table for k in row))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in table:
            w.writerow({k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()})


def format_table(table: list[dict]) -> str:
    fields = list(dict.fromkeys(k for row in table for k in row))
    lines = ["\t".join(fields)]
    for row in table:
        lines.append("\t".join(f"{row.get(k, ''):.4g}" if isinstance(row.get(k), float) else str(row.get(k, ""))
                               for k in fields))
    return "\n".join(lines)
