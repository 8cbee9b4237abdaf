"""Several tensors gathered from every process in one collective, gradients flowing back.

A training step of RICE or SGMN gathers up to nine small tensors (embeddings, tokens, masks,
ids); each ``all_gather`` is a collective with its own launch latency and, on NCCL, its own
kernel. :func:`gather_packed` copies the bytes of all of them into one buffer, gathers that
once, and cuts every rank's bytes back into tensors of their own dtype and shape: a copy of
bits, so the result equals :func:`methods.losses.gather_with_grad` / ``gather_nograd`` on each
tensor bit for bit. In the backward, the gradients of the gathered tensors that need one are
summed over ranks with one ``reduce_scatter`` per dtype (packed the same way), which hands each
rank the sums of its own rows: what ``_AllGatherWithGrad``'s ``all_reduce`` computes for one
tensor, of which it keeps the same rows. Each element is the sum of the ranks' gradients for
it; with two ranks that is one addition either way, so the gradients are bit-identical (with
more, each backend orders its sums its own way, as one ``all_reduce`` of different sizes may). Outside ``torch.distributed`` or
at world size 1 the tensors come back as they are, with no collective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _bytes(x: Tensor) -> Tensor:
    """``x``'s bits as a flat uint8 tensor (a view where ``x`` is contiguous)."""
    return x.contiguous().reshape(-1).view(torch.uint8)


def _from_bytes(raw: Tensor, like: Tensor, world: int) -> Tensor:
    """Every rank's bytes of one tensor ([world, n] uint8) as ``like``'s dtype, rows concatenated."""
    return raw.contiguous().view(like.dtype).view(world * like.shape[0], *like.shape[1:])


def _all_gather_bytes(tensors: Sequence[Tensor]) -> list[Tensor]:
    """One ``all_gather`` of the concatenated bytes of ``tensors``; each tensor's rows from every rank."""
    world = dist.get_world_size()
    local = torch.cat([_bytes(t) for t in tensors]) if len(tensors) > 1 else _bytes(tensors[0])
    buf = torch.empty(world, local.numel(), dtype=torch.uint8, device=local.device)
    dist.all_gather(list(buf.unbind(0)), local)
    out, start = [], 0
    for t in tensors:
        n = t.numel() * t.element_size()
        out.append(_from_bytes(buf[:, start : start + n], t, world))
        start += n
    return out


def _reduce_scatter_grads(grads: Sequence[Tensor], world: int) -> list[Tensor]:
    """Each gathered gradient [world * B_i, ...] summed over ranks, this rank's rows [B_i, ...]
    kept: one ``reduce_scatter`` per dtype (each rank receives only its own rows' sums, half
    the bytes of an ``all_reduce`` of the whole)."""
    out: list[Tensor] = list(grads)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, g in enumerate(grads):
        by_dtype.setdefault(g.dtype, []).append(i)
    for idx in by_dtype.values():
        # rank-major: rank r's rows of every tensor, then rank r + 1's (a fresh tensor)
        per_rank = [g.reshape(world, -1) for g in (grads[i] for i in idx)]
        send = torch.cat(per_rank, dim=1).reshape(-1)
        mine = send.new_empty(send.numel() // world)
        dist.reduce_scatter_single(mine, send, op=dist.ReduceOp.SUM)
        start = 0
        for i, part in zip(idx, per_rank):
            n = part.shape[1]
            out[i] = mine[start : start + n].view(grads[i].shape[0] // world, *grads[i].shape[1:])
            start += n
    return out


class _PackedGather(torch.autograd.Function):
    """Forward: one gather of every input. Backward: each input that requires grad gets the
    rank-summed gradient of its own rows (one ``reduce_scatter`` per dtype)."""

    @staticmethod
    def forward(ctx: Any, differentiable: tuple[bool, ...], *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.differentiable, ctx.world = differentiable, dist.get_world_size()
        out = tuple(_all_gather_bytes(tensors))
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*(o for o, d in zip(out, differentiable) if not d))
        return out

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        # an output the loss did not use has no gradient (None): its input gets none either, as
        # with one gather per tensor (every rank's graph has the same shape, so the all_reduce
        # calls match across ranks as the single gathers' did)
        want = [i for i, d in enumerate(ctx.differentiable) if d and grads[i] is not None]
        result: list[Tensor | None] = [None] * len(ctx.differentiable)
        if want:
            summed = _reduce_scatter_grads([grads[i] for i in want], ctx.world)  # type: ignore[misc]
            for i, g in zip(want, summed):
                result[i] = g
        return (None, *result)


def gather_packed(*tensors: Tensor) -> list[Tensor]:
    """Each of ``tensors`` from every process, concatenated along dim 0 in rank order, in one
    collective. A tensor that requires grad gets its gradient back as
    :func:`methods.losses.gather_with_grad` gives it; the others come back without a gradient
    (as from ``gather_nograd``). Any dtypes, any shapes; each tensor's shape must be the same
    on every rank. A no-op (the tensors themselves) outside ``torch.distributed`` or at world
    size 1.
    """
    if not _distributed() or not tensors:
        return list(tensors)
    if any(t.dim() == 0 for t in tensors):
        raise ValueError("gather_packed: every tensor needs a dim 0 to gather along")
    differentiable = tuple(t.requires_grad and (t.is_floating_point() or t.is_complex()) for t in tensors)
    if not any(differentiable):
        with torch.no_grad():
            return list(_all_gather_bytes(tensors))
    return list(_PackedGather.apply(differentiable, *tensors))
