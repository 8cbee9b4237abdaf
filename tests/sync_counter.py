"""Count the calls that make the host wait for the device (host syncs), on any device.

On a GPU, reading a tensor's value on the host (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, ``.cpu()``, ``.numpy()``) and building a tensor whose shape depends on device
values (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``,
``repeat_interleave`` without ``output_size``) wait for every queued kernel. On the CPU they
cost nothing, so a CPU test cannot time them; it can count them. :func:`count_syncs` patches
those entry points on ``torch.Tensor`` and ``torch`` for the duration of a ``with`` block and
records each call with the line of project code that made it. Only calls from Python are seen
(torch's own C++ never syncs this way except through the ops listed).
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from typing import Iterator

import torch

_TENSOR_METHODS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__float__",
    "__int__",
    "__bool__",
    "__index__",
    "nonzero",
    "masked_select",
    "unique",
    "argwhere",
)
_TORCH_FUNCS = ("nonzero", "masked_select", "unique", "argwhere")


@dataclass
class SyncLog:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (what, where)
    paused: int = 0

    @property
    def count(self) -> int:
        return len(self.calls)

    def __str__(self) -> str:
        return "\n".join(f"{what} at {where}" for what, where in self.calls)


# callers whose reads are of host tensors even on a GPU run: the DataLoader's seeds and
# sampler indices, and AdamW's step counts (kept on the CPU unless fused or capturable)
_HOST_CALLERS = ("/torch/utils/data/", "/torch/optim/")


def _where() -> tuple[str, bool]:
    """(the project line that made the call, whether the direct caller reads host tensors)."""
    stack = [f for f in traceback.extract_stack()[:-3] if "sync_counter" not in f.filename]
    host = bool(stack) and any(h in stack[-1].filename for h in _HOST_CALLERS)
    for frame in reversed(stack):
        if "/torch/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}", host
    return "?", host


def _is_bool_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def count_syncs() -> Iterator[SyncLog]:
    """Patch the synchronising entry points; yield the log of calls made inside the block."""
    log = SyncLog()
    saved: list[tuple[object, str, object]] = []

    def record(what: str) -> None:
        if not log.paused:
            where, host = _where()
            if not host:
                log.calls.append((what, where))

    def wrap(owner: object, name: str, test=None) -> None:
        original = getattr(owner, name)

        def patched(*args, **kwargs):
            if test is None or test(*args, **kwargs):
                record(name)
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, patched)

    for name in _TENSOR_METHODS:
        wrap(torch.Tensor, name)
    for name in _TORCH_FUNCS:
        wrap(torch, name)
    wrap(torch.Tensor, "__getitem__", lambda self, idx: _is_bool_index(idx))
    wrap(
        torch.Tensor,
        "repeat_interleave",
        lambda self, repeats=None, *a, **k: isinstance(repeats, torch.Tensor) and k.get("output_size") is None,
    )
    try:
        yield log
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextlib.contextmanager
def paused(log: SyncLog) -> Iterator[None]:
    """Stop counting inside the block (e.g. around a checkpoint write, which is meant to read)."""
    log.paused += 1
    try:
        yield
    finally:
        log.paused -= 1
