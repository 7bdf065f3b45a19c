"""Quality per CPU-minute: train one variant for a wall-clock budget and score it every K steps.

    python benchmarks/quality_curve.py --dataset sprites --variant full --minutes 10 --every 500 \
        --set train.scc_on=means model.static_lstm=bidirectional --name full_means_bilstm

Reads the pipeline's shards, pseudo-labels and judge (build them first, e.g.
``snakemake --cores 2 results/sprites/judge/judge.pt results/sprites/pseudolabels/flow/train_0.h5 ...``)
and trains through the pipeline's own ``s3vae.train.train`` with the settings ``s3vae.configs`` derives
from ``config/config.yaml``, plus ``--set`` overrides (``train.<key>``, ``model.<key>``, ``variant.<key>``;
values are YAML). Every ``--every`` steps it scores the model on ``--n-eval`` test clips with the
dataset's judge:

* ``dyn`` / ``stat``: Appendix C accuracies (dynamic labels with z_1:T kept and z_f ~ p(z_f); static
  labels with z_f kept and z_1:T ~ p(z_1:T)), as ``s3vae.evaluation.metrics.generate`` makes them;
* ``swap_dyn`` / ``swap_stat``: z_f of clip A with z_1:T of clip B (another action): the judge must find
  B's action and A's attributes;
* ``rec_dyn`` / ``rec_stat``: the judge on plain reconstructions (the ceiling blur leaves);
* audio (FSDD, TIMIT): ``eer_zf`` / ``eer_zt``, Table 3's speaker EERs on the test utterances;
  ``test_recon``, ``probe_digit`` and ``probe_silence``, what z_1:T still carries
  (``s3vae.evaluation.verification.dynamic_content``; the test pseudo-labels must be built);
* the training losses of the last K steps (recon, KL_f, KL_t, SCC, DFP, MI, ...) and steps/s.

``--ema D ...`` also scores moving averages of the weights (``s3vae.utils.WeightAverage``, as
``train.ema_decay`` keeps them) beside the trained ones, ``ema<D>_`` columns: a paired comparison from
one run, whose trajectory they do not change.

Training time excludes scoring time. Prints the table, writes ``benchmarks/curves/<name>.csv`` and a PNG,
and the same scalars to TensorBoard (``tensorboard --logdir benchmarks/runs``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s3vae import configs  # noqa: E402
from s3vae.data import ClipDataset, batch_of  # noqa: E402
from s3vae.evaluation.judge import load_judge  # noqa: E402
from s3vae.evaluation.metrics import generate, swap_partners  # noqa: E402
from s3vae.evaluation.verification import dynamic_content, speaker_verification  # noqa: E402
from s3vae.model import S3VAEConfig  # noqa: E402
from s3vae.train import TrainConfig, train  # noqa: E402
from s3vae.utils import WeightAverage, from_dict  # noqa: E402


class Budget(Exception):
    pass


def apply_overrides(config: dict, dataset: str, variant: str, sets: list[str]) -> None:
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        value = yaml.safe_load(value)
        if section == "train":
            config.setdefault("train_overrides", {}).setdefault(dataset, {})[name] = value
        elif section == "model":
            config["datasets"][dataset]["model"][name] = value
        elif section == "variant":
            config["variants"][variant][name] = value
        elif section == "dataset":
            config["datasets"][dataset][name] = value
        else:
            raise SystemExit(f"--set {s}: section must be train, model, variant or dataset")


@torch.no_grad()
def score(model, judge, x, labels, static, dynamic, partner, batch=128) -> dict:
    """Judge accuracies of generated, swapped and reconstructed clips (module docstring)."""
    was_training, rng = model.training, torch.get_rng_state()
    model.eval()
    torch.manual_seed(0)
    hits = {}

    def add(name, out, names, target_idx):
        for k in names:
            hits.setdefault(f"{name}_{k}", []).append((out[k].argmax(-1) == labels[k][target_idx]).float())

    for i in range(0, len(x), batch):
        idx = torch.arange(i, min(i + batch, len(x)))
        xb = x[idx]
        enc = model.encode(xb)
        add("rec", judge(model.decode(enc["zf_mu"], enc["zt_mu"])), static + dynamic, idx)
        if dynamic:
            add("dyn", judge(generate(model, xb, "dynamic")), dynamic, idx)
            p = partner[idx]
            zt_b = model.encode(x[p])["zt_mu"]
            out = judge(model.decode(enc["zf_mu"], zt_b))
            add("swap", out, dynamic, p)
            add("swap", out, static, idx)
        if static:
            add("stat", judge(generate(model, xb, "static")), static, idx)
    model.train(was_training)
    torch.set_rng_state(rng)
    acc = {k: float(torch.cat(v).mean()) for k, v in hits.items()}
    row = {}
    for name in ("dyn", "stat", "swap", "rec"):
        for group, names in (("dyn", dynamic), ("stat", static)):
            vals = [acc[f"{name}_{k}"] for k in names if f"{name}_{k}" in acc]
            if vals:
                row[f"{name}_{group}" if name != group else name] = float(np.mean(vals))
    return row


def audio_scores(model, test_shards, test_label_shards) -> dict:
    """Table 3's EERs (z_f, z_1:T) and what z_1:T still carries (``verification.dynamic_content``)."""
    was_training = model.training
    ver = speaker_verification(model, test_shards)
    content = dynamic_content(model, test_shards, test_label_shards)
    model.train(was_training)
    return {"eer_zf": ver["eer_static"], "eer_zt": ver["eer_dynamic"], "test_recon": round(content["recon_mse"], 2),
            "probe_digit": content["probe_digit"], "probe_silence": content["probe_silence"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--dataset", default="sprites")
    p.add_argument("--variant", default="full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    p.add_argument("--epochs", type=int, default=0,
                   help="train this many epochs (within --minutes); 0: until the budget runs out")
    p.add_argument("--every", type=int, default=500, help="score every K steps")
    p.add_argument("--n-eval", type=int, default=512, help="test clips scored")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the config's)")
    p.add_argument("--set", nargs="*", default=[], help="overrides: train.KEY=V model.KEY=V variant.KEY=V")
    p.add_argument("--ema", nargs="*", type=float, default=[],
                   help="also score exponential moving averages of the weights with these decays (ema<D>_ columns)")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)

    config = yaml.safe_load(open(a.config))
    apply_overrides(config, a.dataset, a.variant, a.set)
    ds = config["datasets"][a.dataset]
    tcfg = configs.train_config(config, a.dataset, a.variant, a.seed)
    tcfg["epochs"] = a.epochs or 10_000  # a schedule (train.lr_schedule) spans the epochs given
    if a.threads:
        tcfg["threads"] = a.threads
    tcfg = from_dict(TrainConfig, tcfg)
    mcfg = from_dict(S3VAEConfig, configs.model_config(config, a.dataset, a.variant))
    res = Path(a.results) / a.dataset
    shards = {s: [str(res / f"shards/{s}_{i}.h5") for i in range(ds["n_shards"])] for s in ("train", "test")}
    pseudo_shards = [str(res / f"pseudolabels/{ds['pseudolabel']}/train_{i}.h5") for i in range(ds["n_shards"])]
    pseudo = config["variants"][a.variant].get("dfp_labels", "pseudo") == "pseudo"  # else ground truth in the clips
    uses_labels = (tcfg.lambda_dfp > 0 or tcfg.lambda_adv > 0) and pseudo
    label_shards = {tcfg.dfp_key: pseudo_shards} if uses_labels else {}

    torch.set_num_threads(tcfg.threads)
    if ds["modality"] == "audio":
        test_labels = [str(res / f"pseudolabels/{ds['pseudolabel']}/test_{i}.h5") for i in range(ds["n_shards"])]

        def scores(model):
            return audio_scores(model, shards["test"], test_labels)
    else:
        judge = load_judge(res / "judge/judge.pt")
        test = ClipDataset(shards["test"], preload=True)
        idx = np.random.default_rng(0).permutation(len(test))[:a.n_eval]
        b = batch_of(test, idx)
        dynamic = list(ds.get("dynamic_labels", []))
        static = [k for k in ds["labels"] if k not in dynamic]
        x, labels = b["frames"], {k: b[k] for k in static + dynamic}
        static_y = np.stack([labels[k].numpy() for k in static], 1)
        partner = torch.as_tensor(swap_partners(labels[dynamic[0]].numpy(), static_y) if dynamic else np.arange(len(x)))

        def scores(model):
            return score(model, judge, x, labels, static, dynamic, partner)

    name = a.name or f"{a.dataset}_{a.variant}_seed{a.seed}"
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(ROOT / "benchmarks/runs" / name))  # judge scores beside the losses
    rows, window, losses, clock = [], [], {}, {"train": 0.0, "t0": time.time()}
    averages = {}  # decay -> WeightAverage of the trained weights, beside them (the run itself is unchanged)

    def on_step(epoch, step, model, parts):
        now = time.time()
        for d in a.ema:
            if d not in averages:  # made once: setdefault would deep-copy the model every step
                averages[d] = WeightAverage(model, d)
            averages[d].update(model)
        clock["train"] += now - clock["t0"]
        window.append(now)
        for k, v in parts.items():
            losses.setdefault(k, []).append(float(v))
        if len(window) >= a.every or clock["train"] >= a.minutes * 60:
            steps = (rows[-1]["step"] if rows else 0) + len(window)
            sps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else float("nan")
            row = {"step": steps, "minutes": round(clock["train"] / 60, 2), "steps_per_s": round(sps, 2),
                   **scores(model),
                   **{f"ema{d:g}_{k}": v for d, avg in averages.items() for k, v in scores(avg.module).items()},
                   **{k: round(float(np.mean(v)), 3) for k, v in losses.items()}}
            rows.append(row)
            for k, v in row.items():
                if k != "step":
                    tb.add_scalar(f"quality/{k}", v, steps)
            tb.flush()
            window.clear()
            losses.clear()
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        if clock["train"] >= a.minutes * 60:
            raise Budget
        clock["t0"] = time.time()

    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(shards["train"], label_shards, Path(tmp) / "model.pt", Path(tmp) / "ckpt", mcfg, tcfg,
                  log=lambda m: print(m, flush=True), on_step=on_step)
        except Budget:
            pass
    out = ROOT / "benchmarks/curves"
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / f"{name}.png", name)
    print(f"wrote {out / name}.csv and .png")


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in ("dyn", "stat", "swap_dyn", "swap_stat", "rec_dyn", "rec_stat", "eer_zf", "eer_zt", "probe_digit"):
        if k in rows[0]:
            ax.plot([r["minutes"] for r in rows], [r[k] for r in rows], marker="o", label=k)
    ax.set(xlabel="training minutes", ylabel="judge accuracy (audio: EER, probe accuracy)", ylim=(0, 1.02),
           title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
