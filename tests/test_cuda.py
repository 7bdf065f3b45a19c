"""The training paths on CUDA: S3VAE's step, resume bit-identical, bf16 autocast, the judge, MoCoGAN,
MonkeyNet and FHVAE. Every test here is marked ``cuda`` and skips on a machine without CUDA
(``pytest -m cuda`` selects them; ``benchmarks/gpu_check.sh`` runs them first).

``S3VAE_CUDA_TESTS_ON_CPU=1`` runs them on the CPU instead of skipping (``gpu_check.py --dry-run`` sets
it, so that these tests cannot rot on the CPU-only CI machines).
"""

import os

# deterministic cuBLAS needs its workspace fixed before the first cuBLAS call (only the deterministic
# variant of the resume test turns deterministic algorithms on; the setting alone changes nothing else)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import labelled_clip_shard  # noqa: E402

from s3vae.data import atomic_h5, create_frames  # noqa: E402
from s3vae.model import S3VAE, S3VAEConfig  # noqa: E402
from s3vae.train import TrainConfig, load_checkpoint, train  # noqa: E402

pytestmark = pytest.mark.cuda

# all four losses and the static adversary: every branch of s3vae_loss
MODEL = S3VAEConfig(channels=3, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=16,
                    z_f=8, z_t=4, dfp_out=9, dfp_hidden=16, adv_steps=5)


@pytest.fixture()
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("S3VAE_CUDA_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("needs CUDA (S3VAE_CUDA_TESTS_ON_CPU=1 runs it on the CPU)")


@pytest.fixture()
def shards(tmp_path):
    """24 clips of 5 frames at 16x16 and their flow labels, as tests/test_train.py builds them."""
    rng = np.random.default_rng(0)
    with atomic_h5(tmp_path / "clips.h5") as f:
        create_frames(f, rng.integers(0, 256, (24, 5, 16, 16, 3), dtype=np.uint8))
        f.create_dataset("labels/action", data=rng.integers(0, 9, 24))
    with atomic_h5(tmp_path / "flow.h5") as f:
        f.create_dataset("flow_labels", data=rng.integers(0, 9, (24, 4, 1)))
    return [str(tmp_path / "clips.h5")], {"flow_labels": [str(tmp_path / "flow.h5")]}


def cfg(device, **kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "lambda_scc": 1000, "lambda_dfp": 100, "lambda_mi": 1,
                          "lambda_adv": 10, "scc_on": "means", "threads": 1, "device": device, **kw})


def quiet(*_):
    pass


def test_a_training_step_runs_on_the_device_and_moves_every_trained_weight(device):
    from s3vae.losses import LossOptions, s3vae_loss

    torch.manual_seed(0)
    model = S3VAE(MODEL).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.rand(8, 5, 3, 16, 16, device=device)
    y = torch.randint(0, 9, (8, 4, 1), device=device)
    loss, parts = s3vae_loss(model, x, y, LossOptions.of(cfg(device)), dataset_size=24)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss.device.type == device
    assert {"recon", "kl_f", "kl_t", "scc", "dfp", "mi", "adv", "conf"} <= set(parts)
    assert all(torch.isfinite(v) for v in parts.values())
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    moved = [k for k, p in model.named_parameters() if not torch.equal(p, before[k])]
    assert len(moved) > 0.9 * len(before), sorted(set(before) - set(moved))


@pytest.mark.parametrize("deterministic", [False, True], ids=["as_the_pipeline_runs", "deterministic_algorithms"])
def test_sigterm_mid_epoch_then_resume_gives_bit_identical_weights(device, shards, tmp_path, deterministic):
    """s3vae.train.train as the workflow calls it (amp auto: bfloat16 autocast where the device has it),
    SIGTERM during epoch 2, then a restart: the same weights as an uninterrupted run. The second variant
    turns on torch's deterministic algorithms, which the pipeline does not: if only it passes, CUDA's
    nondeterministic kernels (not the checkpoint) make a resumed run differ."""
    import signal

    from s3vae.train import TrainingInterrupted

    old = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
           torch.backends.cudnn.benchmark)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        clips, labels = shards
        straight = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck_a", MODEL, cfg(device), log=quiet)

        def kill_at(epoch, step, *_):
            if (epoch, step) == (1, 0):
                os.kill(os.getpid(), signal.SIGTERM)

        with pytest.raises(TrainingInterrupted):
            train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(device), log=quiet, on_step=kill_at)
        ck = load_checkpoint(tmp_path / "ck_b/last.pt")
        assert (ck["epoch"], ck["step"]) == (1, 1)
        assert ("rng_cuda" in ck) == (device == "cuda")
        msgs = []
        resumed = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(device), log=msgs.append)
        assert any("resumed" in m for m in msgs)
        differ = [k for k, v in straight["model"].items() if not torch.equal(v, resumed["model"][k])]
        if differ:
            again = train(clips, labels, tmp_path / "c.pt", tmp_path / "ck_c", MODEL, cfg(device), log=quiet)
            runs_differ = any(not torch.equal(v, again["model"][k]) for k, v in straight["model"].items())
            why = ("two uninterrupted runs differ too: nondeterministic kernels, not the resume" if runs_differ
                   else "two uninterrupted runs agree: the resume itself changes the result")
            pytest.fail(f"{len(differ)} of {len(straight['model'])} tensors differ after the resume "
                        f"(first: {differ[0]}); {why}")
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[1], old[2]


