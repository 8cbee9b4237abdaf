"""Blocks shared by the video re-id baselines NVAN and MGH.

* :class:`NonLocalBlock`: the embedded-Gaussian non-local block of Wang et al. (CVPR 2018)
  over a [N, C, T, H, W] volume, as both official codes write it: theta/phi/g are 1x1x1
  convolutions to C/2 channels, attention = softmax(theta^T phi) over all positions, output
  W(y) + x where W is a 1x1x1 convolution followed by BatchNorm whose scale and shift start at
  0 (the block starts as the identity). ``sub_sample`` max-pools phi and g by 2x2 in space.
  With T = 1 it is the per-frame (2D) block MGH's code uses.
* :class:`StripeNonLocalBlock`: STE-NVAN's spatially efficient variant: the feature map is
  mean-pooled into horizontal stripes, the non-local operation runs over the T x stripes
  nodes, and each stripe's response is added back to every position of the stripe.
* :class:`BNNeck`: BatchNorm1d with a frozen zero shift in front of the ID classifier (Luo et
  al., "Bag of Tricks", 2019), used by both methods' official code.
* :func:`frames_to_volume` / :func:`volume_to_frames`: [N*g, C, H, W] <-> [N, C, g, H, W].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def frames_to_volume(x: Tensor, group: int) -> Tensor:
    """[N * group, C, H, W] (frame-major within each clip) -> [N, C, group, H, W]."""
    nt, c, h, w = x.shape
    return x.view(nt // group, group, c, h, w).transpose(1, 2)


def volume_to_frames(x: Tensor) -> Tensor:
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def _zero_bn(channels: int) -> nn.BatchNorm3d:
    bn = nn.BatchNorm3d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over [N, C, T, H, W] with a residual connection."""

    def __init__(self, channels: int, sub_sample: bool = False) -> None:
        super().__init__()
        inter = max(1, channels // 2)
        self.inter = inter
        self.theta = nn.Conv3d(channels, inter, 1)
        self.phi = nn.Conv3d(channels, inter, 1)
        self.g = nn.Conv3d(channels, inter, 1)
        self.pool = nn.MaxPool3d((1, 2, 2)) if sub_sample else nn.Identity()
        self.W = nn.Sequential(nn.Conv3d(inter, channels, 1), _zero_bn(channels))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [N, L, Ci]
        phi = self.pool(self.phi(x)).flatten(2)  # [N, Ci, L']
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)  # [N, L', Ci]
        attn = torch.softmax(theta @ phi, dim=-1)
        y = (attn @ g).transpose(1, 2).reshape(n, self.inter, *x.shape[2:])
        return x + self.W(y)


def stripe_operators(height: int, stripes: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(pool [S, H], spread [H, S]) for ``stripes`` horizontal stripes over ``height`` rows.

    Stripe i covers rows ``floor(i*H/S) .. ceil((i+1)*H/S) - 1`` (adaptive pooling bins);
    ``pool`` averages a stripe's rows, ``spread`` gives each row the mean of the stripes that
    cover it. When S divides H the stripes partition the rows, as in STE-NVAN's code.
    """
    member = torch.zeros(stripes, height, dtype=dtype, device=device)
    for i in range(stripes):
        start = (i * height) // stripes
        end = max(-(-((i + 1) * height) // stripes), start + 1)
        member[i, start:end] = 1.0
    pool = member / member.sum(1, keepdim=True)
    spread = member.t() / member.t().sum(1, keepdim=True)
    return pool, spread


class StripeNonLocalBlock(nn.Module):
    """STE-NVAN's stripe non-local block: nodes are (frame, horizontal stripe) mean features."""

    def __init__(self, channels: int, stripes: int = 16) -> None:
        super().__init__()
        inter = max(1, channels // 2)
        self.inter = inter
        self.stripes = stripes
        self.theta = nn.Conv3d(channels, inter, 1)
        self.phi = nn.Conv3d(channels, inter, 1)
        self.g = nn.Conv3d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv3d(inter, channels, 1), _zero_bn(channels))

    def forward(self, x: Tensor) -> Tensor:
        n, c, t, h, w = x.shape
        pool, spread = stripe_operators(h, self.stripes, x.device, x.dtype)
        nodes = (x.mean(-1) @ pool.t()).unsqueeze(-1)  # [N, C, T, S, 1]
        theta = self.theta(nodes).flatten(2).transpose(1, 2)
        phi = self.phi(nodes).flatten(2)
        g = self.g(nodes).flatten(2).transpose(1, 2)
        attn = torch.softmax(theta @ phi, dim=-1)
        y = (attn @ g).transpose(1, 2).reshape(n, self.inter, t, self.stripes, 1)
        response = self.W(y).squeeze(-1) @ spread.t()  # [N, C, T, H]
        return x + response.unsqueeze(-1)


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d whose shift is fixed at 0 (not trained): the re-id BNNeck."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


def id_classifier(dim: int, num_classes: int, bias: bool = False) -> nn.Linear:
    """Linear ID classifier initialised N(0, 0.001) as both official codes do."""
    fc = nn.Linear(dim, num_classes, bias=bias)
    nn.init.normal_(fc.weight, std=0.001)
    if bias:
        nn.init.zeros_(fc.bias)
    return fc
