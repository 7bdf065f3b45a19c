"""Training: deterministic, checkpointed every epoch, resumable to the same weights."""

import csv

import numpy as np
import pytest
import torch

from s3vae.data import atomic_h5, create_frames
from s3vae.model import S3VAEConfig
from s3vae.train import TrainConfig, load_checkpoint, load_model, train

MODEL = S3VAEConfig(channels=3, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=16,
                    z_f=8, z_t=4, dfp_out=9, dfp_hidden=16)


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    with atomic_h5(tmp_path / "clips.h5") as f:
        create_frames(f, rng.integers(0, 256, (24, 5, 16, 16, 3), dtype=np.uint8))
        f.create_dataset("labels/action", data=rng.integers(0, 9, 24))
    with atomic_h5(tmp_path / "flow.h5") as f:
        f.create_dataset("flow_labels", data=rng.integers(0, 9, (24, 4, 1)))
    return [str(tmp_path / "clips.h5")], {"flow_labels": [str(tmp_path / "flow.h5")]}


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "lambda_scc": 1000, "lambda_dfp": 100, "lambda_mi": 1,
                          "threads": 1, **kw})


def test_interrupted_run_resumes_to_identical_weights(shards, tmp_path):
    clips, labels = shards
    straight = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck_a", MODEL, cfg(epochs=2), log=lambda *_: None)
    # "killed" after epoch 1: a run that stops there, then a restart asked for 2 epochs
    train(clips, labels, tmp_path / "b1.pt", tmp_path / "ck_b", MODEL, cfg(epochs=1), log=lambda *_: None)
    msgs = []
    resumed = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(epochs=2), log=msgs.append)
    assert any("resumed" in m and "epoch 1" in m for m in msgs)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    rows = list(csv.DictReader(open(tmp_path / "ck_b/losses.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]                   # no duplicated epoch after resume
    assert float(rows[1]["scc"]) >= 0 and float(rows[1]["dfp"]) > 0


def test_a_run_with_clubs_critic_on_its_own_optimiser_resumes_to_identical_weights(shards, tmp_path):
    """The critic's Adam state is checkpointed with the model's: a resumed run equals an uninterrupted one."""
    import dataclasses

    clips, labels = shards
    model = dataclasses.replace(MODEL, mi_critic="club", critic_hidden=8)
    club = dict(mi_estimator="club", mi_grad="zf", critic_steps=2, critic_lr=1e-3)
    straight = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck_a", model, cfg(epochs=2, **club),
                     log=lambda *_: None)
    train(clips, labels, tmp_path / "b1.pt", tmp_path / "ck_b", model, cfg(epochs=1, **club), log=lambda *_: None)
    assert "critic_optimizer" in load_checkpoint(tmp_path / "ck_b/last.pt")
    resumed = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", model, cfg(epochs=2, **club),
                    log=lambda *_: None)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert all(r["mi_fit"] != 0 for r in straight["history"])    # the critic's fit is logged beside the bound


def test_mi_warmup_ramps_lambda_mi_by_global_step_and_a_resumed_run_continues_it(shards, tmp_path, monkeypatch):
    import s3vae.train as train_module

    seen = []
    original = train_module.s3vae_loss

    def recording(model, x, y, opts, **kw):
        seen.append(opts.lambda_mi)
        return original(model, x, y, opts, **kw)

    monkeypatch.setattr(train_module, "s3vae_loss", recording)
    clips, labels = shards   # 24 clips, batch 8: 3 steps per epoch
    train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", MODEL, cfg(epochs=1, lambda_mi=2, mi_warmup_steps=5),
          log=lambda *_: None)
    assert seen == pytest.approx([0.4, 0.8, 1.2])
    seen.clear()
    train(clips, labels, tmp_path / "b.pt", tmp_path / "ck", MODEL, cfg(epochs=2, lambda_mi=2, mi_warmup_steps=5),
          log=lambda *_: None)
    assert seen == pytest.approx([1.6, 2.0, 2.0])


