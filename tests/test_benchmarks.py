"""The benchmark scripts that must not rot: the prepared GPU check (as --dry-run on the CPU) and the timeline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out.read_text()
    assert "8 passed" in report  # the cuda-marked tests ran on the CPU
    for dataset in ("sprites", "smmnist", "mug"):
        for scale in ("quick", "paper"):
            assert f"| {dataset} | {scale} |" in report
    assert "## torch.compile" in report and "| 2 |" in report  # two processes side by side
    assert "GPU-hours" in report and "| sprites | " in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.md")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "x.md").exists()


def test_timeline_packs_overlapping_jobs_into_lanes_and_draws(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # undone after: must not shadow the pseudolabels package
    import timeline

    def job(path, seconds, end):
        f = tmp_path / "results" / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\th:m:s\n{seconds}\t0:00:00\n")
        os.utime(f, (end, end))

    job("sprites/benchmarks/train_judge.tsv", 100, 1100)            # 1000-1100
    job("sprites/benchmarks/train_model/full_seed1.tsv", 300, 1300)  # 1000-1300, beside the judge
    job("sprites/benchmarks/evaluate_model/full_seed1.tsv", 50, 1350)  # after both: lane 1 again
    job("benchmarks/compare_with_paper.tsv", 5, 1360)
    jobs = timeline.jobs_of(tmp_path / "results")
    assert [j["name"] for j in jobs][:2] == ["sprites/train_judge", "sprites/train_model/full_seed1"]
    assert timeline.pack(jobs) == 2
    by = {j["name"]: j for j in jobs}
    assert by["sprites/evaluate_model/full_seed1"]["lane"] == 0 and by["sprites/train_judge"]["start"] == 0
    timeline.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "t.png")])
    assert (tmp_path / "t.png").stat().st_size > 1000
