"""FlowNet2 in pure PyTorch, state-dict compatible with NVIDIA's flownet2-pytorch checkpoints.

FlowNet 2.0 (Ilg, Mayer, Saikia, Keuper, Dosovitskiy & Brox, "FlowNet 2.0: Evolution of Optical Flow
Estimation with Deep Networks", CVPR 2017) is the flow network the S3VAE paper uses for its motion
pseudo-labels. It stacks encoder-decoder networks, each refining the previous estimate:

* **FlowNetC** -- a siamese encoder (conv1..conv3, weights shared by both frames) whose 1/8-resolution
  features are compared by a *correlation* layer (441 = 21x21 displacements, stride 2, up to 20 feature
  pixels), followed by a single-stream encoder to 1/64 and a decoder that predicts flow at 1/64..1/4.
* **FlowNetS** (x2) -- a single-stream encoder-decoder fed [image 1, image 2, image 2 warped by the
  current flow, current flow / 20, brightness error] (12 channels; 6 for the standalone FlowNet2-S).
* **FlowNetSD** -- a FlowNetS variant with 3x3 convs and extra ``inter_conv`` layers, for small
  displacements, fed the two plain images.
* **FlowNetFusion** -- a small network that fuses the large-displacement (S2) and small-displacement
  (SD) estimates, given their magnitudes and warping errors, into a full-resolution flow.

Each sub-network predicts flow / 20 (``div_flow``) at 1/4 resolution; the wrappers multiply by 20 and
upsample x4 (no extra x4 on the vectors: they are already in full-resolution pixels). The SD output is
*divided* by 20 before the fusion stage -- a quirk of the original Caffe model that the released weights
depend on, kept here on purpose (see ``FlowNet2.forward``).

The three CUDA extensions of flownet2-pytorch are replaced by tensor operations:
:class:`Correlation` (one batched matmul per vertical offset; mean over channels), :class:`Resample2d`
(``F.grid_sample``, bilinear, border padding, ``align_corners=True``) and :class:`ChannelNorm` (L2 norm
over channels). Module and parameter names follow flownet2-pytorch exactly (conv blocks are
``Sequential(Conv2d, LeakyReLU(0.1))``, hence keys like ``conv1.0.weight``), so the converted Caffe
checkpoints (``FlowNet2_checkpoint.pth.tar`` etc.) load with ``strict=True``; no code of that
repository is used.

Weights: NVIDIA flownet2-pytorch README, section "Converted Caffe Pre-trained Models"
(https://github.com/NVIDIA/flownet2-pytorch). They are conversions of the Freiburg Caffe models
(lmb-freiburg/flownet2), released for **research purposes only** (commercial use needs the authors'
consent); flownet2-pytorch's Apache-2.0 licence covers its code, not the weights. They are not
bundled here. Cite Ilg et al. (CVPR 2017) when using them.

Inputs: the wrappers take a float tensor (B, 3, 2, H, W) -- RGB, frame index, height, width -- in
0..255, with H and W multiples of 64; they subtract the per-sample, per-channel mean over both frames
and divide by 255. :func:`flownet2_flow` does all of this from uint8 frames of any size.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s3vae.utils import CheckpointError as UnloadableCheckpoint
from s3vae.utils import load_weights_only, pick_device

__all__ = [
    "ARCHS", "ChannelNorm", "CheckpointError", "Correlation", "FlowNet2", "FlowNet2C", "FlowNet2CS",
    "FlowNet2CSS", "FlowNet2S", "FlowNet2SD", "FlowNetC", "FlowNetFusion", "FlowNetS", "FlowNetSD",
    "Resample2d", "WEIGHTS_HELP", "WeightsNotFoundError", "build_model", "flownet2_flow", "guess_arch",
    "load_flownet2", "normalize_arch",
]

DIV_FLOW = 20.0
RGB_MAX = 255.0

WEIGHTS_HELP = ("Download the converted Caffe weights from the NVIDIA flownet2-pytorch README, section "
                "\"Converted Caffe Pre-trained Models\" (https://github.com/NVIDIA/flownet2-pytorch; "
                "research use only), e.g. FlowNet2_checkpoint.pth.tar for arch FlowNet2, and set its path "
                "with the config key pseudolabels.flow.checkpoint (with pseudolabels.flow.arch) or the CLI "
                "flag --checkpoint (with --arch) of `python -m pseudolabels.flow`.")


class WeightsNotFoundError(FileNotFoundError):
    """The FlowNet2 checkpoint file does not exist (the message says where to get it)."""


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit the requested architecture (message names the file)."""


