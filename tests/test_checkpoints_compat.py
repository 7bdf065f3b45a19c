"""Trained models stay loadable: checkpoints hold plain dicts (weights, configs), never pickled classes,
so files written before the package was regrouped (fixtures from commit 48126bc) load with
``weights_only=True`` and compute what they computed then."""

from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def test_s3vae_checkpoint_from_before_the_move_loads_and_encodes_the_same():
    from s3vae.train import load_model

    model = load_model(FIXTURES / "premove_s3vae.pt")
    io = torch.load(FIXTURES / "premove_s3vae.pt", weights_only=True)["io"]
    with torch.no_grad():
        assert torch.allclose(model.encode(io["x"])["zf_mu"], io["zf_mu"], atol=1e-6)
        # the judge of the same commit, now in s3vae.evaluation.judge
        from s3vae.evaluation.judge import load_judge

        judge = load_judge(FIXTURES / "premove_judge.pt")
        assert torch.allclose(judge(io["x"])["a"], io["judge_a"], atol=1e-6)


def test_comparison_system_checkpoint_from_before_the_move_loads():
    from s3vae.comparisons.fhvae import FHVAE, FHVAEConfig
    from s3vae.utils import load_trained

    model = load_trained(FIXTURES / "premove_fhvae.pt", FHVAE, FHVAEConfig)
    assert not model.training and model.cfg.n_sequences == 3


def test_an_audio_model_written_before_the_renames_loads(tmp_path):
    """``feat_in`` became ``audio_features``, and the audio MLP width left ``dec_widths[0]`` for ``audio_width``:
    a model file with the old names loads and computes the same."""
    import dataclasses

    from s3vae.model import S3VAE, S3VAEConfig
    from s3vae.train import load_model

    cfg = S3VAEConfig(modality="audio", audio_features=6, audio_width=12, feat_dim=8, hidden=8, z_f=4, z_t=4)
    model = S3VAE(cfg).eval()
    old = dataclasses.asdict(cfg)
    old["feat_in"] = old.pop("audio_features")
    old.pop("audio_width")
    old["dec_widths"] = [12]
    torch.save({"model": model.state_dict(), "model_config": old}, tmp_path / "old.pt")
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "old.pt").encode(x)["zf_mu"], model.encode(x)["zf_mu"])