def test_ema_decay_saves_the_moving_average_of_the_weights_and_a_resumed_run_continues_it(shards, tmp_path):
    """With ``ema_decay`` the model written is the bias-corrected average sum_k d^(K-k) w_k / sum_k d^(K-k) of
    the K steps' weights (floats; BatchNorm statistics included), and a run resumed after epoch 1 writes the
    same one."""
    clips, labels = shards
    d, seen = 0.7, []

    def record(epoch, step, model, parts):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    straight = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck_a", MODEL, cfg(epochs=2, ema_decay=d),
                     log=lambda *_: None, on_step=record)
    assert len(seen) == 6                                         # 24 clips, batch 8, 2 epochs
    K = len(seen)
    norm = sum(d ** (K - 1 - i) for i in range(K))
    expected = {k: (sum(d ** (K - 1 - i) * w[k].double() for i, w in enumerate(seen)) / norm
                    if v.is_floating_point() else v) for k, v in seen[-1].items()}
    for k, v in straight["model"].items():
        assert torch.allclose(v.float(), expected[k].float(), atol=1e-6), k
    moved = [k for k, v in straight["model"].items() if v.is_floating_point() and not torch.equal(v, seen[-1][k])]
    assert moved                                                  # not the last step's weights
    train(clips, labels, tmp_path / "b1.pt", tmp_path / "ck_b", MODEL, cfg(epochs=1, ema_decay=d), log=lambda *_: None)
    resumed = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(epochs=2, ema_decay=d),
                    log=lambda *_: None)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    loaded = load_model(tmp_path / "a.pt").state_dict()                # what evaluation reads
    assert all(torch.equal(loaded[k], v) for k, v in straight["model"].items())


def test_checkpoints_load_weights_only_and_model_round_trips(shards, tmp_path):
    clips, labels = shards
    train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    ck = load_checkpoint(tmp_path / "ck/last.pt")                   # torch.load(weights_only=True)
    assert ck["epoch"] == 1 and set(ck["history"][0]) >= {"loss", "recon", "kl_f", "kl_t", "scc", "dfp", "mi"}
    m = load_model(tmp_path / "m.pt")
    assert not m.training
    x = torch.rand(2, 5, 3, 16, 16)
    assert m(x)["x_hat"].shape == x.shape


def test_resume_with_a_different_config_is_refused(shards, tmp_path):
    clips, labels = shards
    train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    with pytest.raises(ValueError, match="last.pt: checkpoint was written with a different configuration"):
        train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=2, lambda_mi=0),
              log=lambda *_: None)


def test_a_checkpoint_of_other_data_is_refused_or_restarted(shards, tmp_path):
    """A finished checkpoint must not stand in for training on rebuilt shards (same config)."""
    import os

    clips, labels = shards
    train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    st = os.stat(clips[0])
    os.utime(clips[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))     # the shard was rewritten
    with pytest.raises(ValueError, match="last.pt: checkpoint was written with different training data"):
        train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    msgs = []
    out = train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=msgs.append,
                on_stale="restart")
    assert any("starting over" in m for m in msgs) and not any("resumed" in m for m in msgs)
    assert len(out["history"]) == 1
    msgs.clear()   # same data again: an ordinary resume (nothing left to train)
    train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=msgs.append)
    assert any("resumed" in m for m in msgs)
    # a changed configuration with on_stale="restart" starts over too
    out = train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=1, lambda_mi=0),
                log=msgs.append, on_stale="restart")
    assert any("different configuration; starting over" in m for m in msgs) and out["history"][0]["mi"] == 0