# ----------------------------------------------------------------------------------------------------
# parameter-free layers (the CUDA extensions of flownet2-pytorch)


class Correlation(nn.Module):
    """FlowNetC's correlation layer (kernel_size 1, stride1 1, pad_size = max_displacement).

    ``out[b, (dy/s + r) * (2r+1) + (dx/s + r), y, x] = mean_c f1[b, c, y, x] * f2[b, c, y+dy, x+dx]`` for
    dy, dx in {-d, -d+s, ..., d} (d = max_displacement, s = stride2, r = d // s), with f2 zero outside the
    image: (2r+1)^2 channels, vertical offset outer, horizontal inner; output H x W equal to the input's.
    """

    def __init__(self, max_displacement: int = 20, stride2: int = 2):
        super().__init__()
        if max_displacement % stride2:
            raise ValueError("max_displacement must be a multiple of stride2")
        self.max_displacement, self.stride2 = max_displacement, stride2
        self.radius = max_displacement // stride2

    @property
    def out_channels(self) -> int:
        return (2 * self.radius + 1) ** 2

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f1.shape
        d, s, k = self.max_displacement, self.stride2, 2 * self.radius + 1
        wp = w + 2 * d
        # f2 zero-padded, laid out (B, H + 2d, C, W + 2d) so that a band of rows is a (B*H, C, W+2d) view
        f2p = F.pad(f2, (d, d, d, d)).permute(0, 2, 1, 3).contiguous()
        a = f1.permute(0, 2, 3, 1).reshape(b * h, w, c)                      # (B*H, W, C)
        rows = []
        for dy in range(-d, d + 1, s):                                       # one row of displacements
            strip = f2p[:, d + dy:d + dy + h].reshape(b * h, c, wp)
            m = torch.bmm(a, strip)                                          # m[n, x, x'] = <f1(x), f2p(x')>
            # the band x' = x + s*j (j = 0..k-1, i.e. dx = s*j - d) as a strided view
            rows.append(m.as_strided((b * h, w, k), (w * wp, wp + 1, s), m.storage_offset()))
        out = torch.stack(rows, 2)                                           # (B*H, W, k_dy, k_dx)
        return out.reshape(b, h, w, k * k).permute(0, 3, 1, 2) / c


