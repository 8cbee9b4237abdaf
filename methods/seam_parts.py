"""SEAM Match-RCNN's heads (``methods/seam_match_rcnn.py``): the match head, the 1D non-local
block and the temporal aggregator, SEAM's weak pair labels, and small detector helpers.

Official code: HumaticsLAB/SEAM-Match-RCNN (``models/match_head.py``, ``models/nlb.py``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@contextlib.contextmanager
def inference_mode_of(*modules: nn.Module) -> Iterator[None]:
    """Temporarily put ``modules`` in eval mode (their own flags restored afterwards)."""
    saved = [(m, m.training) for mod in modules for m in mod.modules()]
    try:
        for mod in modules:
            mod.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


# --- SEAM heads ----------------------------------------------------------------------------


class MatchHead(nn.Module):
    """SEAM's ``MatchPredictor``: RoI features [N, C, 14, 14] -> match features [N, D]; pair logits."""

    def __init__(self, channels: int, hidden: int, embed: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, channels, 3),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3),
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AvgPool2d(6), nn.ReLU())
        self.fc = nn.Linear(hidden, embed)
        self.bn = nn.BatchNorm1d(embed)
        self.last = nn.Linear(embed, 2)

    def embed(self, roi: Tensor) -> Tensor:
        return self.bn(self.fc(self.pool(self.convs(roi)).flatten(1)))

    def pair_logits(self, a: Tensor, b: Tensor) -> Tensor:
        """Logits [P, 2] of aligned pairs ``a[i]``, ``b[i]``: Linear on the squared difference."""
        return self.last((a - b) ** 2)

    def cross_logits(self, a: Tensor, b: Tensor) -> Tensor:
        """Logits [N, M, 2] of every pair (a[i], b[j]), without materialising [N, M, D].

        ``w . (a - b)^2 = w . a^2 + w . b^2 - 2 (w * a) . b``, per class.
        """
        w, bias = self.last.weight, self.last.bias  # [2, D], [2]
        aa = (a * a) @ w.t()  # [N, 2]
        bb = (b * b) @ w.t()  # [M, 2]
        ab = torch.einsum("nd,cd,md->nmc", a, w, b)
        return aa[:, None] + bb[None] - 2 * ab + bias


class NonLocal1D(nn.Module):
    """SEAM's 1D non-local block (concatenation form, no sub-sampling, no BN) with a frame mask."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Linear(channels, inner)
        self.phi = nn.Linear(channels, inner)
        self.g = nn.Linear(channels, inner)
        self.concat_project = nn.Linear(2 * inner, 1, bias=False)
        self.w = nn.Linear(inner, channels)
        nn.init.zeros_(self.w.weight)  # W zero-initialised: the block starts as the identity
        nn.init.zeros_(self.w.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` [B, T, C], ``mask`` bool [B, T] -> [B, T, C]; one-frame sequences pass unchanged."""
        inner = self.g.out_features
        wt, wp = self.concat_project.weight[0, :inner], self.concat_project.weight[0, inner:]
        f = F.relu((self.theta(x) @ wt)[:, :, None] + (self.phi(x) @ wp)[:, None, :])  # [B, T, T]
        m = mask.to(x.dtype)
        n = m.sum(1).clamp_min(1.0)
        f = f * m[:, None, :] / n[:, None, None]
        z = x + self.w(f @ self.g(x))
        return torch.where((n > 1)[:, None, None], z, x)


class TemporalAggregator(MatchHead):
    """SEAM's ``TemporalAggregationNLB``: own match head + non-local block + attention pooling."""

    def __init__(self, channels: int, hidden: int, embed: int) -> None:
        super().__init__(channels, hidden, embed)
        self.nlb = NonLocal1D(embed)
        self.attention = nn.Linear(embed, 1)

    def aggregate(self, feats: Tensor, mask: Tensor) -> Tensor:
        """Per-frame features [B, T, D] + mask [B, T] -> clip descriptors [B, D] (0 if no frame)."""
        z = self.nlb(feats, mask)
        score = self.attention(z).squeeze(-1).masked_fill(~mask, float("-inf"))
        att = torch.softmax(score, dim=1).nan_to_num(0.0)
        return (att[..., None] * z).sum(1)


def weak_match_targets(scores: Tensor, same: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """SEAM's weak labels (``MatchLossWeak``) for every (frame box, shop) pair.

    ``scores`` [F, K, B]: match logit of box k of frame f against shop b (-inf where frame f
    has fewer than k + 1 boxes); ``same`` bool [F, B]: frame f shows shop b's product. For
    each frame and each shop of its product, the highest-scoring box is the positive (if its
    logit exceeds ``threshold``); every other pair is a negative. Returns the long targets
    [F, K, B] and the best box index [F, B].
    """
    best_score, best = scores.max(1)
    target = torch.zeros(scores.shape, dtype=torch.long, device=scores.device)
    target.scatter_(1, best[:, None], (same & (best_score > threshold)).long()[:, None])
    return target, best


def pixel_boxes(boxes01: Tensor, valid: Tensor, sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Boxes [N, 4] in [0, 1] of the first N images -> pixels of their transformed ``sizes``
    (h, w); ``valid`` [N] also drops boxes under one pixel wide or high."""
    n = boxes01.shape[0]
    hw = torch.tensor(sizes[:n], dtype=boxes01.dtype, device=boxes01.device)
    px = boxes01 * torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=1)
    return px, valid & ((px[:, 2] - px[:, 0]) >= 1) & ((px[:, 3] - px[:, 1]) >= 1)
