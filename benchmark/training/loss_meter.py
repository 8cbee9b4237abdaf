"""Running loss sums kept on the training device, read by the host once per log interval.

Reading a loss (``float(loss)``, ``loss.item()``, ``bool(torch.isfinite(loss))``) makes the
host wait for the device to finish the step; done per micro-step, as the engine once did, it
stalls a GPU between every two steps. :class:`LossMeter` adds each micro-step's losses to
float64 tensors on the device (``v.double()`` then ``+``: the same IEEE arithmetic as summing
``float(v)`` in Python, so the sums are bit-identical to the old host-side ones) and records,
on the device too, the first micro-step whose total loss was not finite and its losses.
:meth:`LossMeter.read` brings all of it to the host in one copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class MeterReading:
    """What one :meth:`LossMeter.read` returned (host values)."""

    sums: dict[str, float]
    counted: int
    first_bad: Optional[int]  # index (in the meter's count) of the first non-finite micro-step
    bad_losses: dict[str, float]  # that micro-step's losses (empty when all were finite)


class LossMeter:
    """Per-key running sums of detached losses over the micro-steps of one epoch.

    ``sums``/``counted`` restore a mid-epoch checkpoint's running sums (exact: float64).
    """

    def __init__(self, device: torch.device, sums: Optional[dict[str, float]] = None, counted: int = 0) -> None:
        self.device = device
        self._sums: dict[str, Tensor] = {
            k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in (sums or {}).items()
        }
        self.counted = int(counted)
        self._index = torch.tensor(self.counted, dtype=torch.int64, device=device)  # micro-steps seen
        self._first_bad = torch.tensor(-1, dtype=torch.int64, device=device)
        self._bad: dict[str, Tensor] = {}

    def add(self, losses: dict[str, Tensor], total: Tensor) -> None:
        """Add one micro-step's losses and their ``total`` (the ``loss`` key); no host sync."""
        values = {**{k: v.detach() for k, v in losses.items()}, "loss": total.detach()}
        for k, v in values.items():
            v = v.to(torch.float64)
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        first_now = (self._first_bad < 0) & ~torch.isfinite(values["loss"]).all()
        for k, v in values.items():
            old = self._bad.get(k, torch.zeros((), dtype=torch.float64, device=self.device))
            self._bad[k] = torch.where(first_now, v.to(torch.float64), old)
        self._first_bad = torch.where(first_now, self._index, self._first_bad)
        self._index = self._index + 1
        self.counted += 1

    def read(self) -> MeterReading:
        """The sums, and the first non-finite micro-step if any: one device-to-host copy."""
        keys = sorted(self._sums)
        bad_keys = sorted(self._bad)
        parts = [self._sums[k] for k in keys] + [self._bad[k] for k in bad_keys] + [self._first_bad.to(torch.float64)]
        values = torch.stack(parts).tolist() if parts else []  # the one sync
        sums = dict(zip(keys, values[: len(keys)]))
        first_bad = int(values[-1])
        bad = dict(zip(bad_keys, values[len(keys) : len(keys) + len(bad_keys)])) if first_bad >= 0 else {}
        return MeterReading(sums, self.counted, first_bad if first_bad >= 0 else None, bad)
