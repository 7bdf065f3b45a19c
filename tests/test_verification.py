"""Speaker-verification EER, utterance embeddings, and the audio swap-grid figure (stand-in model)."""

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from s3vae.data import atomic_h5, create_frames
from s3vae.evaluation.verification import (
    equal_error_rate,
    speaker_verification,
    utterance_embeddings,
    verification_eer,
)
from s3vae.reporting.figures_audio import pick_segments, swap_features, swap_grid, swap_grid_from_shards


class StandIn(nn.Module):
    """encode: z_f = time-mean of the first 4 features, z_t = features 4..6 per step; decode: linear."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(4 + 3, 80)

    def encode(self, x):
        return {"zf_mu": x[:, :, :4].mean(1), "zt_mu": x[:, :, 4:7], "zf_logvar": torch.zeros(len(x), 4)}

    def decode(self, zf, zt):
        return self.out(torch.cat([zf[:, None].expand(-1, zt.shape[1], -1), zt], -1))


def test_eer_of_separated_random_and_hand_computed_scores():
    assert equal_error_rate([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 0.0
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    rng = np.random.default_rng(0)
    assert abs(equal_error_rate(rng.random(20000), rng.random(20000) < 0.3) - 0.5) < 0.02
    # targets 0.9, 0.6; non-targets 0.7, 0.2, 0.1. ROC (FPR, FNR): (0, 1) (0, .5) (1/3, .5) (1/3, 0) ...
    # FNR falls from .5 to 0 at FPR = 1/3 -> crosses FPR = FNR at 1/3.
    assert equal_error_rate([0.9, 0.7, 0.6, 0.2, 0.1], [1, 0, 1, 0, 0]) == pytest.approx(1 / 3)
    # sklearn's doc example: at threshold 0.4, FPR = FNR = 0.5 exactly
    assert equal_error_rate([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5)
    # Gaussian scores: EER = Phi(-d/2) for unit-variance classes d apart
    from scipy.stats import norm
    s = np.concatenate([rng.normal(1, 1, 50000), rng.normal(0, 1, 50000)])
    assert equal_error_rate(s, np.arange(100000) < 50000) == pytest.approx(norm.cdf(-0.5), abs=0.01)
    with pytest.raises(ValueError, match="both target"):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_cosine_verification_eer():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16)) * 3
    spk = np.repeat(np.arange(5), 6)
    assert verification_eer(centres[spk] + rng.normal(size=(30, 16)) * 0.1, spk) == 0.0
    assert 0.35 < verification_eer(rng.normal(size=(300, 16)), rng.integers(0, 5, 300)) < 0.65


def write_shard(path, utt, spk, frames):
    with atomic_h5(path) as f:
        create_frames(f, frames.astype(np.float32))
        f.create_dataset("labels/utterance", data=np.asarray(utt, np.int64))
        f.create_dataset("labels/speaker", data=np.asarray(spk, np.int64))


def test_utterance_embeddings_group_segments(tmp_path):
    # frames of utterance u, segment k: every value = 10*u + k; steps 0..19 add t/100 on features 4..6
    utt = [3, 3, 1, 7, 7, 7]
    seg = [0, 1, 0, 0, 1, 2]
    spk = [0, 0, 1, 2, 2, 2]
    frames = np.zeros((6, 20, 80))
    for r, (u, k) in enumerate(zip(utt, seg)):
        frames[r] = 10 * u + k
        frames[r, :, 4:7] += np.arange(20)[:, None] / 100
    write_shard(tmp_path / "a.h5", utt[:3], spk[:3], frames[:3])
    write_shard(tmp_path / "b.h5", utt[3:], spk[3:], frames[3:])
    model = StandIn().train()
    emb = utterance_embeddings(model, [tmp_path / "a.h5", tmp_path / "b.h5"], "static", batch_size=2)
    assert model.training                                                # mode restored
    assert emb.utterances.tolist() == [1, 3, 7] and emb.speakers.tolist() == [1, 0, 2]
    assert np.allclose(emb.embeddings, np.array([[10.0], [30.5], [71.0]]) * np.ones(4))
    dyn = utterance_embeddings(model, [tmp_path / "a.h5", tmp_path / "b.h5"], "dynamic")
    assert np.allclose(dyn.embeddings, np.array([[10.0], [30.5], [71.0]]) + 0.095)   # time-mean of t/100
    write_shard(tmp_path / "c.h5", [5, 5], [0, 1], frames[:2])
    with pytest.raises(ValueError, match="utterance 5 has segments of speakers 0 and 1"):
        utterance_embeddings(model, [tmp_path / "c.h5"])


def test_speaker_verification_static_vs_dynamic(tmp_path):
    """Speaker in features 0..3, content in 4..6: EER ~0 with z_f and ~chance with z_1:T."""
    rng = np.random.default_rng(0)
    n_utt, spk_centres = 60, rng.normal(size=(4, 4)) * 3
    utt = np.repeat(np.arange(n_utt), 2)
    spk = utt % 4
    frames = rng.normal(size=(len(utt), 20, 80)) * 0.1
    frames[:, :, :4] += spk_centres[spk][:, None]
    frames[:, :, 4:7] += rng.normal(size=(n_utt, 1, 3)).repeat(2, 0)   # content independent of speaker
    write_shard(tmp_path / "s.h5", utt, spk, frames)
    res = speaker_verification(StandIn(), [tmp_path / "s.h5"])
    assert res["eer_static"] < 0.01 and 0.3 < res["eer_dynamic"] < 0.7
    assert res["n_utterances"] == 60 and res["n_speakers"] == 4
    assert res["n_target_trials"] + res["n_nontarget_trials"] == 60 * 59 // 2


def test_swap_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    model = StandIn()
    xs, xd = rng.normal(size=(2, 20, 80)), rng.normal(size=(3, 20, 80))
    gen = swap_features(model, xs, xd)
    assert gen.shape == (2, 3, 20, 80)
    with torch.no_grad():
        expect = model.decode(model.encode(torch.tensor(xs[1:2], dtype=torch.float32))["zf_mu"],
                              model.encode(torch.tensor(xd[2:3], dtype=torch.float32))["zt_mu"])
    assert np.allclose(gen[1, 2], expect[0].numpy(), atol=1e-5)
    png = swap_grid(model, xs, xd, tmp_path / "fig" / "swap.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    utt = np.repeat(np.arange(12), 3)
    write_shard(tmp_path / "t.h5", utt, utt % 6, rng.normal(size=(36, 20, 80)))
    x, s, u = pick_segments([tmp_path / "t.h5"], 4, seed=0)
    assert x.shape == (4, 20, 80) and len(set(s.tolist())) == 4
    out = swap_grid_from_shards(model, [tmp_path / "t.h5"], tmp_path / "grid.png", n_static=4, n_dynamic=6)
    assert out.stat().st_size > 1000
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert f["frames"].shape == (36, 20, 80)
