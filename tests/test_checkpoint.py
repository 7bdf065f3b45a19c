"""One checkpoint and one loop for the five trainers (S3VAE, MoCoGAN, MonkeyNet, FHVAE, the judge): each
resumes mid-epoch after SIGTERM to the weights of an uninterrupted run, retrains on rebuilt input, and
never returns a longer-trained model than asked."""

import os
import signal

import pytest
import torch
from conftest import labelled_clip_shard
from test_fhvae import tiny_segments

import s3vae.engine as engine
from s3vae.checkpoint import TrainingInterrupted, load_checkpoint


def run_s3vae(shard, out, ckpt, epochs, log):
    from s3vae.model import S3VAEConfig
    from s3vae.train import TrainConfig, train

    model = S3VAEConfig(channels=3, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=16,
                        z_f=8, z_t=4)
    train([shard], {}, out, ckpt, model, TrainConfig(epochs=epochs, batch_size=8, lambda_dfp=0, threads=1),
          log=log, on_stale="restart")


def run_mocogan(shard, out, ckpt, epochs, log):
    from test_mocogan import CFG

    from s3vae.comparisons.mocogan import MoCoGANTrainConfig, train

    train([shard], out, ckpt, CFG, MoCoGANTrainConfig(epochs=epochs, batch_size=8, seed=3, device="cpu", threads=1),
          log=log)


def run_monkeynet(shard, out, ckpt, epochs, log):
    from test_monkeynet import CFG

    from s3vae.comparisons.monkeynet import MonkeyNetTrainConfig, train

    train([shard], out, ckpt, CFG, MonkeyNetTrainConfig(epochs=epochs, batch_size=8, seed=3, device="cpu", threads=1),
          log=log)


def run_fhvae(shard, out, ckpt, epochs, log):
    from test_fhvae import CFG

    from s3vae.comparisons.fhvae import FHVAETrainConfig, train

    train([shard], out, ckpt, CFG, FHVAETrainConfig(epochs=epochs, batch_size=8, seed=2, device="cpu", threads=1),
          log=log)


def run_judge(shard, out, ckpt, epochs, log):
    from s3vae.evaluation.judge import JudgeConfig, train_judge

    cfg = JudgeConfig(channels=3, image_size=16, frames=4, heads={"action": 3, "skin": 2}, dynamic=["action"], width=8)
    train_judge([shard], [shard], out, f"{out}.json", cfg, epochs=epochs, batch_size=8, blur=1.0, device="cpu",
                threads=1, log=log, ckpt_dir=ckpt)   # the blur draws from the shuffling generator mid-epoch


TRAINERS = {"s3vae": run_s3vae, "mocogan": run_mocogan, "monkeynet": run_monkeynet, "fhvae": run_fhvae,
            "judge": run_judge}


def make_input(trainer, path, seed=0):
    return tiny_segments(path, seed=seed) if trainer == "fhvae" else labelled_clip_shard(path, seed=seed)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("trainer", TRAINERS)
def test_sigterm_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(trainer, tmp_path, monkeypatch):
    run, shard = TRAINERS[trainer], make_input(trainer, tmp_path / "train_0.h5")
    run(shard, tmp_path / "straight.pt", tmp_path / "ck_a", 2, lambda *_: None)

    plain = engine.train_one_epoch

    def killed_in_epoch_2(name, data, parts, step, *args, **kw):
        def then_sigterm(batch, at):
            terms = step(batch, at)
            if (at.epoch, at.step) == (1, 0):        # during epoch 2, after its first batch
                os.kill(os.getpid(), signal.SIGTERM)
            return terms
        return plain(name, data, parts, then_sigterm, *args, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(TrainingInterrupted):
        run(shard, tmp_path / "resumed.pt", tmp_path / "ck_b", 2, lambda *_: None)
    assert not (tmp_path / "resumed.pt").exists()
    ck = load_checkpoint(tmp_path / "ck_b/last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # the handler is put back
    monkeypatch.setattr(engine, "train_one_epoch", plain)
    msgs = []
    run(shard, tmp_path / "resumed.pt", tmp_path / "ck_b", 2, msgs.append)
    assert any(m.startswith(f"resumed from {tmp_path / 'ck_b/last.pt'} at epoch 1, step 1") for m in msgs), msgs
    assert_same(weights(tmp_path / "straight.pt"), weights(tmp_path / "resumed.pt"))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_input_rebuilt_with_other_data_retrains_instead_of_resuming(trainer, tmp_path):
    run, shard = TRAINERS[trainer], make_input(trainer, tmp_path / "train_0.h5")
    run(shard, tmp_path / "old.pt", tmp_path / "ck", 1, lambda *_: None)
    make_input(trainer, shard, seed=5)                                       # the shards are rebuilt
    os.utime(shard, ns=(10**18, 10**18))
    msgs = []
    run(shard, tmp_path / "new.pt", tmp_path / "ck", 1, msgs.append)
    assert any("checkpoint was written with different training data" in m and "starting over" in m for m in msgs)
    assert not any(m.startswith("resumed") for m in msgs)
    run(shard, tmp_path / "fresh.pt", tmp_path / "ck_fresh", 1, lambda *_: None)
    assert_same(weights(tmp_path / "fresh.pt"), weights(tmp_path / "new.pt"))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_fewer_epochs_than_a_finished_checkpoint_give_the_shorter_model(trainer, tmp_path):
    run, shard = TRAINERS[trainer], make_input(trainer, tmp_path / "train_0.h5")
    run(shard, tmp_path / "short.pt", tmp_path / "ck_short", 1, lambda *_: None)
    run(shard, tmp_path / "long.pt", tmp_path / "ck", 2, lambda *_: None)
    msgs = []
    run(shard, tmp_path / "again.pt", tmp_path / "ck", 1, msgs.append)
    assert any("more epochs (2) than the 1 asked; starting over" in m for m in msgs), msgs
    assert_same(weights(tmp_path / "short.pt"), weights(tmp_path / "again.pt"))
