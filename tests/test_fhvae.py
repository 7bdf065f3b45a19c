"""FHVAE on tiny audio-like data: shapes, learning, seeded reruns, mu2 inferred for unseen sequences."""

import h5py
import numpy as np
import torch

from s3vae.comparisons.fhvae import FHVAE, FHVAEConfig, FHVAETrainConfig, load, train
from s3vae.evaluation.verification import speaker_verification

CFG = FHVAEConfig(audio_features=6, hidden=16, z_dim=4)


def tiny_segments(path, n_utt=12, per_utt=4, seed=0, first_id=0):
    """Segments (N, 5, 6): a speaker offset on every frame plus per-segment noise."""
    rng = np.random.default_rng(seed)
    speaker = np.arange(n_utt) % 3
    frames = rng.normal(0, 0.3, (n_utt * per_utt, 5, 6)).astype(np.float32)
    frames += np.repeat(np.eye(3, 6)[speaker] * 2, per_utt, 0)[:, None].astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames)
        f.create_dataset("labels/utterance", data=np.repeat(np.arange(n_utt) + first_id, per_utt))
        f.create_dataset("labels/speaker", data=np.repeat(speaker, per_utt))
    return str(path)


def test_shapes_and_a_finite_loss():
    m = FHVAE(FHVAEConfig(audio_features=6, hidden=16, z_dim=4, n_sequences=3))
    x = torch.randn(5, 7, 6)
    enc = m.encode(x)
    assert enc["zf_mu"].shape == (5, 4) and enc["zt_mu"].shape == (5, 1, 4)
    mu, logvar = m.decode(enc["z1_mu"], enc["z2_mu"], 7)
    assert mu.shape == logvar.shape == (5, 7, 6)
    loss, parts = m.loss(x, torch.tensor([0, 1, 2, 0, 1]), torch.full((5,), 2.0), alpha=10.0)
    assert torch.isfinite(loss) and set(parts) >= {"recon", "kl_z1", "kl_z2", "log_p_i"}


def test_mu2_of_an_unseen_sequence_is_the_map_estimate():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [2.0, 0.0]])
    assert torch.allclose(FHVAE.infer_mu2(z), z.sum(0) / 4)


def test_training_learns_and_reruns_reproduce_the_weights(tmp_path):
    shard = tiny_segments(tmp_path / "train_0.h5")
    tcfg = FHVAETrainConfig(epochs=6, batch_size=8, seed=2, device="cpu", threads=1)
    a = train([shard], tmp_path / "a.pt", tmp_path / "ck_a", CFG, tcfg, log=lambda m: None)
    b = train([shard], tmp_path / "b.pt", tmp_path / "ck_b", CFG, tcfg, log=lambda m: None)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    first, last = a["history"][0], a["history"][-1]
    assert last["loss"] < first["loss"] and last["log_p_i"] > first["log_p_i"]   # z2 finds its sequence
    assert a["config"]["n_sequences"] == 12                                    # one mu2 per training utterance


def test_verification_infers_unseen_sequences(tmp_path):
    tcfg = FHVAETrainConfig(epochs=8, batch_size=8, seed=0, device="cpu", threads=1)
    train([tiny_segments(tmp_path / "train_0.h5")], tmp_path / "m.pt", tmp_path / "ck", CFG, tcfg, log=lambda m: None)
    model = load(tmp_path / "m.pt")
    test = tiny_segments(tmp_path / "test_0.h5", n_utt=9, seed=1, first_id=500)   # ids the mu2 table never saw
    res = speaker_verification(model, [test])
    assert res["n_utterances"] == 9 and res["dim_static"] == 4
    assert 0 <= res["eer_static"] <= 1 and 0 <= res["eer_dynamic"] <= 1
