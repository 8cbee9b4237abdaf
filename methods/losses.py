"""Losses shared by several methods: InfoNCE (negatives from every process), triplet, ID."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def gather_nograd(x: Tensor) -> Tensor:
    """``x`` from every process concatenated along dim 0 (no gradient; any dtype)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sends each rank the gradient of its own rows.

    Every rank's loss depends on every rank's rows, so the gradient of this rank's rows is the
    sum over ranks of the gradient each one computed for them: an ``all_reduce`` (sum) of the
    gathered tensor's gradient, of which this rank keeps its slice. (What the deprecated
    ``torch.distributed.nn.functional.all_gather`` computed with a reduce-scatter; with two
    processes the sums are the same two numbers added, so the gradients are bit-identical.)
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rows = slice(dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return gather_nograd(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes along dim 0, gradients flowing back to each.

    A no-op outside ``torch.distributed``. Rank order is kept, so a rank's local rows sit at
    ``rank * B`` in the result; every rank's ``x`` must have the same shape.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def hardest_negatives(sim: Tensor, positive: Tensor, k: int, exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The ``k`` most similar non-positive columns of ``sim`` [B, G] per row.

    ``positive`` [B] is each row's own column; ``exclude`` [B, G] (e.g. same product) marks
    further columns that may not serve as negatives. Returns indices [B, k'] and a validity
    mask [B, k'] (False where a row has fewer than k' admissible negatives), k' = min(k, G).
    """
    s = sim.float().clone()
    rows = torch.arange(s.shape[0], device=s.device)
    s[rows, positive] = float("-inf")
    if exclude is not None:
        s = s.masked_fill(exclude, float("-inf"))
    vals, idx = s.topk(min(k, s.shape[1]), dim=1)
    return idx, torch.isfinite(vals)


def local_offset(batch: int) -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() * batch
    return 0


def info_nce(
    video: Tensor,
    image: Tensor,
    logit_scale: Tensor,
    max_scale: float = 100.0,
    gathered: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """Symmetric InfoNCE between L2-normalised ``video`` and ``image`` [B, D] (CLIP's loss).

    Negatives are gathered from every process (``gathered``: ``video`` and ``image`` already
    gathered with gradient, e.g. packed with other tensors by ``methods.gather``);
    ``logit_scale`` is the log temperature (learnable), clamped at ``log(max_scale)`` as CLIP
    does. Every rank's local batch size must be equal (the distributed sampler pads for that).
    """
    all_video, all_image = gathered if gathered is not None else (gather_with_grad(video), gather_with_grad(image))
    scale = logit_scale.clamp(max=torch.log(torch.tensor(max_scale))).exp()
    offset = local_offset(video.shape[0])
    labels = torch.arange(video.shape[0], device=video.device) + offset
    logits_v2i = scale * video @ all_image.t()
    logits_i2v = scale * image @ all_video.t()
    return 0.5 * (F.cross_entropy(logits_v2i, labels) + F.cross_entropy(logits_i2v, labels))


def batch_hard_triplet(emb: Tensor, labels: Tensor, margin: float | None = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    ``margin=None`` gives the soft-margin version ``log(1 + exp(d_ap - d_an))`` (STE-NVAN).
    Anchors without a positive or a negative in the batch are ignored.
    """
    dist_mat = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return emb.sum() * 0.0
    d_ap = dist_mat.masked_fill(~pos_mask, float("-inf")).amax(1)[valid]
    d_an = dist_mat.masked_fill(~neg_mask, float("inf")).amin(1)[valid]
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def label_smoothed_ce(logits: Tensor, labels: Tensor, epsilon: float = 0.1) -> Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)