def test_fewer_epochs_than_a_finished_checkpoint_give_the_shorter_model(shards, tmp_path):
    clips, labels = shards
    short = train(clips, labels, tmp_path / "s.pt", tmp_path / "ck_s", MODEL, cfg(epochs=1), log=lambda *_: None)
    train(clips, labels, tmp_path / "l.pt", tmp_path / "ck", MODEL, cfg(epochs=2), log=lambda *_: None)
    with pytest.raises(ValueError, match=r"more epochs \(2\) than the 1 asked"):
        train(clips, labels, tmp_path / "x.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    msgs = []
    again = train(clips, labels, tmp_path / "x.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=msgs.append,
                  on_stale="restart")                                        # the workflow's choice: retrain
    assert any("starting over" in m for m in msgs) and len(again["history"]) == 1
    for k, v in short["model"].items():
        assert torch.equal(v, again["model"][k]), k


def test_training_reduces_the_loss(shards, tmp_path):
    clips, labels = shards
    out = train(clips, labels, tmp_path / "m.pt", tmp_path / "ck", MODEL, cfg(epochs=6, lambda_scc=0, lambda_mi=0),
                log=lambda *_: None)
    hist = out["history"]
    assert hist[-1]["recon"] < hist[0]["recon"]


def test_sigterm_mid_epoch_checkpoints_and_resumes_bit_identically(shards, tmp_path):
    """What SLURM does before a kill or requeue: SIGTERM mid-epoch, then the job starts again."""
    import os
    import signal

    from s3vae.train import TrainingInterrupted

    clips, labels = shards
    straight = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck_a", MODEL, cfg(epochs=2), log=lambda *_: None)

    def kill_at(epoch, step, *_):
        if (epoch, step) == (1, 0):          # during epoch 2, after its first of 3 batches
            os.kill(os.getpid(), signal.SIGTERM)

    msgs = []
    with pytest.raises(TrainingInterrupted):
        train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(epochs=2), log=msgs.append,
              on_step=kill_at)
    assert not (tmp_path / "b.pt").exists()
    ck = load_checkpoint(tmp_path / "ck_b/last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # handler restored
    resumed = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(epochs=2), log=msgs.append)
    assert any("resumed" in m and "step 1" in m for m in msgs)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert straight["history"][1]["loss"] == pytest.approx(resumed["history"][1]["loss"], rel=1e-12)


def test_regression_targets_are_standardised_over_the_training_set_and_nan_rows_masked():
    import numpy as np

    from s3vae.losses import dfp_loss
    from s3vae.train import regression_stats

    v = np.random.default_rng(0).normal(3.0, 0.01, size=(50, 6, 3)).astype(np.float32)
    v[4] = np.nan                                       # a clip without a face
    mean, std = regression_stats(v)
    assert np.allclose(mean, 3.0, atol=0.01) and np.allclose(std, 0.01, rtol=0.2)
    y = (torch.from_numpy(v[:8]).flatten(2) - mean) / std
    logits = torch.zeros(8, 6, 3, requires_grad=True)
    loss = dfp_loss(logits, y, "regression")
    loss.backward()
    assert torch.isfinite(loss) and 0.5 < loss.item() < 2.0    # ~ unit variance once standardised
    assert torch.all(logits.grad[4] == 0)                      # the NaN clip contributes nothing
    vel = np.arange(2 * 3 * 2 * 2, dtype=np.int64).reshape(2, 3, 2, 2)   # SMMNIST velocities (N, T, 2, 2)
    assert regression_stats(vel)[0].shape == (4,)


def test_step_log_writes_csv_and_tensorboard_and_a_resume_keeps_earlier_rows(shards, tmp_path):
    clips, labels = shards
    train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", MODEL, cfg(epochs=1, log_every=1), log=lambda *_: None)
    rows = list(csv.DictReader(open(tmp_path / "ck/steps.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]                     # 24 clips / batch 8
    assert all(float(r["recon"]) > 0 and float(r["steps_per_s"]) > 0 and float(r["lr"]) == 1e-3 for r in rows)
    assert list((tmp_path / "ck/tb").glob("events.out.tfevents.*"))
    # a run shorter than log_every still logs its steps once, at the end
    train(clips, labels, tmp_path / "c.pt", tmp_path / "ck_c", MODEL, cfg(epochs=1, log_every=50), log=lambda *_: None)
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "ck_c/steps.csv"))] == [3]
    train(clips, labels, tmp_path / "b.pt", tmp_path / "ck", MODEL, cfg(epochs=2, log_every=1), log=lambda *_: None)
    rows = list(csv.DictReader(open(tmp_path / "ck/steps.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    from s3vae.reporting.curves import plot_training
    assert plot_training(tmp_path / "ck/steps.csv", tmp_path / "t.png").stat().st_size > 1000


def test_cosine_schedule_follows_the_global_step_and_fixes_the_epoch_count(shards, tmp_path):
    import math

    clips, labels = shards
    train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", MODEL, cfg(epochs=2, log_every=1, lr_schedule="cosine"),
          log=lambda *_: None)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "ck/steps.csv"))]
    assert lrs == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])
    # with a schedule the epoch count is part of the result: a resume with another count is refused
    with pytest.raises(ValueError, match="different configuration"):
        train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", MODEL, cfg(epochs=3, lr_schedule="cosine"),
              log=lambda *_: None)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(clips, labels, tmp_path / "b.pt", tmp_path / "ck_b", MODEL, cfg(lr_schedule="step"), log=lambda *_: None)