class Resample2d(nn.Module):
    """Backward warp: ``out(y, x) = img(y + v, x + u)`` bilinearly, corner indices clamped to the image.

    ``flow`` is (B, 2, H, W) in pixels, channel 0 = u (x), channel 1 = v (y).
    """

    def forward(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        _, _, h, w = img.shape
        ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
        xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
        gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
        gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
        grid = torch.stack((gx, gy), -1)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


class ChannelNorm(nn.Module):
    """Per-pixel L2 norm over channels, (B, C, H, W) -> (B, 1, H, W) (no epsilon)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.pow(2).sum(1, keepdim=True).sqrt()


# ----------------------------------------------------------------------------------------------------
# building blocks (names and nesting fix the state-dict keys)


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=True), nn.LeakyReLU(0.1))


def deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True), nn.LeakyReLU(0.1))


def inter_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=True))


def predict_flow(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 2, 3, 1, 1, bias=True)


def upsample_flow(bias: bool) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=bias)


def _upsample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """nn.Upsample(scale_factor=4, mode=...) as in flownet2-pytorch (align_corners=False)."""
    if mode == "bilinear":
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    return F.interpolate(x, scale_factor=4, mode="nearest")


class _Decoder(nn.Module):
    """The FlowNetC/S decoder (deconv5..2, predict_flow6..2, upsampled_flow6_to_5..3_to_2).

    Subclasses define the encoder modules first so that the key order matches flownet2-pytorch.
    """

    def _make_decoder(self, up_bias: bool) -> None:
        self.deconv5 = deconv(1024, 512)
        self.deconv4 = deconv(1026, 256)
        self.deconv3 = deconv(770, 128)
        self.deconv2 = deconv(386, 64)
        self.predict_flow6 = predict_flow(1024)
        self.predict_flow5 = predict_flow(1026)
        self.predict_flow4 = predict_flow(770)
        self.predict_flow3 = predict_flow(386)
        self.predict_flow2 = predict_flow(194)
        self.upsampled_flow6_to_5 = upsample_flow(up_bias)
        self.upsampled_flow5_to_4 = upsample_flow(up_bias)
        self.upsampled_flow4_to_3 = upsample_flow(up_bias)
        self.upsampled_flow3_to_2 = upsample_flow(up_bias)

    def _decode(self, c2, c3, c4, c5, c6):
        flow6 = self.predict_flow6(c6)
        concat5 = torch.cat((c5, self.deconv5(c6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(concat5)
        concat4 = torch.cat((c4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat((c3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat((c2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        flow2 = self.predict_flow2(concat2)
        return flow2, flow3, flow4, flow5, flow6


class FlowNetC(_Decoder):
    """Correlation network: (B, 6, H, W) normalised [img1, img2] -> (flow2, ..., flow6), flow / 20."""

    def __init__(self):
        super().__init__()
        self.conv1 = conv(3, 64, 7, 2)
        self.conv2 = conv(64, 128, 5, 2)
        self.conv3 = conv(128, 256, 5, 2)
        self.conv_redir = conv(256, 32, 1, 1)
        self.corr = Correlation(20, 2)
        self.corr_activation = nn.LeakyReLU(0.1)
        self.conv3_1 = conv(32 + self.corr.out_channels, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self._make_decoder(up_bias=True)

    def forward_flows(self, x: torch.Tensor):
        n = x.shape[0]
        # siamese conv1..conv3 with shared weights: run both images as one batch
        c1 = self.conv1(torch.cat((x[:, :3], x[:, 3:]), 0))
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c2a, c3a, c3b = c2[:n], c3[:n], c3[n:]
        corr = self.corr_activation(self.corr(c3a, c3b))
        c3_1 = self.conv3_1(torch.cat((self.conv_redir(c3a), corr), 1))
        c4 = self.conv4_1(self.conv4(c3_1))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        return self._decode(c2a, c3_1, c4, c5, c6)


class FlowNetS(_Decoder):
    """Single-stream network: (B, 6 or 12, H, W) -> (flow2, ..., flow6), flow / 20 (upsampled_flow: no bias)."""

    def __init__(self, input_channels: int = 12):
        super().__init__()
        self.conv1 = conv(input_channels, 64, 7, 2)
        self.conv2 = conv(64, 128, 5, 2)
        self.conv3 = conv(128, 256, 5, 2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self._make_decoder(up_bias=False)

    def forward_flows(self, x: torch.Tensor):
        c2 = self.conv2(self.conv1(x))
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        return self._decode(c2, c3, c4, c5, c6)


class FlowNetSD(nn.Module):
    """Small-displacement network: (B, 6, H, W) -> (flow2, ..., flow6), flow / 20."""

    def __init__(self):
        super().__init__()
        self.conv0 = conv(6, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.conv3 = conv(128, 256, stride=2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self.deconv5 = deconv(1024, 512)
        self.deconv4 = deconv(1026, 256)
        self.deconv3 = deconv(770, 128)
        self.deconv2 = deconv(386, 64)
        self.inter_conv5 = inter_conv(1026, 512)
        self.inter_conv4 = inter_conv(770, 256)
        self.inter_conv3 = inter_conv(386, 128)
        self.inter_conv2 = inter_conv(194, 64)
        self.predict_flow6 = predict_flow(1024)
        self.predict_flow5 = predict_flow(512)
        self.predict_flow4 = predict_flow(256)
        self.predict_flow3 = predict_flow(128)
        self.predict_flow2 = predict_flow(64)
        self.upsampled_flow6_to_5 = upsample_flow(True)
        self.upsampled_flow5_to_4 = upsample_flow(True)
        self.upsampled_flow4_to_3 = upsample_flow(True)
        self.upsampled_flow3_to_2 = upsample_flow(True)

    def forward_flows(self, x: torch.Tensor):
        c0 = self.conv0(x)
        c1 = self.conv1_1(self.conv1(c0))
        c2 = self.conv2_1(self.conv2(c1))
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        flow6 = self.predict_flow6(c6)
        concat5 = torch.cat((c5, self.deconv5(c6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(self.inter_conv5(concat5))
        concat4 = torch.cat((c4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(self.inter_conv4(concat4))
        concat3 = torch.cat((c3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(self.inter_conv3(concat3))
        concat2 = torch.cat((c2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        flow2 = self.predict_flow2(self.inter_conv2(concat2))
        return flow2, flow3, flow4, flow5, flow6


class FlowNetFusion(nn.Module):
    """Fusion network: (B, 11, H, W) -> full-resolution flow (B, 2, H, W) in pixels."""

    def __init__(self):
        super().__init__()
        self.conv0 = conv(11, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.deconv1 = deconv(128, 32)
        self.deconv0 = deconv(162, 16)
        self.inter_conv1 = inter_conv(162, 32)
        self.inter_conv0 = inter_conv(82, 16)
        self.predict_flow2 = predict_flow(128)
        self.predict_flow1 = predict_flow(32)
        self.predict_flow0 = predict_flow(16)
        self.upsampled_flow2_to_1 = upsample_flow(True)
        self.upsampled_flow1_to_0 = upsample_flow(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        c1 = self.conv1_1(self.conv1(c0))
        c2 = self.conv2_1(self.conv2(c1))
        flow2 = self.predict_flow2(c2)
        concat1 = torch.cat((c1, self.deconv1(c2), self.upsampled_flow2_to_1(flow2)), 1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat((c0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), 1)
        return self.predict_flow0(self.inter_conv0(concat0))


# ----------------------------------------------------------------------------------------------------
# the flownet2-pytorch model classes (what the checkpoints hold)


def normalize_input(inputs: torch.Tensor, rgb_max: float = RGB_MAX) -> torch.Tensor:
    """(B, 3, 2, H, W) in 0..rgb_max -> (B, 6, H, W) [img1 RGB, img2 RGB], per-sample per-channel mean
    over both frames subtracted, divided by rgb_max."""
    if inputs.ndim != 5 or inputs.shape[1] != 3 or inputs.shape[2] != 2:
        raise ValueError(f"expected input (B, 3, 2, H, W), got {tuple(inputs.shape)}")
    h, w = inputs.shape[-2:]
    if h % 64 or w % 64:
        raise ValueError(f"FlowNet2 needs H and W divisible by 64, got {h}x{w} (flownet2_flow resizes)")
    mean = inputs.reshape(inputs.shape[0], 3, -1).mean(-1).view(-1, 3, 1, 1, 1)
    x = (inputs - mean) / rgb_max
    return torch.cat((x[:, :, 0], x[:, :, 1]), 1)


class FlowNet2C(FlowNetC):
    """Standalone FlowNet2-C. Eval: (B, 2, H, W) flow in pixels; train: raw (flow2, ..., flow6)."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow

    def forward(self, inputs: torch.Tensor):
        flows = self.forward_flows(normalize_input(inputs, self.rgb_max))
        return flows if self.training else _upsample(flows[0] * self.div_flow, "bilinear")


class FlowNet2S(FlowNetS):
    """Standalone FlowNet2-S (6 input channels). Eval: (B, 2, H, W) in pixels; train: raw flows."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__(input_channels=6)
        self.rgb_max, self.div_flow = rgb_max, div_flow

    def forward(self, inputs: torch.Tensor):
        flows = self.forward_flows(normalize_input(inputs, self.rgb_max))
        return flows if self.training else _upsample(flows[0] * self.div_flow, "bilinear")


class FlowNet2SD(FlowNetSD):
    """Standalone FlowNet2-SD. Eval: (B, 2, H, W) in pixels; train: raw flows."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow

    def forward(self, inputs: torch.Tensor):
        flows = self.forward_flows(normalize_input(inputs, self.rgb_max))
        return flows if self.training else _upsample(flows[0] * self.div_flow, "bilinear")


class _Stack(nn.Module):
    """Shared pieces of the stacked models: warping, error images, the S refinement step."""

    def __init__(self, rgb_max: float, div_flow: float):
        super().__init__()
        self.rgb_max, self.div_flow = rgb_max, div_flow
        self.channelnorm = ChannelNorm()
        self.resample = Resample2d()

    def _refine_input(self, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """[x1, x2, warp(x2, flow), flow / div_flow, |x1 - warp(x2, flow)|]: the 12-channel S input."""
        x1, x2 = x[:, :3], x[:, 3:]
        warped = self.resample(x2, flow)
        return torch.cat((x, warped, flow / self.div_flow, self.channelnorm(x1 - warped)), 1)

    def _c_s1(self, x: torch.Tensor) -> torch.Tensor:
        flow_c = _upsample(self.flownetc.forward_flows(x)[0] * self.div_flow, "bilinear")
        return _upsample(self.flownets_1.forward_flows(self._refine_input(x, flow_c))[0] * self.div_flow,
                         "bilinear")


class FlowNet2CS(_Stack):
    """FlowNetC then one FlowNetS: (B, 2, H, W) in pixels (bilinear x4 of S1's flow2 * 20)."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__(rgb_max, div_flow)
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS(12)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._c_s1(normalize_input(inputs, self.rgb_max))


class FlowNet2CSS(_Stack):
    """FlowNetC, FlowNetS, FlowNetS (also FlowNet2-CSS-ft-sd): (B, 2, H, W) in pixels (nearest x4)."""

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__(rgb_max, div_flow)
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS(12)
        self.flownets_2 = FlowNetS(12)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = normalize_input(inputs, self.rgb_max)
        flow_s1 = self._c_s1(x)
        return _upsample(self.flownets_2.forward_flows(self._refine_input(x, flow_s1))[0] * self.div_flow,
                         "nearest")


class FlowNet2(_Stack):
    """The full FlowNet2 stack: C -> S1 -> S2 (large displacements) and SD (small), fused.

    Returns (B, 2, H, W) flow in pixels, (u, v), from image 1 to image 2, in train and eval mode.
    """

    def __init__(self, rgb_max: float = RGB_MAX, div_flow: float = DIV_FLOW):
        super().__init__(rgb_max, div_flow)
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS(12)
        self.flownets_2 = FlowNetS(12)
        self.flownets_d = FlowNetSD()
        self.flownetfusion = FlowNetFusion()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = normalize_input(inputs, self.rgb_max)
        x1, x2 = x[:, :3], x[:, 3:]
        flow_s1 = self._c_s1(x)                                                   # C, S1 (bilinear x4)
        flow_s2 = _upsample(self.flownets_2.forward_flows(self._refine_input(x, flow_s1))[0] * self.div_flow,
                            "nearest")
        # SD: flow2 / div_flow (not *): the Caffe model's convention, which the released weights expect
        flow_sd = _upsample(self.flownets_d.forward_flows(x)[0] / self.div_flow, "nearest")
        err_sd = self.channelnorm(x1 - self.resample(x2, flow_sd))
        err_s2 = self.channelnorm(x1 - self.resample(x2, flow_s2))
        fusion_in = torch.cat((x1, flow_sd, flow_s2, self.channelnorm(flow_sd), self.channelnorm(flow_s2),
                               err_sd, err_s2), 1)
        return self.flownetfusion(fusion_in)


ARCHS: dict[str, type[nn.Module]] = {
    "FlowNet2": FlowNet2, "FlowNet2C": FlowNet2C, "FlowNet2S": FlowNet2S, "FlowNet2SD": FlowNet2SD,
    "FlowNet2CS": FlowNet2CS, "FlowNet2CSS": FlowNet2CSS,
}


def normalize_arch(arch: str) -> str:
    """Class name of an arch: accepts 'FlowNet2', 'FlowNet2-C', 'FlowNet2CSS-ft-sd' (-> FlowNet2CSS), ..."""
    name = arch.strip()
    if name.lower().replace("-", "").replace("_", "").endswith("ftsd"):
        name = name[: -len("-ft-sd")]
    name = name.replace("-", "")
    for key in ARCHS:
        if key.lower() == name.lower():
            return key
    raise ValueError(f"unknown FlowNet2 arch {arch!r}; choose from {sorted(ARCHS)}")


def build_model(arch: str = "FlowNet2") -> nn.Module:
    return ARCHS[normalize_arch(arch)]()


def guess_arch(state_dict: dict) -> str | None:
    """Which flownet2-pytorch class a state_dict belongs to, from its keys (None if unrecognised)."""
    keys = set(state_dict)
    if any(k.startswith("flownetfusion.") for k in keys):
        return "FlowNet2"
    if any(k.startswith("flownets_2.") for k in keys):
        return "FlowNet2CSS"
    if any(k.startswith("flownets_1.") for k in keys):
        return "FlowNet2CS"
    if "conv_redir.0.weight" in keys:
        return "FlowNet2C"
    if "inter_conv2.0.weight" in keys:
        return "FlowNet2SD"
    if "conv1.0.weight" in keys:
        return "FlowNet2S"
    return None


def load_flownet2(path: str | os.PathLike, arch: str = "FlowNet2", device: str | torch.device = "auto"
                  ) -> nn.Module:
    """A flownet2-pytorch model of class ``arch`` with the weights of ``path``, in eval mode on ``device``.

    ``path`` is an official checkpoint (``torch.save({'epoch', 'state_dict', 'best_EPE'[, 'arch']})``,
    named ``*.pth.tar`` but not a tar archive) or a bare state_dict; a ``module.`` prefix (DataParallel)
    is stripped. Loaded with ``weights_only=True`` and ``strict=True``. A missing file raises
    :class:`WeightsNotFoundError` (a FileNotFoundError) saying where to get the weights; an unreadable file
    or one of another architecture raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    name = normalize_arch(arch)
    if not path.is_file():
        raise WeightsNotFoundError(f"FlowNet2 checkpoint {str(path)!r} (arch {name}) does not exist. "
                                   + WEIGHTS_HELP)
    try:
        ckpt = load_weights_only(path, "cpu")
    except UnloadableCheckpoint as e:  # refused (pickled objects) or damaged: the message names the file
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- any unpickling/format error: report the file
        raise CheckpointError(f"{path}: not a readable FlowNet2 checkpoint ({type(e).__name__}: {e})") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict with 'state_dict' (flownet2-pytorch layout) or a "
                              f"bare state_dict of tensors, got {type(ckpt).__name__}")
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())
    model = ARCHS[name]()
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        guess = guess_arch(state)
        hint = f"; its keys look like arch {guess}" if guess and guess != name else ""
        parts = [f"{len(v)} {what} (e.g. {', '.join(v[:3])})" for what, v in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if v]
        raise CheckpointError(f"{path}: does not fit arch {name}: {'; '.join(parts)}{hint}")
    model.load_state_dict(state, strict=True)
    return model.to(pick_device(device)).eval()


