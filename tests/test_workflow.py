"""The pipeline end to end on a tiny configuration, through the real Snakemake CLI."""

import csv
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import torch
import yaml
from conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_workflow(dest: Path) -> Path:
    for item in ("Snakefile", "workflow", "config", "profiles"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    shutil.copy(ROOT / "tests/tiny_config.yaml", dest / "tiny.yaml")
    return dest


def snakemake(cwd, *args, check=True, env=None, configfiles=("tiny.yaml",)):
    cmd = [*SNAKEMAKE, *args, "--cores", "2", "--configfile", *configfiles]  # targets first: options take lists
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


ROWS = ["mocogan", "dsvae", "baseline", "full", "full-mws", "full+adv", "baseline-sv"]


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("dataset", ["sprites", "smmnist"])
def test_tiny_pipeline_writes_table1_of_every_video_dataset(tiny_run, dataset):
    rows = read_csv(tiny_run / f"results/{dataset}/table1.csv")
    assert [r["method"] for r in rows] == ROWS
    assert rows[0]["method"] == "mocogan" and not rows[0].get("note")    # a trained GAN row, numbers below
    n_classes = 9 if dataset == "sprites" else 10
    for r in rows:
        for m in ("acc", "IS", "H_y_x", "H_y", "acc_static"):
            assert r[m] != "" and float(r[m]) >= 0, m
        assert 1.0 <= float(r["IS"]) <= n_classes + 1e-6
        assert float(r["H_y"]) <= math.log(n_classes) + 1e-3
    judge = next(k for k in rows[1] if k.startswith("judge_test_acc_"))
    assert 0 <= float(rows[1][judge]) <= 100
    if dataset == "sprites":  # both protocols; SMMNIST only fixes z_f (its digits are static)
        assert rows[1]["acc_dynamic"] != ""
    else:
        assert "acc_dynamic" not in rows[1]
    swap = {r["method"]: r for r in read_csv(tiny_run / f"results/{dataset}/swap.csv")}
    assert set(swap) == {*ROWS, "monkeynet"} and swap["mocogan"]["note"].startswith("no encoder")
    for variant in ROWS[1:] + ["monkeynet"]:
        assert 0 <= float(swap[variant]["swap_static"]) <= 100
        assert 0 <= float(swap[variant]["rec_static"]) <= 100
        assert (swap[variant].get("swap_dynamic", "") != "") == (dataset == "sprites")
    assert (tiny_run / f"results/{dataset}/figures/generation_seed1.png").stat().st_size > 0   # Fig. 5
    assert (tiny_run / f"results/{dataset}/figures/motion_transfer_seed1.png").stat().st_size > 0   # Fig. 4
    for variant in ROWS[1:]:
        figs = tiny_run / f"results/{dataset}/figures/{variant}_seed1"
        assert {p.name for p in figs.iterdir()} == {"swap.png", "swap.gif", "fixed_static.png",
                                                     "fixed_dynamic.png", "samples.png", "training.png"}
    steps = read_csv(tiny_run / f"results/{dataset}/models/full/seed1/steps.csv")
    # full: CLUB's bound with its critic's fit beside it, no adversary; full+adv adds the adversary
    assert steps and all(float(r["recon"]) > 0 and r["mi"] != "" and r["mi_fit"] != "" and r["adv"] == ""
                         for r in steps)
    adv = read_csv(tiny_run / f"results/{dataset}/models/full+adv/seed1/steps.csv")
    assert adv and all(float(r["adv"]) > 0 for r in adv)
    assert list((tiny_run / f"results/{dataset}/checkpoints/full/seed1/tb").glob("events.out.tfevents.*"))
    ckpt = tiny_run / f"results/{dataset}/checkpoints/full/seed1/last.pt"
    assert ckpt.exists()
    losses = (tiny_run / f"results/{dataset}/models/full/seed1/losses.csv").read_text().splitlines()
    assert losses[0].startswith("epoch,loss,recon") and len(losses) == 2


def test_tiny_pipeline_writes_table3_for_audio(tiny_run):
    rows = read_csv(tiny_run / "results/fsdd/table3.csv")
    assert [r["method"] for r in rows] == ["fhvae", "dsvae", "baseline", "full"]
    for r in rows:
        assert 0 <= float(r["eer_static"]) <= 100 and 0 <= float(r["eer_dynamic"]) <= 100
        if r["method"] != "fhvae":  # FHVAE has no z_1:T decoder to swap with
            assert (tiny_run / f"results/fsdd/figures/{r['method']}_seed1/mel_swap.png").stat().st_size > 0
    assert (tiny_run / "results/fsdd/pseudolabels/silence/train_0.h5").exists()


def test_the_default_profile_loads_from_the_repository_root(tmp_path):
    # profiles/ (a link to workflow/profiles/) is where Snakemake looks beside a root Snakefile
    assert (ROOT / "profiles").resolve() == (ROOT / "workflow/profiles").resolve()
    proc = snakemake(copy_workflow(tmp_path), "-n", "results/sprites/shards/train_0.h5")
    out = proc.stdout + proc.stderr
    assert "Using workflow specific profile profiles/default" in out


def test_slurm_profile_places_every_gpu_rule_and_the_cluster_test_overrides_it():
    """A rule that may run on CUDA (``gpu=GPU_JOB``) gets GPU resources in the SLURM profile, and the
    one-partition test cluster (tests/slurm) moves each of them to its partition."""
    rules = {}
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            if m := re.match(r"rule (\w+):", block):
                rules[m.group(1)] = "gpu=GPU_JOB" in block
    gpu_rules = {r for r, gpu in rules.items() if gpu}
    assert {"train_model", "train_mocogan", "train_monkeynet", "train_fhvae", "train_judge"} <= gpu_rules
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    placed = {r for r, res in profile["set-resources"].items() if res.get("slurm_partition") == "gpu"}
    assert placed == gpu_rules
    script = (ROOT / "tests/slurm/run_local_cluster.sh").read_text()
    assert all(f"{r}:slurm_partition=debug" in script for r in placed)


def test_slurm_runs_ask_for_job_states_a_cluster_without_accounting_can_answer():
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["slurm-status-command"] == "squeue"      # sacct needs an accounting database


def _fake_slurm(tmp_path, jobs: str) -> dict:
    """squeue printing ``jobs`` and a no-op scancel, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{jobs}'\n")
    (bin_dir / "scancel").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "POLL_S": "1"}


@pytest.mark.parametrize("jobs, stalls", [("", True), ("17\\n", False)])
def test_the_cluster_test_stops_a_run_whose_job_states_stop_changing(tmp_path, jobs, stalls):
    """tests/slurm/watch_run.sh: with no SLURM job queued or running and a silent log, the run is stopped
    with a message after STALL_S seconds; while a job runs, it waits for the run to end by itself."""
    log = tmp_path / "slurm.log"
    log.write_text("waiting\n")
    import threading

    run = subprocess.Popen(["sleep", "60" if stalls else "5"])
    threading.Thread(target=run.wait, daemon=True).start()        # reaped when it ends, as bash does
    t0 = time.monotonic()
    proc = subprocess.run([str(ROOT / "tests/slurm/watch_run.sh"), str(run.pid), str(log), "2"], capture_output=True,
                          text=True, timeout=60, env=_fake_slurm(tmp_path, jobs))
    run.wait(timeout=10)
    if stalls:
        assert proc.returncode == 1 and "the SLURM run stalled" in proc.stdout and run.returncode != 0
        assert time.monotonic() - t0 < 30                         # not the run's 60 s
    else:
        assert proc.returncode == 0 and run.returncode == 0


def test_snakemake_lint_finds_nothing(tmp_path):
    """`snakemake --lint` exits 0 (CI runs it here): a log and a conda environment per rule, literal paths,
    helper functions in common.smk only."""
    proc = snakemake(copy_workflow(tmp_path), "--lint", check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


def test_every_rule_logged_and_benchmarked(tiny_run):
    def jobs(kind, suffix):  # results/<dataset>/<kind>/<rule>[/<name>].<suffix> -> (dataset, "<rule>[/<name>]")
        return {(d.parent.name, p.relative_to(d).with_suffix("").as_posix())
                for d in (tiny_run / "results").glob(f"*/{kind}") for p in d.rglob(f"*.{suffix}")}

    logs, benches = jobs("logs", "log"), jobs("benchmarks", "tsv")
    assert logs == benches  # every job wrote both
    rules = {job.split("/")[0] for _, job in logs}
    for rule in ("train_model", "train_judge", "evaluate_model", "make_figures", "plot_training", "make_table",
                 "build_sprites_shards", "compute_flow_labels", "compute_silence_labels", "evaluate_verification"):
        assert rule in rules, rule
    # the training of the variants that do not read pseudo-labels does not wait for them
    assert not (tiny_run / "results/sprites/pseudolabels/flow/test_0.h5").exists()


def test_paper_comparison_sets_our_cells_beside_the_papers(tiny_run):
    text = (tiny_run / "results/paper_comparison.md").read_text()
    assert "## sprites: table1" in text and "## smmnist: table1" in text and "## fsdd: table3" in text
    full = next(line for line in text.splitlines() if line.startswith("| full |"))
    assert "99.49" in full  # the paper's Sprites Acc beside ours
    mocogan = next(line for line in text.splitlines() if line.startswith("| mocogan |"))
    assert "92.89" in mocogan and "not implemented" not in mocogan


def test_html_report_builds(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert len(html) > 10_000
    for name in ("table1.csv", "table3.csv", "swap.png", "paper_comparison.md", "train_model"):
        assert name in html, name


def planned_rules(wd, *args) -> tuple[set[str], str]:
    """The rules a dry run would execute (``--quiet rules`` prints one rule name per line), and the output."""
    proc = snakemake(wd, "-n", "--quiet", "rules", *args)
    out = proc.stdout + proc.stderr
    return {line.split()[0] for line in out.splitlines() if line.strip()}, out


def test_forcerun_of_a_pseudolabel_stage_redoes_only_it_and_its_dependents(tiny_run):
    ran, out = planned_rules(tiny_run, "--forcerun", "compute_flow_labels")
    assert {"compute_flow_labels", "train_model", "evaluate_model", "make_table"} <= ran, out
    assert not ran & {"fetch_sprites_layers", "build_sprites_shards", "train_judge"}, out


def test_a_model_change_retrains_without_rebuilding_the_data(tiny_run):
    """Data recipes get their dataset's config without the model/DFP keys: another LSTM_f retrains
    the FSDD models and re-evaluates them, but neither rebuilds shards nor recomputes silence labels."""
    ran, out = planned_rules(tiny_run, "--config", 'datasets={"fsdd": {"model": {"static_lstm": "forward"}}}')
    assert {"train_model", "evaluate_verification", "make_eer_table"} <= ran, out
    assert not ran & {"fetch_fsdd_recordings", "build_fsdd_shards", "compute_silence_labels"}, out


def test_lambda_scale_reweights_only_the_terms_a_variant_switches_on(tiny_run):
    """datasets.fsdd.lambda_scale (config.yaml) multiplies App. D's λ's for FSDD: the trained full model
    records App. D's λ's times those factors, the ELBO-only rows stay at 0; a new factor on L_SCC
    retrains only the rows that use L_SCC, without touching the data."""
    scale = yaml.safe_load((ROOT / "config/config.yaml").read_text())["datasets"]["fsdd"]["lambda_scale"]
    got = {}
    for variant in ("full", "baseline", "dsvae"):
        ck = torch.load(tiny_run / f"results/fsdd/models/{variant}/seed1/model.pt", weights_only=True)
        got[variant] = {k: ck["train_config"][k] for k in ("lambda_scc", "lambda_dfp", "lambda_mi")}
    assert got["full"] == {"lambda_scc": 1000 * scale.get("scc", 1), "lambda_dfp": 100 * scale.get("dfp", 1),
                           "lambda_mi": 1 * scale.get("mi", 1)}
    assert got["baseline"] == got["dsvae"] == {"lambda_scc": 0, "lambda_dfp": 0, "lambda_mi": 0}

    (tiny_run / "scale.yaml").write_text("datasets: {fsdd: {lambda_scale: {scc: 0.5}}}\n")
    proc = snakemake(tiny_run, "-n", configfiles=("tiny.yaml", "scale.yaml"))
    out = proc.stdout + proc.stderr
    retrained = set(re.findall(r"wildcards: dataset=fsdd, variant=([\w-]+), seed=1", out))
    assert retrained == {"full"}, out[-3000:]
    assert "rule build_fsdd_shards" not in out and "rule compute_silence_labels" not in out, out[-3000:]


def test_an_interrupted_pipeline_stops_its_training_job(mirror, tmp_path):
    """Snakemake's local executor answers SIGTERM by waiting for the running jobs: the workflow passes the
    signal on, and the training job checkpoints and exits at once. A job whose Snakemake is SIGKILLed stops
    by itself (with a checkpoint too), and the next run resumes from the checkpoint."""
    wd = copy_workflow(tmp_path)
    (wd / "long.yaml").write_text("train_overrides: {sprites: {epochs: 100000}}\n")   # hours of training
    ckpt = wd / "results/sprites/checkpoints/baseline/seed1/last.pt"
    log = wd / "results/sprites/logs/train_model/baseline_seed1.log"
    started = []

    def start_training():
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
        proc = subprocess.Popen([*SNAKEMAKE, "results/sprites/models/baseline/seed1/model.pt", "--cores", "2",
                                 "--configfile", "tiny.yaml", "long.yaml"], cwd=wd,
                                stdout=open(wd / "snakemake.out", "a"), stderr=subprocess.STDOUT,
                                env={**os.environ, "S3VAE_DATA_MIRROR": str(mirror)})
        started.append(proc)
        deadline = time.time() + 300
        while not (ckpt.exists() and ckpt.stat().st_mtime_ns > before):    # an epoch trained in this run
            assert proc.poll() is None and time.time() < deadline, (wd / "snakemake.out").read_text()[-3000:]
            time.sleep(0.5)
        jobs = psutil.Process(proc.pid).children(recursive=True)
        started.extend(jobs)
        return proc, jobs

    try:
        proc, jobs = start_training()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        assert psutil.wait_procs(jobs, timeout=30)[1] == []
        assert "signal 15: saved" in log.read_text()

        proc, jobs = start_training()
        assert "resumed from" in log.read_text()
        proc.kill()
        assert psutil.wait_procs(jobs, timeout=30)[1] == [], "the training job outlived its Snakemake"
        assert "signal 15: saved" in log.read_text()
    finally:
        for p in started:
            if p.poll() is None if isinstance(p, subprocess.Popen) else p.is_running():
                p.kill()


def test_all_rows_adds_table2_for_sprites_and_fsdd(tmp_path):
    """config/all_rows.yaml: the ablation of each term offline, on Sprites (judge) and FSDD (EERs)."""
    wd = copy_workflow(tmp_path)
    proc = snakemake(wd, "-n", configfiles=("tiny.yaml", "config/all_rows.yaml"))
    out = proc.stdout + proc.stderr
    assert "results/sprites/table2.csv" in out and "results/fsdd/table2.csv" in out, out[-3000:]
    for dataset in ("sprites", "fsdd"):
        for variant in ("no-scc", "no-dfp", "no-mi"):
            assert f"dataset={dataset}, variant={variant}, seed=1" in out, (dataset, variant)


def test_the_paper_configuration_builds_smmnist_table1(tmp_path):
    """SMMNIST is not a quick default target, but the GPU configuration (the scale it needs) builds it."""
    wd = copy_workflow(tmp_path)
    proc = snakemake(wd, "-n", configfiles=("config/paper.yaml", "config/all_rows.yaml"))
    out = proc.stdout + proc.stderr
    for table in ("smmnist/table1.csv", "sprites/table1.csv", "fsdd/table3.csv"):
        assert f"results/{table}" in out, table


def test_bad_config_is_rejected_when_the_dag_is_built(tmp_path):
    wd = copy_workflow(tmp_path)
    (wd / "tiny.yaml").write_text("train: {epochs: 0, batch_size: 16, lr: 0.001}\n")
    proc = snakemake(wd, "-n", check=False)
    assert proc.returncode != 0
    assert "epochs" in proc.stdout + proc.stderr


@pytest.mark.parametrize("override,message", [
    ("datasets: {sprites: {frame_size: 8}}", "datasets.sprites.frame_size = 8 but datasets.sprites.model.image_size"),
    ("datasets: {sprites: {frame_size: 128}}", "datasets.sprites.frame_size = 128"),
    ("datasets: {smmnist: {model: {dec_widths: [16, 8, 8]}}}", "datasets.smmnist.model: image_size 16"),
])
def test_frame_sizes_the_model_cannot_read_are_rejected_when_the_dag_is_built(tmp_path, override, message):
    wd = copy_workflow(tmp_path)
    (wd / "bad.yaml").write_text(override + "\n")
    proc = snakemake(wd, "-n", check=False, configfiles=("tiny.yaml", "bad.yaml"))
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


@pytest.mark.parametrize("dataset,table,stages", [
    ("mug", "table1", {"build_mug_shards", "compute_landmark_labels", "train_model", "train_judge",
                       "evaluate_model", "make_table"}),
    ("mug", "table2", {"build_mug_shards", "compute_landmark_labels", "train_model", "make_table"}),
    ("timit", "table3", {"build_timit_shards", "compute_silence_labels", "train_model", "evaluate_verification",
                         "make_eer_table"}),
    ("timit", "table2", {"build_timit_shards", "train_model", "evaluate_verification", "make_eer_table"}),
])
def test_licensed_datasets_are_in_the_dag_once_their_root_is_set(tmp_path, dataset, table, stages):
    wd = copy_workflow(tmp_path)
    root = tmp_path / f"{dataset}-copy"
    root.mkdir()
    proc = snakemake(wd, f"results/{dataset}/{table}.csv", "-n", "--quiet", "rules", "--config",
                     f"datasets={{'{dataset}': {{'root': '{root}'}}}}")
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert stages <= listed, proc.stdout
    # without the root: a clear error naming the key, before anything runs
    (tmp_path / "again").mkdir()
    proc = snakemake(copy_workflow(tmp_path / "again"), f"results/{dataset}/{table}.csv", "-n", check=False)
    assert proc.returncode != 0 and f"datasets.{dataset}.root is not set" in proc.stdout + proc.stderr


def test_config_overrides_of_booleans_and_numbers_keep_their_types(tmp_path):
    """The documented form `--config 'datasets={"mug": {...}}'` with a boolean, an integer and a float:
    accepted by the schema (Snakemake hands the nested values over as strings) and in effect (4 shards
    per split); a value of the wrong type is still rejected."""
    wd = copy_workflow(tmp_path)
    root = tmp_path / "mug-copy"
    root.mkdir()
    mug = f'"root": "{root}", "skip_bad": true, "n_shards": 4, "min_face_fraction": 0.25'
    proc = snakemake(wd, "results/mug/table1.csv", "-n", "--config", f"datasets={{\"mug\": {{{mug}}}}}")
    jobs = re.findall(r"rule build_mug_shards:.*?wildcards: split=(\w+), shard=(\d+)", proc.stdout, re.S)
    assert sorted(jobs) == [(split, str(i)) for split in ("test", "train") for i in range(4)], proc.stdout[-3000:]
    proc = snakemake(wd, "results/mug/table1.csv", "-n", "--config",
                     f'datasets={{"mug": {{"root": "{root}", "skip_bad": maybe}}}}', check=False)
    assert proc.returncode != 0 and "'maybe' is not of type 'boolean'" in proc.stdout + proc.stderr


def test_mug_pipeline_runs_end_to_end_on_a_mug_shaped_tree(mirror, tmp_path):
    """MUG itself is licensed: a MUG-shaped tree from the Megamind fixture's frames goes through face crops,
    landmark pseudo-labels (mediapipe), MoCoGAN and the full model for Table 1, the Table 2 models, the judge and
    both tables."""
    from test_mug import TREE, write_frames

    from s3vae.datasets.mug import read_video

    video = read_video(mirror / "faces" / "Megamind.avi")[:, ::3, ::3]          # (270, 176, 240, 3)
    root = tmp_path / "MUG" / "subjects3"
    for subject, takes in TREE.items():
        for rel, start in takes.items():
            write_frames(root / subject / rel.removesuffix(".avi"), np.ascontiguousarray(video[start:start + 20]))
    wd = copy_workflow(tmp_path)
    cfg = yaml.safe_load((wd / "tiny.yaml").read_text())
    cfg["datasets"]["mug"] = {"root": str(root), "n_shards": 1, "frame_size": 16,
                              "model": {**cfg["datasets"]["sprites"]["model"], "decoder": "transposed",
                                        "z_f": 4, "z_t": 8}}
    cfg["table1"] = {"rows": ["mocogan", "full"]}  # the other rows' code paths are the Sprites/SMMNIST runs'
    (wd / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd, "results/mug/table1.csv", "results/mug/table2.csv", env={"S3VAE_DATA_MIRROR": str(mirror)})
    t1 = read_csv(wd / "results/mug/table1.csv")
    assert [r["method"] for r in t1] == ["mocogan", "full"]
    assert all(r["acc_dynamic"] != "" and "acc_static" not in r for r in t1)  # MUG: fix z_1:T, sample z_f
    assert [r["method"] for r in read_csv(wd / "results/mug/table2.csv")] == ["no-scc", "no-dfp", "no-mi", "full"]
    with h5py.File(wd / "results/mug/pseudolabels/landmarks/train_0.h5") as f:
        gaps = f["landmark_gaps"][()]
    assert gaps.shape[1:] == (15, 3) and np.isfinite(gaps).all() and gaps.std(axis=1).max() > 0