def test_bf16_autocast_step_and_training(device, shards, tmp_path):
    from s3vae.losses import LossOptions, s3vae_loss

    if device == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    torch.manual_seed(0)
    model = S3VAE(MODEL).to(device)
    x = torch.rand(8, 5, 3, 16, 16, device=device)
    y = torch.randint(0, 9, (8, 4, 1), device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(x)
        loss, _ = s3vae_loss(model, x, y, LossOptions.of(cfg(device)), dataset_size=24)
    assert out["feats"].dtype == torch.bfloat16          # the convolutions ran in bfloat16
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in model.parameters())               # float32 weights and gradients
    msgs = []
    hist = train(*shards, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(device, epochs=1, amp="bf16"),
                 log=msgs.append)["history"]
    assert any(f"training on {device}" in m and "autocast bf16" in m for m in msgs)
    assert all(np.isfinite(v) for k, v in hist[0].items() if k != "epoch")


def test_judge_forward_backward_and_training(device, shards, tmp_path):
    import torch.nn.functional as F

    from s3vae.evaluation.judge import Judge, JudgeConfig, load_judge, train_judge

    jcfg = JudgeConfig(channels=3, image_size=16, frames=5, heads={"action": 9}, dynamic=["action"], width=8)
    judge = Judge(jcfg).to(device)
    x = torch.rand(4, 5, 3, 16, 16, device=device)
    out = judge(x)
    assert out["action"].shape == (4, 9) and out["action"].device.type == device
    F.cross_entropy(out["action"], torch.randint(0, 9, (4,), device=device)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in judge.parameters())
    clips, _ = shards
    m = train_judge(clips, clips, tmp_path / "j.pt", tmp_path / "j.json", jcfg, epochs=1, batch_size=8, blur=1.0,
                    device=device, log=quiet)
    assert 0 <= m["test_accuracy"]["action"] <= 1
    assert load_judge(tmp_path / "j.pt", device)(x)["action"].shape == (4, 9)


def test_mocogan_trains(device, tmp_path):
    from s3vae.comparisons.mocogan import MoCoGANConfig, MoCoGANTrainConfig, load
    from s3vae.comparisons.mocogan import train as train_mocogan

    mcfg = MoCoGANConfig(channels=3, image_size=16, frames=4, labels={"action": 3, "skin": 2}, d_content=6,
                         d_noise=4, d_motion=4, gen_widths=[16, 8], disc_widths=[8, 16])
    shard = labelled_clip_shard(tmp_path / "train_0.h5")
    out = train_mocogan([shard], tmp_path / "m.pt", tmp_path / "ck", mcfg,
                        MoCoGANTrainConfig(epochs=1, batch_size=8, device=device, threads=1), log=quiet)
    assert np.isfinite(out["history"][0]["d_loss"]) and np.isfinite(out["history"][0]["g_loss"])
    model = load(tmp_path / "m.pt", device)
    labels = {"action": torch.tensor([0, 2]), "skin": torch.tensor([1, 0])}
    with torch.no_grad():
        assert model.generate(labels, 2).device.type == device


def test_monkeynet_trains(device, tmp_path):
    from s3vae.comparisons.monkeynet import MonkeyNetConfig, MonkeyNetTrainConfig, load
    from s3vae.comparisons.monkeynet import train as train_monkeynet

    mcfg = MonkeyNetConfig(channels=3, image_size=16, keypoints=3, kp_widths=[4, 8], motion_widths=[4, 8],
                           gen_widths=[4, 8])
    shard = labelled_clip_shard(tmp_path / "train_0.h5")
    out = train_monkeynet([shard], tmp_path / "m.pt", tmp_path / "ck", mcfg,
                          MonkeyNetTrainConfig(epochs=1, batch_size=8, device=device, threads=1), log=quiet)
    assert np.isfinite(out["history"][0]["l1"])
    model = load(tmp_path / "m.pt", device)
    video = model.animate(torch.rand(2, 3, 16, 16, device=device), torch.rand(2, 4, 3, 16, 16, device=device))
    assert video.shape == (2, 4, 3, 16, 16) and torch.isfinite(video).all()


def test_fhvae_trains(device, tmp_path):
    from s3vae.comparisons.fhvae import FHVAEConfig, FHVAETrainConfig, load
    from s3vae.comparisons.fhvae import train as train_fhvae

    rng = np.random.default_rng(0)
    path = tmp_path / "train_0.h5"
    with h5py.File(path, "w") as f:           # 12 utterances of 4 segments of 5 frames of 6 features
        f.create_dataset("frames", data=rng.normal(0, 1, (48, 5, 6)).astype(np.float32))
        f.create_dataset("labels/utterance", data=np.repeat(np.arange(12), 4))
        f.create_dataset("labels/speaker", data=np.repeat(np.arange(12) % 3, 4))
    out = train_fhvae([str(path)], tmp_path / "m.pt", tmp_path / "ck",
                      FHVAEConfig(audio_features=6, hidden=16, z_dim=4),
                      FHVAETrainConfig(epochs=1, batch_size=8, device=device, threads=1), log=quiet)
    assert np.isfinite(out["history"][0]["loss"])
    enc = load(tmp_path / "m.pt", device).encode(torch.randn(3, 5, 6, device=device))
    assert enc["zf_mu"].shape == (3, 4) and enc["zf_mu"].device.type == device
