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
