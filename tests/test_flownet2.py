"""Pure-PyTorch FlowNet2: custom layers vs literal loops, official state-dict keys, checkpoint loading,
inference shapes, and the flownet2 backend of the flow pseudo-labels (random weights throughout)."""

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pseudolabels.flow import compute_shard, main
from pseudolabels.flownet2 import (
    ARCHS,
    ChannelNorm,
    CheckpointError,
    Correlation,
    FlowNet2S,
    Resample2d,
    WeightsNotFoundError,
    build_model,
    flownet2_flow,
    guess_arch,
    load_flownet2,
    normalize_arch,
)
from s3vae.data import atomic_h5, create_frames

KEYS_TSV = Path(__file__).resolve().parent / "fixtures/flownet2_keys.tsv"  # from flownet2-pytorch (fixtures/README.md)

# parameter counts of flownet2-pytorch's classes (spec table; FlowNet2's also in the repo's source comment)
PARAMS = {"FlowNet2": 162_518_834, "FlowNet2C": 39_175_298, "FlowNet2S": 38_676_506, "FlowNet2SD": 45_371_666,
          "FlowNet2CS": 77_870_620, "FlowNet2CSS": 116_565_942}
N_KEYS = {"FlowNet2": 220, "FlowNet2C": 48, "FlowNet2S": 42, "FlowNet2SD": 60, "FlowNet2CS": 90, "FlowNet2CSS": 132}
SUBNETS = {"flownetc": (39_175_298, 48), "flownets_1": (38_695_322, 42), "flownets_2": (38_695_322, 42),
           "flownets_d": (45_371_666, 60), "flownetfusion": (581_226, 28)}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def meta_model(arch):
    """The model's structure without allocating or initialising 160M parameters."""
    with torch.device("meta"):
        return build_model(arch)


def shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def small_model(cls=FlowNet2S, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


# ---------------------------------------------------------------------------------------------- layers


def naive_correlation(f1, f2, d, s):
    b, c, h, w = f1.shape
    r = d // s
    out = np.zeros((b, (2 * r + 1) ** 2, h, w))
    for bi in range(b):
        for j, dy in enumerate(range(-d, d + 1, s)):
            for i, dx in enumerate(range(-d, d + 1, s)):
                for y in range(h):
                    for x in range(w):
                        if 0 <= y + dy < h and 0 <= x + dx < w:
                            out[bi, j * (2 * r + 1) + i, y, x] = (f1[bi, :, y, x] * f2[bi, :, y + dy, x + dx]).sum() / c
    return out


@pytest.mark.parametrize("b,c,h,w,d,s", [(2, 4, 8, 8, 4, 2), (1, 3, 6, 5, 2, 1), (1, 2, 5, 6, 20, 2)])
def test_correlation_matches_a_literal_loop(b, c, h, w, d, s):
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)
    got = Correlation(d, s)(f1, f2)
    assert got.shape == (b, (2 * (d // s) + 1) ** 2, h, w)
    np.testing.assert_allclose(got.numpy(), naive_correlation(f1.double().numpy(), f2.double().numpy(), d, s),
                               atol=1e-5, rtol=0)


def test_correlation_default_is_441_channels_dy_outer_dx_inner():
    f1 = torch.zeros(1, 2, 24, 24)
    f2 = torch.zeros(1, 2, 24, 24)
    f1[0, :, 10, 10] = 1.0
    f2[0, :, 10 + 4, 10 - 6] = 3.0                    # dy = +4, dx = -6 -> channel (2+10)*21 + (-3+10)
    out = Correlation()(f1, f2)
    assert out.shape == (1, 441, 24, 24)
    assert out[0, 12 * 21 + 7, 10, 10] == pytest.approx(3.0)   # mean over the 2 channels of 1*3
    assert out.abs().sum() == pytest.approx(3.0)


def naive_resample(img, flow):
    b, c, h, w = img.shape
    out = np.zeros_like(img)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                xf, yf = x + flow[bi, 0, y, x], y + flow[bi, 1, y, x]
                x0, y0 = int(np.floor(xf)), int(np.floor(yf))
                a, bb = xf - x0, yf - y0
                xl, xr = min(max(x0, 0), w - 1), min(max(x0 + 1, 0), w - 1)
                yt, yb = min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)
                out[bi, :, y, x] = ((1 - a) * (1 - bb) * img[bi, :, yt, xl] + a * (1 - bb) * img[bi, :, yt, xr]
                                    + (1 - a) * bb * img[bi, :, yb, xl] + a * bb * img[bi, :, yb, xr])
    return out


def test_resample2d_matches_bilinear_loop_with_border_clamping():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(2, 3, 5, 7, generator=g)
    flow = torch.randn(2, 2, 5, 7, generator=g) * 4          # many samples fall outside the image
    got = Resample2d()(img, flow)
    np.testing.assert_allclose(got.numpy(), naive_resample(img.double().numpy(), flow.double().numpy()),
                               atol=1e-5, rtol=0)
    shift = torch.zeros(1, 2, 5, 7)
    shift[:, 0] = 1.0                                          # u = +1: out(y, x) = img(y, x + 1)
    np.testing.assert_allclose(Resample2d()(img[:1], shift)[0, :, :, :-1], img[0, :, :, 1:], atol=1e-6)


def test_channel_norm():
    t = torch.tensor([[[[3.0]], [[4.0]]]])
    assert ChannelNorm()(t).item() == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("arch", list(ARCHS))
def test_parameter_counts_without_the_key_file(arch):
    m = meta_model(arch)
    assert sum(p.numel() for p in m.parameters()) == PARAMS[arch]
    assert len(m.state_dict()) == N_KEYS[arch]
    assert not list(m.buffers())


def test_flownet2_subnetworks_and_flownets_upsampling_has_no_bias():
    m = meta_model("FlowNet2")
    assert [name for name, sub in m.named_children() if list(sub.parameters())] == list(SUBNETS)
    for name, (n_params, n_keys) in SUBNETS.items():
        sub = getattr(m, name)
        assert (sum(p.numel() for p in sub.parameters()), len(sub.state_dict())) == (n_params, n_keys)
    assert "flownets_1.upsampled_flow6_to_5.bias" not in m.state_dict()
    assert "flownetc.upsampled_flow6_to_5.bias" in m.state_dict()
    assert tuple(m.state_dict()["flownets_1.conv1.0.weight"].shape) == (64, 12, 7, 7)
    assert tuple(meta_model("FlowNet2S").state_dict()["conv1.0.weight"].shape) == (64, 6, 7, 7)


def test_state_dict_keys_and_shapes_equal_the_official_list():
    official: dict[str, list] = {}
    with open(KEYS_TSV) as f:
        assert f.readline().split() == ["model", "key", "shape"]
        for line in f:
            model, key, shape = line.rstrip("\n").split("\t")
            official.setdefault(model, []).append((key, tuple(int(x) for x in shape.split("x"))))
    assert set(official) == set(ARCHS)
    for arch in ARCHS:
        assert shapes(meta_model(arch)) == official[arch], arch   # names, order and shapes


def test_arch_names():
    assert normalize_arch("FlowNet2-C") == "FlowNet2C"
    assert normalize_arch("FlowNet2-CSS-ft-sd") == "FlowNet2CSS"
    assert normalize_arch("flownet2") == "FlowNet2"
    with pytest.raises(ValueError, match="unknown FlowNet2 arch"):
        normalize_arch("PWCNet")
    for arch in ARCHS:
        assert guess_arch(meta_model(arch).state_dict()) == arch


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def s_checkpoint(tmp_path_factory):
    """A random-weight FlowNet2-S checkpoint in the official layout."""
    torch.manual_seed(0)
    model = FlowNet2S().eval()
    path = tmp_path_factory.mktemp("ckpt") / "FlowNet2-S_checkpoint.pth.tar"
    torch.save({"epoch": 0, "state_dict": model.state_dict(), "best_EPE": 1e10}, path)
    return path, model


def pair_batch(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return a, np.roll(a, 2, axis=2)


def test_checkpoint_round_trip_is_strict_and_exact(s_checkpoint, tmp_path):
    path, model = s_checkpoint
    loaded = load_flownet2(path, "FlowNet2-S", device="cpu")
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    a, b = pair_batch(1)
    np.testing.assert_array_equal(flownet2_flow(loaded, a, b), flownet2_flow(model, a, b))
    # a bare state_dict with DataParallel's "module." prefix, in torch's legacy (non-zip) format, loads too
    bare = tmp_path / "bare.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, bare, _use_new_zipfile_serialization=False)
    assert torch.equal(load_flownet2(bare, "FlowNet2S", "cpu").conv1[0].weight, model.conv1[0].weight)


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_flownet2(tmp_path / "nope" / "FlowNet2_checkpoint.pth.tar")
    assert isinstance(e.value, WeightsNotFoundError)
    msg = str(e.value)
    for part in ("FlowNet2_checkpoint.pth.tar", "flownet2-pytorch", "Converted Caffe Pre-trained Models",
                 "pseudolabels.flow.checkpoint", "--checkpoint"):
        assert part in msg


def test_wrong_arch_or_garbage_gives_a_clear_error(s_checkpoint, tmp_path):
    path, _ = s_checkpoint
    with pytest.raises(CheckpointError,
                       match=r"FlowNet2-S_checkpoint\.pth\.tar.*arch FlowNet2C.*look like arch FlowNet2S"):
        load_flownet2(path, "FlowNet2C", "cpu")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth.tar"):
        load_flownet2(junk, "FlowNet2S", "cpu")


# ---------------------------------------------------------------------------------------------- inference


def test_flownet2_full_stack_forward_shape():
    torch.manual_seed(0)
    model = build_model("FlowNet2")
    a, b = pair_batch(1)
    flow = flownet2_flow(model, a, b)
    assert flow.shape == (1, 64, 64, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()
    assert model.training                                          # mode restored after inference


def test_flow_of_non_multiple_of_64_and_gray_frames():
    model = small_model()
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (3, 40, 72), dtype=np.uint8)
    flow = flownet2_flow(model, gray, np.roll(gray, 1, 2), batch_size=2)
    assert flow.shape == (3, 40, 72, 2) and np.isfinite(flow).all()
    rgb = np.repeat(gray[..., None], 3, -1)
    np.testing.assert_allclose(flownet2_flow(model, rgb, np.roll(rgb, 1, 2)), flow, atol=1e-4)
    # batching does not change the result
    np.testing.assert_allclose(flownet2_flow(model, gray, np.roll(gray, 1, 2), batch_size=3), flow, atol=1e-4)


class ConstantFlow(torch.nn.Module):
    """Records its input and returns the flow (u, v) = (1, 2) px everywhere."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(x.shape[0], 2, *x.shape[-2:])


def test_resize_to_multiple_of_64_and_flow_rescaling():
    model = ConstantFlow()
    a = np.zeros((3, 40, 72, 3), np.uint8)
    a[..., 0] = 200                                                # red: RGB order reaches the model
    flow = flownet2_flow(model, a, a, batch_size=2)
    assert [tuple(x.shape) for x in model.inputs] == [(2, 3, 2, 64, 128), (1, 3, 2, 64, 128)]
    assert model.inputs[0][:, 0].min() == 200 and model.inputs[0][:, 1:].max() == 0
    np.testing.assert_allclose(flow[..., 0], 72 / 128, rtol=1e-6)  # x scaled by W / W'
    np.testing.assert_allclose(flow[..., 1], 2 * 40 / 64, rtol=1e-6)  # y scaled by H / H'
    model.inputs.clear()
    b = np.zeros((3, 64, 128), np.uint8)                          # gray, multiples of 64: unchanged
    flow = flownet2_flow(model, b, b)
    assert flow.shape == (3, 64, 128, 2) and tuple(model.inputs[0].shape) == (3, 3, 2, 64, 128)
    np.testing.assert_array_equal(flow[..., 1], 2.0)


def test_train_mode_returns_the_raw_pyramid():
    model = small_model().train()
    x = torch.rand(1, 3, 2, 64, 64) * 255
    with torch.no_grad():
        flows = model(x)
        assert [tuple(f.shape[-2:]) for f in flows] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
        model.eval()
        upsampled = torch.nn.functional.interpolate(flows[0] * 20, scale_factor=4, mode="bilinear")
        np.testing.assert_allclose(model(x).numpy(), upsampled.numpy(), atol=1e-5)
        with pytest.raises(ValueError, match="divisible by 64"):
            model(torch.rand(1, 3, 2, 64, 97))


# ---------------------------------------------------------------------------------------------- pseudo-labels


def test_compute_shard_with_flownet2(s_checkpoint, tmp_path):
    path, _ = s_checkpoint
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    with atomic_h5(tmp_path / "c.h5") as f:
        create_frames(f, frames)
    n = compute_shard(tmp_path / "c.h5", tmp_path / "l.h5", grid=3, k=2, method="flownet2", checkpoint=path,
                      arch="FlowNet2S", device="cpu", batch_size=4)
    assert n == 3
    with h5py.File(tmp_path / "l.h5") as f:
        labels = f["flow_labels"][()]
        assert labels.shape == (3, 3, 2) and labels.dtype == np.int64
        assert ((labels >= 0) & (labels < 9)).all()
        assert f["flow_magnitude"].shape == (3, 3, 9)
        attrs = json.loads(f.attrs["params"])
    assert attrs["method"] == "flownet2" and attrs["arch"] == "FlowNet2S"
    assert attrs["checkpoint"] == str(path.resolve())
    assert attrs["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert attrs["checkpoint_bytes"] == path.stat().st_size
    # the CLI: same labels; a missing checkpoint is a clean error before anything is written
    main([str(tmp_path / "c.h5"), str(tmp_path / "l2.h5"), "--topk", "2", "--method", "flownet2",
          "--checkpoint", str(path), "--arch", "FlowNet2-S", "--device", "cpu", "--batch-size", "5"])
    with h5py.File(tmp_path / "l2.h5") as f:
        np.testing.assert_array_equal(f["flow_labels"][()], labels)
    with pytest.raises(SystemExit, match="Converted Caffe Pre-trained Models"):
        main([str(tmp_path / "c.h5"), str(tmp_path / "l3.h5"), "--method", "flownet2",
              "--checkpoint", str(tmp_path / "missing.pth.tar")])
    assert not (tmp_path / "l3.h5").exists()
    with pytest.raises(FileNotFoundError, match="pseudolabels.flow.checkpoint"):   # the config's unset value
        compute_shard(tmp_path / "c.h5", tmp_path / "l3.h5", method="flownet2", checkpoint="")
