"""Tables from evaluation files: every number is computed by the pipeline, mean ± std over seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from s3vae.evaluation.metrics import summary_row

METRICS = ("acc", "IS", "H_y_x", "H_y", "acc_dynamic", "acc_static")


def _runs_by_variant(eval_paths: list[str], rows: list[str], summarise) -> dict[str, list[dict]]:
    """Evaluation files ``.../eval/{variant}/seed{seed}.json`` grouped by variant, each summarised."""
    by_variant: dict[str, list[dict]] = {r: [] for r in rows}
    for p in eval_paths:
        p = Path(p)
        if p.parent.name in by_variant:
            by_variant[p.parent.name].append(summarise(json.loads(p.read_text())))
    return by_variant


def _table(eval_paths: list[str], rows: list[str], not_implemented, summarise, cells) -> list[dict]:
    """One row per variant in ``rows``: ``cells(runs)`` over its seeds' summarised evaluation files;
    rows in ``not_implemented`` get a note and no numbers; a variant without files is an error."""
    by_variant = _runs_by_variant(eval_paths, rows, summarise)
    table = []
    for variant in rows:
        if variant in not_implemented:
            table.append({"method": variant, "n_seeds": 0, "note": "not implemented"})
            continue
        if not by_variant[variant]:
            raise ValueError(f"no evaluation files for variant {variant!r} among {eval_paths}")
        table.append({"method": variant, "n_seeds": len(by_variant[variant]), **cells(by_variant[variant])})
    return table


def table1(eval_paths: list[str], judge_metrics: str | None, rows: list[str], seeds: list[int],
           not_implemented: list[str] = ()) -> list[dict]:
    """One row per variant: each metric's mean and std over seeds (evaluation files are named
    ``.../eval/{variant}/seed{seed}.json``). Accuracies in percent, as in the paper. Rows named in
    ``not_implemented`` (MoCoGAN) are kept, with a note and no numbers. Also used for Table 2."""
    judge = json.loads(Path(judge_metrics).read_text())["test_accuracy"] if judge_metrics else {}

    def cells(runs: list[dict]) -> dict:
        row = {}
        for m in METRICS:
            vals = [r[m] for r in runs if m in r]
            if not vals:
                continue
            scale = 100.0 if m.startswith("acc") else 1.0
            row[m] = scale * float(np.mean(vals))
            row[f"{m}_std"] = scale * float(np.std(vals))
        row.update({f"judge_test_acc_{k}": 100.0 * v for k, v in judge.items()})
        return row

    return _table(eval_paths, rows, not_implemented, summary_row, cells)


NO_ENCODER = {"mocogan": "no encoder: it generates from noise, there is no clip to take z_f or z_1:T from"}


def swap_table(eval_paths: list[str], rows: list[str], not_implemented: list[str] = ()) -> list[dict]:
    """Swap accuracy (``s3vae.evaluation.metrics.swap_scores``) per variant and label, in percent, mean and std
    over seeds, with the judge on plain reconstructions beside it. Models without an encoder get a note."""
    def summarise(result: dict) -> dict:
        if "swap" not in result:
            raise ValueError("an evaluation file has no swap scores (written by an older version): rerun it "
                             "with snakemake --forcerun evaluate_model")
        out = {f"swap_{k}": v for k, v in result["swap"]["per_label"].items()}
        rec = result["reconstruction"]
        out.update({f"swap_{g}": result["swap"][g] for g in ("dynamic", "static") if g in result["swap"]})
        out.update({f"rec_{k}": v for k, v in rec["per_label"].items()})
        out.update({f"rec_{g}": rec[g] for g in ("dynamic", "static") if g in rec})
        return out

    def cells(runs: list[dict]) -> dict:
        row = {}
        for m in runs[0]:
            vals = [100.0 * r[m] for r in runs]
            row[m], row[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
        return row

    table = _table(eval_paths, [r for r in rows if r not in NO_ENCODER], not_implemented, summarise, cells)
    return table + [{"method": r, "n_seeds": 0, "note": NO_ENCODER[r]} for r in rows if r in NO_ENCODER]


def table3(eval_paths: list[str], rows: list[str], seeds: list[int], not_implemented: list[str] = ()) -> list[dict]:
    """Speaker verification (Table 3): EER (%) from z_f and from z_1:T per variant, mean and std over seeds;
    beside them, for S3VAE models, what z_1:T still carries (``verification.dynamic_content``)."""
    def cells(runs: list[dict]) -> dict:
        row = {k: runs[0][k] for k in ("dim_static", "dim_dynamic", "n_utterances")}
        for m in ("eer_static", "eer_dynamic"):
            vals = [100.0 * r[m] for r in runs]
            row[m], row[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
        # what z_1:T still carries (S3VAE models): test mel error, silence-probe accuracy %, training KL_t
        for m, scale in (("recon_mse", 1.0), ("probe_silence", 100.0), ("kl_t", 1.0)):
            vals = [scale * r["content"][m] for r in runs if m in r.get("content", {})]
            if len(vals) == len(runs):
                row[m], row[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
        return row

    return _table(eval_paths, rows, not_implemented, lambda r: r, cells)


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def paper_comparison(tables: dict[str, str | Path], seeds: dict[str, list[int]]) -> str:
    """Markdown: every cell of our tables beside the paper's value. ``tables``: '{dataset}_table{n}' -> CSV;
    ``seeds``: dataset -> its training seeds."""
    from s3vae.reporting import paper_values

    lines = ["# Our results beside the paper's", "",
             "Generated by the pipeline (`compare_with_paper`); mean ± std over each section's seeds. "
             "Paper values: Zhu et al., CVPR 2020, Tables 1-3. A dash: the paper has no such cell "
             "(FSDD is our offline stand-in for TIMIT) or the row is not implemented.", ""]
    specs = {"table1": (paper_values.TABLE1, ("acc", "IS", "H_y_x", "H_y")),
             "table2": (paper_values.TABLE2, ("acc", "IS", "H_y_x", "H_y")),
             "table3": (paper_values.TABLE3, ("eer_static", "eer_dynamic"))}
    names = {"acc": "Acc %", "IS": "IS", "H_y_x": "H(y|x)", "H_y": "H(y)",
             "eer_static": "EER z_f %", "eer_dynamic": "EER z_1:T %"}
    for key, path in tables.items():
        dataset, table = key.rsplit("_", 1)
        ref, metrics = specs[table]
        rows = read_csv(path)
        if table == "table2" and any("eer_static" in r for r in rows):  # an audio ablation: Table 3's EERs
            ref, metrics = {}, specs["table3"][1]
        paper = ref.get(dataset, {}) or (ref.get("timit", {}) if table == "table3" else {})
        src = "" if dataset in ref or table != "table3" else " (paper: TIMIT)"
        lines += [f"## {dataset}: {table}{src}", "", f"Seeds: {list(seeds[dataset])}.", "",
                  "| method | " + " | ".join(f"{names[m]} ours | {names[m]} paper" for m in metrics) + " |",
                  "|---|" + "---|---|" * len(metrics)]
        for row in rows:
            cells = []
            for m in metrics:
                ours = "not implemented" if row.get("note") else (
                    f"{float(row[m]):.3f} ± {float(row[m + '_std']):.3f}" if row.get(m) not in (None, "") else "–")
                theirs = paper.get(row["method"], {}).get(m)
                cells += [ours, "–" if theirs is None else f"{theirs:g}"]
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    if not any(k.startswith("smmnist_") for k in tables):
        lines += ["SMMNIST is not in this run: at the quick CPU scale its models score at chance, so it needs "
                  "the GPU configuration (`snakemake results/smmnist/table1.csv --configfile config/paper.yaml`; "
                  "docs/results.md says why).", ""]
    return "\n".join(lines)


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
