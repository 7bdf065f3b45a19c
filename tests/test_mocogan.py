"""MoCoGAN on tiny data: shapes, what each discriminator sees, learning, seeded reruns, evaluation."""

import numpy as np
import torch
from conftest import labelled_clip_shard

from s3vae.comparisons.mocogan import (
    MoCoGAN,
    MoCoGANConfig,
    MoCoGANTrainConfig,
    discriminator_loss,
    evaluate,
    load,
    train,
)

CFG = MoCoGANConfig(channels=3, image_size=16, frames=4, labels={"action": 3, "skin": 2}, d_content=6,
                    d_noise=4, d_motion=4, gen_widths=[16, 8], disc_widths=[8, 16])



def test_generator_and_discriminator_shapes():
    m = MoCoGAN(CFG)
    labels = {"action": torch.tensor([0, 2]), "skin": torch.tensor([1, 0])}
    x = m.generate(labels, 2).detach()
    assert x.shape == (2, 4, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert m.generate(labels, 2, T=7).shape[1] == 7                  # any T_sample
    assert m.d_image(x[:, 0]).shape == (2,)
    logit, cats = m.d_video(x)
    assert logit.shape == (2,) and cats["action"].shape == (2, 3) and cats["skin"].shape == (2, 2)


def test_content_is_fixed_per_clip_and_motion_varies():
    torch.manual_seed(0)
    m = MoCoGAN(CFG).eval()
    x = m.generate({"action": torch.tensor([1]), "skin": torch.tensor([0])}, 1, T=6)
    assert (x[0, 1:] - x[0, :-1]).abs().sum() > 0                     # frames differ: z_M(t) moves


def test_d_image_sees_frames_and_d_video_sees_clips():
    m = MoCoGAN(CFG)
    seen = {}

    def record(name):
        def hook(module, inp, out):
            seen.setdefault(name, inp[0].shape)
        return hook

    m.d_image.net[0].register_forward_hook(record("image"))
    m.d_video.net[0].register_forward_hook(record("video"))
    labels = {"action": torch.tensor([0, 1, 2]), "skin": torch.tensor([0, 1, 0])}
    real = torch.rand(3, 4, 3, 16, 16)
    discriminator_loss(m, real, m.generate(labels, 3).detach(), labels, torch.zeros(3, dtype=torch.long), 1.0)
    assert seen["image"] == (3, 3, 16, 16)                            # single frames
    assert seen["video"] == (3, 3, 4, 16, 16)                         # whole clips (B, C, T, H, W)


def test_discriminator_steps_lower_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = MoCoGAN(CFG)
    labels = {"action": torch.tensor([0, 1, 2, 0]), "skin": torch.tensor([0, 1, 0, 1])}
    real = torch.rand(4, 4, 3, 16, 16)
    fake = m.generate(labels, 4).detach()
    pick = torch.zeros(4, dtype=torch.long)
    opt = torch.optim.Adam([*m.d_image.parameters(), *m.d_video.parameters()], lr=2e-3)
    first = discriminator_loss(m, real, fake, labels, pick, 1.0).item()
    for _ in range(10):
        loss = discriminator_loss(m, real, fake, labels, pick, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert discriminator_loss(m, real, fake, labels, pick, 1.0).item() < 0.5 * first


def test_seeded_training_reproduces_weights_and_resumes(tmp_path):
    shard = labelled_clip_shard(tmp_path / "train_0.h5")
    tcfg = MoCoGANTrainConfig(epochs=1, batch_size=8, seed=3, device="cpu", threads=1)
    a = train([shard], tmp_path / "a.pt", tmp_path / "ck_a", CFG, tcfg, log=lambda m: None)
    b = train([shard], tmp_path / "b.pt", tmp_path / "ck_b", CFG, tcfg, log=lambda m: None)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len(a["history"]) == 1 and np.isfinite(a["history"][0]["d_loss"])
    more = MoCoGANTrainConfig(epochs=2, batch_size=8, seed=3, device="cpu", threads=1)
    logs = []
    c = train([shard], tmp_path / "c.pt", tmp_path / "ck_a", CFG, more, log=logs.append)
    assert any("resumed" in m for m in logs) and len(c["history"]) == 2


def test_evaluation_scores_generated_clips_against_their_labels(tmp_path):
    shard = labelled_clip_shard(tmp_path / "test_0.h5", n=12, seed=1)
    tcfg = MoCoGANTrainConfig(epochs=1, batch_size=8, seed=0, device="cpu", threads=1)
    train([labelled_clip_shard(tmp_path / "train_0.h5")], tmp_path / "m.pt", tmp_path / "ck", CFG, tcfg,
          log=lambda m: None)
    model = load(tmp_path / "m.pt")

    def oracle(x):  # a judge that reads the colour (skin) and says "action 0" always
        skin = (x[:, :, 0].mean((1, 2, 3)) > 0.4).long()
        return {"skin": torch.nn.functional.one_hot(skin, 2).float() * 10,
                "action": torch.zeros(len(x), 3).index_fill_(1, torch.tensor([0]), 10.0)}

    res = evaluate(model, oracle, [shard], ["skin"], ["action"], batch_size=5)
    assert set(res) == {"per_label", "n_test", "static", "dynamic"} and res["n_test"] == 12
    assert 0 <= res["static"]["acc"] <= 1
    assert res["dynamic"]["IS"] == 1.0 or abs(res["dynamic"]["IS"] - 1.0) < 1e-6   # one class for every clip
