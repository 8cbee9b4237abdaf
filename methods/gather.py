"""Several tensors gathered from every process in one collective, gradients flowing back.

A training step of RICE or SGMN gathers up to nine small tensors (embeddings, tokens, masks,
ids); each ``all_gather`` is a collective with its own launch latency and, on NCCL, its own
kernel. :func:`gather_packed` copies the bytes of all of them into one buffer, gathers that
once, and cuts every rank's bytes back into tensors of their own dtype and shape: a copy of
bits, so the result equals :func:`methods.losses.gather_with_grad` / ``gather_nograd`` on each
tensor bit for bit. In the backward, the gradients of the gathered tensors that need one are
summed over ranks with one ``all_reduce`` per dtype (packed the same way) and each input gets
its own rows, as ``_AllGatherWithGrad`` does for one tensor. Outside ``torch.distributed`` or
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


def _all_reduce_grads(grads: Sequence[Tensor]) -> list[Tensor]:
    """``grads`` summed over ranks: one ``all_reduce`` per dtype over their concatenation."""
    out = list(grads)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, g in enumerate(grads):
        by_dtype.setdefault(g.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([grads[i].reshape(-1) for i in idx])  # a fresh tensor: all_reduce is in place
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        start = 0
        for i in idx:
            n = grads[i].numel()
            out[i] = flat[start : start + n].view(grads[i].shape)
            start += n
    return out


class _PackedGather(torch.autograd.Function):
    """Forward: one gather of every input. Backward: each input that requires grad gets the
    rank-summed gradient of its own rows (one ``all_reduce`` per dtype)."""

    @staticmethod
    def forward(ctx: Any, differentiable: tuple[bool, ...], *tensors: Tensor) -> tuple[Tensor, ...]:
        rank = dist.get_rank()
        ctx.differentiable = differentiable
        ctx.rows = [slice(rank * t.shape[0], (rank + 1) * t.shape[0]) for t in tensors]
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
            summed = _all_reduce_grads([grads[i] for i in want])  # type: ignore[misc]
            for i, g in zip(want, summed):
                result[i] = g[ctx.rows[i]]
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
