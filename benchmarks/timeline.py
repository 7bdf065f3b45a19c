"""Where a pipeline run's time went: a Gantt chart of its jobs from the rules' ``benchmark:`` files.

    python benchmarks/timeline.py [--results results] [--out timeline.png]

Snakemake writes a rule's benchmark TSV when the job ends, with the job's wall time in ``s``: a job ran
from (file mtime - s) to the file's mtime. Jobs are packed greedily into lanes (one lane per job running
at the same time, so lanes <= --cores) and coloured by rule. Prints the run's span, the busy share of the
lanes and the last job to end (the end of the critical path).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def jobs_of(results: Path) -> list[dict]:
    jobs = []
    for tsv in results.rglob("benchmarks/**/*.tsv"):
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        end = tsv.stat().st_mtime
        rel = tsv.relative_to(results).parts  # <dataset>/benchmarks/<rule>[/<wildcards>].tsv or benchmarks/<rule>.tsv
        i = rel.index("benchmarks")
        rule = rel[i + 1].removesuffix(".tsv")
        name = "/".join(p.removesuffix(".tsv") for p in rel[:i] + rel[i + 1:])
        jobs.append({"rule": rule, "name": name, "start": end - float(rows[-1]["s"]), "end": end})
    if not jobs:
        raise SystemExit(f"no benchmark TSVs under {results}/ (run the pipeline first)")
    t0 = min(j["start"] for j in jobs)
    for j in jobs:
        j["start"] -= t0
        j["end"] -= t0
    return sorted(jobs, key=lambda j: j["start"])


def pack(jobs: list[dict]) -> int:
    """Greedy interval colouring: each job goes to the first lane free at its start. Returns the lanes."""
    free_at: list[float] = []
    for j in jobs:
        lane = next((k for k, t in enumerate(free_at) if t <= j["start"] + 1.0), len(free_at))  # 1 s slack
        if lane == len(free_at):
            free_at.append(0.0)
        free_at[lane] = j["end"]
        j["lane"] = lane
    return len(free_at)


def draw(jobs: list[dict], lanes: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = sorted({j["rule"] for j in jobs})
    colours = {r: plt.get_cmap("tab20")(i % 20) for i, r in enumerate(rules)}
    fig, ax = plt.subplots(figsize=(14, 1.0 + 0.6 * lanes))
    for j in jobs:
        ax.barh(j["lane"], (j["end"] - j["start"]) / 60, left=j["start"] / 60, color=colours[j["rule"]],
                edgecolor="black", linewidth=0.3)
        if j["end"] - j["start"] > 90:  # label the long jobs only
            ax.text((j["start"] + j["end"]) / 120, j["lane"], j["name"], ha="center", va="center", fontsize=6)
    ax.set_yticks(range(lanes), [f"lane {k + 1}" for k in range(lanes)])
    ax.set_xlabel("minutes since the first job started")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[r]) for r in rules], labels=rules,
              fontsize=6, ncol=4, loc="upper left", bbox_to_anchor=(0, -0.25 if lanes > 2 else -0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results")
    p.add_argument("--out", default="timeline.png")
    a = p.parse_args(argv)
    jobs = jobs_of(Path(a.results))
    lanes = pack(jobs)
    draw(jobs, lanes, Path(a.out))
    span = max(j["end"] for j in jobs)
    busy = sum(j["end"] - j["start"] for j in jobs)
    last = max(jobs, key=lambda j: j["end"])
    print(f"{len(jobs)} jobs in {span / 60:.1f} min on {lanes} lanes; lanes busy {busy / (span * lanes):.0%}; "
          f"last to end: {last['name']} ({(last['end'] - last['start']) / 60:.1f} min)")
    for rule in sorted({j["rule"] for j in jobs}):
        mine = [j for j in jobs if j["rule"] == rule]
        print(f"  {rule}: {len(mine)} jobs, {sum(j['end'] - j['start'] for j in mine) / 60:.1f} job-min")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
