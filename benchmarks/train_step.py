"""Median S3VAE training-step time (forward, all four losses, backward, Adam step).

    python benchmarks/train_step.py                       # paper size: 64x64, Table 4, batch 16, T=8
    python benchmarks/train_step.py --config quick        # the quick CPU configuration (32x32)
    python benchmarks/train_step.py --profile             # add a torch.profiler table of the top ops
    python benchmarks/train_step.py --before              # also the step with the decoder's first layer as a
                                                          # transposed conv (the code before Project4x4)
    python benchmarks/train_step.py --bf16                # also the step under bfloat16 autocast (train.amp:
                                                          # bf16), interleaved with float32 steps

Prints one table row per loss set (VAE only / all four losses) with the median and the spread, the
step's FLOPs (``torch.utils.flop_counter``) and the achieved GFLOP/s beside a float32 matmul measured in
the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from s3vae.losses import LossOptions, s3vae_loss
from s3vae.model import S3VAE, Project4x4, S3VAEConfig

CONFIGS = {
    "paper": S3VAEConfig(),  # Table 4 widths, 64x64, (d_zf, d_zt) = (256, 32)
    # the quick CPU configuration (config/config.yaml's Sprites model)
    "quick": S3VAEConfig(image_size=32, enc_widths=[16, 32, 64], decoder="transposed", dec_widths=[128, 64, 32],
                         static_lstm="bidirectional"),
}


def step_times(model, opt, x, y, lambdas, n, warmup, bf16=False):
    times = []
    for i in range(warmup + n):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = s3vae_loss(model, x, y, LossOptions(*lambdas), dataset_size=9000)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def step_flops(model, x, y, lambdas) -> int:
    """FLOPs of one training step (forward, losses, backward) by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = s3vae_loss(model, x, y, LossOptions(*lambdas), dataset_size=9000)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def with_conv_first_layer(model: S3VAE) -> S3VAE:
    """A copy of ``model`` whose first decoder layer runs as ``nn.ConvTranspose2d`` (same weights)."""
    import copy

    other = copy.deepcopy(model)
    for name, layer in other.decoder.net.named_children():
        if isinstance(layer, Project4x4):
            conv = torch.nn.ConvTranspose2d(layer.in_channels, layer.out_channels, 4, 1, 0).to(layer.weight)
            conv.load_state_dict(layer.state_dict())
            other.decoder.net[int(name)] = conv
    return other


def interleaved_times(models, opts, x, y, lambdas, n, warmup, bf16=None):
    """Step times of several models (``bf16``: per model, under bfloat16 autocast), one step of each in
    turn, so that a busy machine slows all alike."""
    times = [[] for _ in models]
    bf16 = bf16 or [False] * len(models)
    for i in range(warmup + n):
        for k, (model, opt) in enumerate(zip(models, opts)):
            t = step_times(model, opt, x, y, lambdas, 1, 0, bf16[k])[0]
            if i >= warmup:
                times[k].append(t)
    return times


def matmul_gflops(device, n=1024, reps=20) -> float:
    """This machine's float32 matmul rate (GFLOP/s) with the current thread setting: the ceiling to read
    the step's achieved rate against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    if a.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if a.is_cuda:
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--bf16", action="store_true", help="also time the step under bfloat16 autocast, interleaved")
    p.add_argument("--before", action="store_true",
                   help="also time the first decoder layer as a transposed conv, steps interleaved")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[a.config]
    dev = torch.device(a.device)
    model = S3VAE(cfg).to(dev).to(memory_format=torch.channels_last)  # as in training
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(a.batch, a.frames, cfg.channels, cfg.image_size, cfg.image_size, device=dev)
    y = torch.randint(0, cfg.dfp_out, (a.batch, a.frames - 1, 1), device=dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# {a.config}: {cfg.image_size}x{cfg.image_size}, enc {cfg.enc_widths}, dec {cfg.dec_widths}, "
          f"{n_params / 1e6:.1f} M parameters, batch {a.batch} x {a.frames} frames, device {dev}, "
          f"threads {torch.get_num_threads()}")
    peak = matmul_gflops(dev)
    print(f"# float32 matmul (1024x1024): {peak:.1f} GFLOP/s")
    print("| losses | median s/step | min | max | steps/s | GFLOP/step | GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|---|---|")
    for name, lam in (("L_VAE only", (0, 0, 0)), ("all four (eq. 9)", (1000, 100, 1))):
        t = step_times(model, opt, x, y, lam, a.steps, a.warmup)
        med = statistics.median(t)
        gflop = step_flops(model, x, y, lam) / 1e9
        print(f"| {name} | {med:.4f} | {min(t):.4f} | {max(t):.4f} | {1 / med:.2f} | {gflop:.2f} | "
              f"{gflop / med:.1f} | {gflop / med / peak:.0%} |")
    if a.before:
        old = with_conv_first_layer(model)
        t_new, t_old = interleaved_times([model, old], [opt, torch.optim.Adam(old.parameters(), lr=1e-3)],
                                         x, y, (1000, 100, 1), a.steps, a.warmup)
        m_new, m_old = statistics.median(t_new), statistics.median(t_old)
        print(f"# all four, interleaved: first layer as a matmul {m_new:.4f} s/step, as a transposed conv "
              f"{m_old:.4f} s/step: {m_old / m_new:.2f}x the steps/s")
    if a.bf16:
        import copy
        other = copy.deepcopy(model)
        t32, t16 = interleaved_times([model, other], [opt, torch.optim.Adam(other.parameters(), lr=1e-3)],
                                     x, y, (1000, 100, 1), a.steps, a.warmup, bf16=[False, True])
        m32, m16 = statistics.median(t32), statistics.median(t16)
        print(f"# all four, interleaved: float32 {m32:.4f} s/step, bfloat16 autocast {m16:.4f} s/step: "
              f"{m32 / m16:.2f}x the steps/s")
    if a.profile:
        from torch.profiler import profile
        with profile() as prof:
            step_times(model, opt, x, y, (1000, 100, 1), 3, 0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
