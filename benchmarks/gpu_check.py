"""The paper-scale path on one GPU, in one run: prints a markdown report and writes it to ``--out``.

    bash benchmarks/gpu_check.sh                 # on a CUDA machine (under 10 minutes)
    python benchmarks/gpu_check.py --dry-run     # the same steps on the CPU with tiny sizes (seconds)

Sections: (1) the ``cuda``-marked tests (tests/test_cuda.py); (2) training steps/s and peak memory of the
full model at batch 16 for the quick (config/config.yaml) and the paper (+ config/paper.yaml) configuration
of Sprites, SMMNIST and MUG, float32 and bfloat16 autocast; (3) the same step under ``torch.compile``;
(4) k trainings side by side on one device (aggregate steps/s, what ``gpu_slots`` rests on); (5) a
paper-size Sprites ``full`` curve with ``benchmarks/quality_curve.py`` when the pipeline's Sprites shards
and judge are present. The step is the training loop's: eq. 9 by ``s3vae_loss`` with the dataset's λ's
and loss options, backward, Adam.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("sprites", "smmnist", "mug")
TINY = {"image_size": 16, "enc_widths": [8, 8], "dec_widths": [16, 8, 8], "feat_dim": 16, "hidden": 16,
        "z_f": 8, "z_t": 4, "dfp_hidden": 16}


def merged(base: dict, over: dict) -> dict:
    """Snakemake's --configfile merge: nested dicts update key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def workflow_config(scale: str) -> dict:
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    if scale == "paper":
        config = merged(config, yaml.safe_load((ROOT / "config/paper.yaml").read_text()))
    return config


