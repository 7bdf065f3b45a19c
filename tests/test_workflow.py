"""The pipeline end to end on a tiny configuration, through the real Snakemake CLI."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_workflow(dest: Path) -> Path:
    for item in ("Snakefile", "workflow", "config"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    shutil.copy(ROOT / "tests/tiny_config.yaml", dest / "tiny.yaml")
    return dest


def snakemake(cwd, *args, check=True, env=None):
    cmd = [*SNAKEMAKE, "--cores", "2", "--configfile", "tiny.yaml", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_run(mirror, tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("wf"))
    snakemake(wd, env={"S3VAE_DATA_MIRROR": str(mirror)})
    return wd


def test_tiny_pipeline_writes_table1(tiny_run):
    with open(tiny_run / "results/sprites/table1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["baseline", "full"]
    for r in rows:
        for m in ("acc", "IS", "H_y_x", "H_y", "acc_dynamic", "acc_static", "judge_test_acc_action"):
            assert r[m] != "" and float(r[m]) >= 0, m
        assert 1.0 <= float(r["IS"]) <= 9.0
    # every rule left a benchmark and a log; training checkpointed and logged losses per epoch
    assert len(list((tiny_run / "results/sprites/benchmarks").rglob("*.tsv"))) == 15
    for variant in ("baseline", "full"):
        figs = tiny_run / f"results/sprites/figures/{variant}_seed1"
        assert {p.name for p in figs.iterdir()} == {"swap.png", "swap.gif", "fixed_static.png",
                                                     "fixed_dynamic.png", "samples.png"}
    ckpt = tiny_run / "results/sprites/checkpoints/full/seed1/last.pt"
    assert ckpt.exists()
    losses = (tiny_run / "results/sprites/models/full/seed1/losses.csv").read_text().splitlines()
    assert losses[0].startswith("epoch,loss,recon") and len(losses) == 2


def test_forcerun_of_a_pseudolabel_stage_redoes_only_it_and_its_dependents(tiny_run):
    proc = snakemake(tiny_run, "-n", "--forcerun", "compute_flow_labels", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    ran = {line.split()[0] for line in out.splitlines()
           if line.strip() and line.split()[0] in {"fetch_sprites_layers", "build_sprites_shards",
                                                    "compute_flow_labels", "train_judge", "train_model",
                                                    "evaluate_model", "make_table1"}}
    assert {"compute_flow_labels", "train_model", "evaluate_model", "make_table1"} <= ran, out
    assert not ran & {"fetch_sprites_layers", "build_sprites_shards", "train_judge"}, out


def test_bad_config_is_rejected_when_the_dag_is_built(tmp_path):
    wd = copy_workflow(tmp_path)
    (wd / "tiny.yaml").write_text("train: {epochs: 0, batch_size: 16, lr: 0.001}\n")
    proc = snakemake(wd, "-n", check=False)
    assert proc.returncode != 0
    assert "epochs" in proc.stdout + proc.stderr