def test_static_adversary_variant_trains(shards, tmp_path):
    clips, labels = shards
    model = S3VAEConfig(**{**MODEL.__dict__, "adv_steps": 5, "decoder": "transposed", "dec_widths": [16, 8]})
    out = train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", model, cfg(epochs=1, lambda_adv=10, scc_on="means"),
                log=lambda *_: None)
    assert out["history"][0]["adv"] > 0 and out["history"][0]["conf"] >= np.log(9) - 1e-4


def test_a_truncated_checkpoint_is_named_and_restarted_under_the_workflow(shards, tmp_path):
    clips, labels = shards
    train(clips, labels, tmp_path / "a.pt", tmp_path / "ck", MODEL, cfg(epochs=1), log=lambda *_: None)
    last = tmp_path / "ck/last.pt"
    last.write_bytes(last.read_bytes()[:1000])                       # a crash mid-copy
    with pytest.raises(ValueError, match="last.pt: unreadable checkpoint"):
        train(clips, labels, tmp_path / "b.pt", tmp_path / "ck", MODEL, cfg(epochs=2), log=lambda *_: None)
    msgs = []
    out = train(clips, labels, tmp_path / "b.pt", tmp_path / "ck", MODEL, cfg(epochs=2), log=msgs.append,
                on_stale="restart")
    assert any("unreadable checkpoint" in m and "starting over" in m for m in msgs)
    assert len(out["history"]) == 2


def test_a_shard_damaged_in_the_middle_is_named(tmp_path):
    from s3vae.data import ClipDataset, ShardError

    rng = np.random.default_rng(0)
    path = tmp_path / "clips.h5"
    with atomic_h5(path) as f:
        create_frames(f, rng.integers(0, 4, (64, 5, 16, 16, 3), dtype=np.uint8))   # compressible: lzf chunks
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()  # same size, random middle
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"clips\.h5.*damaged.*--forcerun"):
        ClipDataset([str(path)], preload=True)
    lazy = ClipDataset([str(path)], preload=False)
    with pytest.raises(ShardError, match=r"clips\.h5: row \d+ of 'frames'.*damaged"):
        for i in range(len(lazy)):
            lazy[i]


def test_judge_trains_on_random_frames_and_blur_and_reports_blurred_accuracy(shards, tmp_path):
    from s3vae.evaluation.judge import JudgeConfig, train_judge

    clips, _ = shards
    cfg = JudgeConfig(channels=3, image_size=16, frames=5, heads={"action": 9}, dynamic=[], width=8)
    m = train_judge(clips, clips, tmp_path / "j.pt", tmp_path / "j.json", cfg, epochs=1, batch_size=8,
                    blur=1.0, train_frames=2, log=lambda *_: None)
    assert 0 <= m["test_accuracy"]["action"] <= 1 and 0 <= m["test_accuracy_blurred"]["action"] <= 1
    with pytest.raises(ValueError, match="dynamic heads"):
        train_judge(clips, clips, tmp_path / "j.pt", tmp_path / "j.json",
                    JudgeConfig(channels=3, image_size=16, frames=5, heads={"action": 9}, width=8),
                    epochs=1, train_frames=2, log=lambda *_: None)


def test_every_trainers_adam_is_the_fused_kernel_on_cpu_with_the_same_update():
    """utils.adam (all five trainers) takes the fused kernel where it exists; its steps match torch's default Adam."""
    from s3vae.utils import adam

    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    w0 = a.weight.detach().clone()
    oa, ob = adam(a.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3), \
        torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    assert oa.param_groups[0]["fused"] is True and not ob.param_groups[0]["fused"]
    x = torch.randn(8, 6)
    for _ in range(5):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert not torch.allclose(a.weight, w0)  # they moved