def build_step(dataset: str, scale: str, device: torch.device, dry_run: bool, batch: int = 16):
    """The full model of ``dataset`` at ``scale``, its optimiser and a random batch with DFP labels."""
    from s3vae import configs
    from s3vae.losses import LossOptions
    from s3vae.model import S3VAE, S3VAEConfig

    config = workflow_config(scale)
    mcfg = configs.model_config(config, dataset, "full")
    tcfg = configs.train_config(config, dataset, "full", seed=1)
    frames = config["datasets"][dataset]["frames"]
    if dry_run:
        mcfg.update(TINY)
        if mcfg.get("decoder", "upsample") == "transposed":  # one layer per upsampling, no extra first layer
            mcfg["dec_widths"] = mcfg["dec_widths"][:-1]
        frames, batch = 4, 4
    cfg = S3VAEConfig(**mcfg)
    model = S3VAE(cfg).to(device).to(memory_format=torch.channels_last)  # as in training
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.get("lr", 1e-3))
    opts = LossOptions.of(tcfg)
    x = torch.rand(batch, frames, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    steps = frames - opts.dfp_offset
    if opts.dfp_kind == "topk":
        y = torch.randint(0, cfg.dfp_out, (batch, steps, 1), device=device)
    elif opts.dfp_kind == "regression":
        y = torch.randn(batch, steps, cfg.dfp_out, device=device)
    else:
        raise ValueError(f"{dataset}: DFP kind {opts.dfp_kind!r} is not a video dataset's")
    n_params = sum(p.numel() for p in model.parameters())
    return model, opt, opts, x, y, n_params


def time_steps(model, opt, opts, x, y, seconds: float, warmup: int = 3, bf16: bool = False, step_fn=None):
    """Steps/s over ``seconds`` after ``warmup`` steps, and the peak device memory (GiB; None on CPU)."""
    from s3vae.losses import s3vae_loss

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = (step_fn or s3vae_loss)(model, x, y, opts, dataset_size=9000)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 5 == 0:
            sync()
    sync()
    rate = n / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**30 if x.is_cuda else None
    return rate, mem


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def section_tests(env: dict) -> list[str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p",
                           "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    lines = ["## CUDA-marked tests", "", f"`pytest -m cuda tests/test_cuda.py`: {summary} "
             f"(exit {proc.returncode}, {time.perf_counter() - t0:.0f} s)", ""]
    if proc.returncode != 0:
        lines += ["```", proc.stdout[-4000:], proc.stderr[-2000:], "```", ""]
    return lines


def section_steps(device, dry_run: bool, seconds: float, bf16_ok: bool, rates: dict) -> list[str]:
    lines = ["## Training step, batch 16 (full model, eq. 9 + the dataset's options)", "",
             "| dataset | scale | parameters (M) | float32 steps/s | peak GiB | bf16 steps/s | peak GiB |",
             "|---|---|---|---|---|---|---|"]
    for dataset in DATASETS:
        for scale in ("quick", "paper"):
            model, opt, opts, x, y, n_params = build_step(dataset, scale, device, dry_run)
            r32, m32 = time_steps(model, opt, opts, x, y, seconds)
            r16, m16 = time_steps(model, opt, opts, x, y, seconds, bf16=True) if bf16_ok else (None, None)
            rates[dataset, scale] = r32
            lines.append(f"| {dataset} | {scale} | {n_params / 1e6:.1f} | {r32:.2f} | {fmt(m32)} | {fmt(r16)} | "
                         f"{fmt(m16)} |")
            print(lines[-1], flush=True)
            del model, opt
    return lines + [""]


def train_clips(config: dict, dataset: str) -> int:
    ds = config["datasets"][dataset]
    if dataset == "sprites":  # every character in each of the 9 action-directions
        return ds["train_characters"] * ds["labels"]["action"]
    return ds["n_train"]


def section_hours(rates: dict) -> list[str]:
    """GPU-hours of the paper configuration: epochs x steps per epoch / measured float32 steps/s, for one
    training and for the S3VAE-framework rows of config/all_rows.yaml's Tables 1-2 over the seeds."""
    config = merged(workflow_config("paper"), yaml.safe_load((ROOT / "config/all_rows.yaml").read_text()))
    family = set(config["variants"])
    lines = ["## GPU-hours of the paper configuration (one training at a time, float32)", "",
             "| dataset | steps per training | hours per training | trainings (Tables 1-2, all rows, seeds) | "
             "GPU-hours |", "|---|---|---|---|---|"]
    for dataset in ("sprites", "smmnist"):
        if (dataset, "paper") not in rates:
            continue
        epochs = config.get("train_overrides", {}).get(dataset, {}).get("epochs", config["train"]["epochs"])
        steps = epochs * -(-train_clips(config, dataset) // config["train"]["batch_size"])
        hours = steps / rates[dataset, "paper"] / 3600
        rows = {r for t in ("table1", "table2") for r in config[t]["rows"] if r in family}
        n = len(rows) * len(config["seeds"])
        lines.append(f"| {dataset} | {steps:,} | {hours:.1f} | {n} | {n * hours:.0f} |")
    return lines + [""]


def section_compile(device, dry_run: bool, seconds: float) -> list[str]:
    """Sprites paper step with the model under torch.compile (the losses stay eager)."""
    lines = ["## torch.compile (Sprites, paper scale)", ""]
    if dry_run:  # compiling takes most of a minute on the CPU; failures are reported, not raised
        return lines + ["skipped: dry run", ""]
    model, opt, opts, x, y, _ = build_step("sprites", "paper", device, dry_run)
    eager, _ = time_steps(model, opt, opts, x, y, seconds)
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        rate, _ = time_steps(compiled, opt, opts, x, y, seconds)
        lines.append(f"eager {eager:.2f} steps/s, compiled {rate:.2f} steps/s ({rate / eager:.2f}x; compile and "
                     f"measure {time.perf_counter() - t0:.0f} s)")
    except Exception as e:  # a report, not a failure: the check goes on
        lines.append(f"eager {eager:.2f} steps/s; torch.compile failed: {type(e).__name__}: {str(e)[:300]}")
    print(lines[-1], flush=True)
    return lines + [""]


def worker(dataset: str, scale: str, seconds: float, dry_run: bool) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    model, opt, opts, x, y, _ = build_step(dataset, scale, device, dry_run)
    rate, mem = time_steps(model, opt, opts, x, y, seconds)
    print(json.dumps({"steps_per_s": rate, "peak_gib": mem}))


def section_side_by_side(dry_run: bool, seconds: float, ks) -> list[str]:
    lines = ["## Trainings side by side on one device (Sprites, paper scale)", "",
             "| processes | aggregate steps/s | per process | speed-up over 1 |", "|---|---|---|---|"]
    base = None
    for k in ks:
        cmd = [sys.executable, __file__, "--worker", "sprites", "paper", str(seconds)] + (["--dry-run"] * dry_run)
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(k)]
        rates = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode == 0:
                rates.append(json.loads(out.strip().splitlines()[-1])["steps_per_s"])
        if len(rates) < k:
            lines.append(f"| {k} | {k - len(rates)} of {k} processes failed | | |")
            continue
        total = sum(rates)
        base = base or total
        lines.append(f"| {k} | {total:.2f} | {total / k:.2f} | {total / base:.2f}x |")
        print(lines[-1], flush=True)
    return lines + [""]


def section_curve(minutes: float, dry_run: bool) -> list[str]:
    lines = ["## Paper-size Sprites `full` curve (benchmarks/quality_curve.py)", ""]
    shards = sorted((ROOT / "results/sprites/shards").glob("train_*.h5"))
    judge = ROOT / "results/sprites/judge/judge.pt"
    if dry_run or not shards or not judge.exists():
        why = "dry run" if dry_run else "no results/sprites shards or judge (build them with the paper config first)"
        return lines + [f"skipped: {why}", ""]
    paper = ROOT / "results/gpu_check_paper.yaml"  # quality_curve.py reads one config file
    paper.write_text(yaml.safe_dump(workflow_config("paper")))
    proc = subprocess.run([sys.executable, "benchmarks/quality_curve.py", "--config", str(paper), "--dataset",
                           "sprites", "--variant", "full", "--minutes", str(minutes), "--every", "500",
                           "--set", "train.device=cuda", "--name", "gpu_paper_full"],
                          cwd=ROOT, capture_output=True, text=True)
    return lines + ["```", proc.stdout[-3000:], proc.stderr[-1500:] if proc.returncode else "", "```", ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes, seconds (what the test runs)")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.md"))
    p.add_argument("--seconds", type=float, default=None, help="timing window per measurement")
    p.add_argument("--curve-minutes", type=float, default=2.5)
    p.add_argument("--worker", nargs=3, metavar=("DATASET", "SCALE", "SECONDS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], float(a.worker[2]), a.dry_run)
        return 0
    sys.path.insert(0, str(ROOT))
    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        print("error: no CUDA device visible (torch.cuda.is_available() is False); --dry-run runs on the CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    seconds = a.seconds or (0.5 if a.dry_run else 5.0)
    name = torch.cuda.get_device_name(0) if cuda else "CPU (dry run, tiny sizes)"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if a.dry_run:
        env["S3VAE_CUDA_TESTS_ON_CPU"] = "1"
    report = [f"# GPU check: {name}", "", f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    report += section_tests(env)
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    rates = {}
    report += section_steps(device, a.dry_run, seconds, bf16_ok or a.dry_run, rates)
    report += section_hours(rates)
    report += section_compile(device, a.dry_run, seconds)
    report += section_side_by_side(a.dry_run, seconds * 2, (1, 2) if a.dry_run else (1, 2, 4, 8))
    report += section_curve(a.curve_minutes, a.dry_run)
    text = "\n".join(report)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    failed = "exit 0," not in "\n".join(report[:12])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