# ----------------------------------------------------------------------------------------------------
# inference on uint8 frames


def _as_rgb_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C in {1, 3}) or (N, H, W) -> float (N, 3, H, W) in 0..255 (gray replicated)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {frames.shape}")
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t


def flownet2_flow(model: nn.Module, frames_a: np.ndarray, frames_b: np.ndarray,
                  batch_size: int | None = None) -> np.ndarray:
    """Dense flow (N, H, W, 2) float32, (dx, dy) in pixels of the given frames, from ``frames_a`` to ``frames_b``.

    ``frames_*``: uint8 RGB (N, H, W, 3) or gray (N, H, W[, 1]; replicated to 3 channels). Sizes that are
    not multiples of 64 are **resized up** (bilinear) to the next multiple of 64 (at least 64); the
    flow is resized back (bilinear) and its x/y components scaled by W/W' and H/H'. Pairs run in
    batches of ``batch_size`` (all at once if None) on the model's device, under ``torch.no_grad`` and in
    eval mode (the model's mode is restored afterwards).
    """
    if np.shape(frames_a) != np.shape(frames_b):
        raise ValueError(f"frame batches differ in shape: {np.shape(frames_a)} vs {np.shape(frames_b)}")
    n = len(frames_a)
    h, w = np.shape(frames_a)[1:3]
    hp, wp = max(64, math.ceil(h / 64) * 64), max(64, math.ceil(w / 64) * 64)
    device = next(model.parameters()).device
    out = np.empty((n, h, w, 2), np.float32)
    step = max(1, batch_size or n or 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, n, step):
                a = _as_rgb_tensor(frames_a[i:i + step], device)
                b = _as_rgb_tensor(frames_b[i:i + step], device)
                pair = torch.stack((a, b), 2)                              # (B, 3, 2, H, W)
                if (hp, wp) != (h, w):
                    pair = F.interpolate(pair.flatten(1, 2), size=(hp, wp), mode="bilinear",
                                         align_corners=False).unflatten(1, (3, 2))
                flow = model(pair)
                if (hp, wp) != (h, w):
                    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                    flow = flow * torch.tensor([w / wp, h / hp], dtype=flow.dtype,
                                               device=flow.device).view(1, 2, 1, 1)
                out[i:i + step] = flow.permute(0, 2, 3, 1).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
