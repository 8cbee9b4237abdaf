"""``methods.gather.gather_packed``: several tensors in one collective, exactly what one gather
each gives (two gloo processes on the CPU).

* the gathered tensors and their gradients equal ``gather_with_grad`` / ``gather_nograd`` per
  tensor bit for bit (float32, bfloat16, int64, bool; a gathered output the loss leaves out),
  with one ``all_gather`` and one ``all_reduce`` per float dtype instead of one per tensor;
* a RICE (paper architecture, small) and an SGMN training step: losses and every gradient equal
  to the same step with one gather per tensor, bit for bit; RICE issues 1 ``all_gather`` and 1
  ``all_reduce`` (main: 6 and 3), SGMN 2 and 2 (main: 9 and 4);
* RICE's PMD keys and values are projected by the clip's own rank and gathered: the gradient
  summed over the two ranks equals one process's on both ranks' batches (the rows' sums in
  another order: within 1e-5 of the gradient's scale), which fails when a rank's keys do
  not get the other rank's gradient back.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Callable
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from methods import gather as gather_mod
from methods.gather import gather_packed
from methods.losses import gather_nograd, gather_with_grad

COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "reduce_scatter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unpacked(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The reference: one gather per tensor, with gradient where the tensor requires one."""
    return [gather_with_grad(t) if t.requires_grad else gather_nograd(t) for t in tensors]


class _Counter:
    """Counts the calls of ``torch.distributed``'s collectives (what the methods' gathers call)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._patches = [mock.patch.object(dist, n, self._wrap(n, getattr(dist, n))) for n in COLLECTIVES]

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted

    def __enter__(self) -> _Counter:
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._patches:
            p.stop()


def _spawn(fn: Callable, tmp_path, *args: Any) -> list[dict[str, Any]]:
    mp.spawn(_entry, args=(_free_port(), fn, str(tmp_path), args), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _entry(rank: int, port: int, fn: Callable, out: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        torch.save(fn(rank, *args), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# --- the gather itself --------------------------------------------------------------------
def _inputs(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(rank)
    return [
        torch.randn(3, 4, generator=g).requires_grad_(),
        torch.randn(3, 2, 5, generator=g).to(torch.bfloat16).requires_grad_(),
        torch.randint(0, 9, (3,), generator=g),
        torch.rand(3, 7, generator=g) > 0.5,
        torch.randn(3, 4, generator=g),  # float, no gradient wanted
        torch.randn(3, 2, generator=g).requires_grad_(),  # gathered, left out of the loss
        torch.randn(3, 3, generator=g).requires_grad_(),
    ]


def _gather_worker(rank: int, broken: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fn in (("unpacked", unpacked), ("packed", gather_packed)):
        xs = _inputs(rank)
        broken_sum = mock.patch.object(gather_mod, "_all_reduce_grads", list) if broken else contextlib.nullcontext()
        with _Counter() as c, broken_sum:  # broken: each rank keeps its own gradient, unsummed
            ys = fn(*xs)
            w = torch.arange(12.0).view(3, 4).repeat(2, 1) * (rank + 1)
            loss = (
                (ys[0] * w).sum()
                + (ys[1].float() ** 2).sum() * (rank + 2)
                + (ys[4] * ys[0]).sum()
                + ys[6].sin().sum() * (rank - 0.5)
            )
            loss.backward()
        out[name] = {
            "values": [y.detach() for y in ys],
            "requires_grad": [y.requires_grad for y in ys],
            "grads": [x.grad for x in xs],
            "counts": c.counts,
        }
    return out


@pytest.mark.slow
def test_packed_gather_equals_one_gather_per_tensor(tmp_path):
    for rank, r in enumerate(_spawn(_gather_worker, tmp_path, False)):
        ref, got = r["unpacked"], r["packed"]
        assert len(got["values"]) == 7
        for a, b in zip(ref["values"], got["values"]):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        assert got["values"][0].shape == (6, 4)  # rank 0's rows, then rank 1's
        assert got["requires_grad"] == ref["requires_grad"] == [True, True, False, False, False, True, True]
        for a, b in zip(ref["grads"], got["grads"]):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and torch.equal(a, b)
        assert got["grads"][5] is None  # the output the loss left out: no gradient, as unpacked
        assert got["grads"][0].abs().sum() > 0 and got["grads"][1].float().abs().sum() > 0
        assert ref["counts"] == {"all_gather": 7, "all_reduce": 3}, ref["counts"]
        assert got["counts"] == {"all_gather": 1, "all_reduce": 2}, got["counts"]  # float32 + bfloat16


@pytest.mark.slow
def test_packed_gather_gradient_needs_every_ranks_share(tmp_path):
    """The deliberately broken backward (no sum over ranks) is what the test above would catch."""
    r = _spawn(_gather_worker, tmp_path, True)[0]
    assert not torch.equal(r["unpacked"]["grads"][0], r["packed"]["grads"][0])


def test_one_process_returns_the_tensors_themselves():
    xs = [torch.randn(2, 3, requires_grad=True), torch.ones(2, dtype=torch.bool)]
    with _Counter() as c:
        ys = gather_packed(*xs)
    assert all(y is x for x, y in zip(xs, ys)) and c.counts == {}
