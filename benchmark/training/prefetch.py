"""Batches moved to the training device one batch ahead, on a side CUDA stream.

A DataLoader with ``pin_memory=True`` hands over page-locked batches; copying one to the GPU
with ``non_blocking=True`` on the compute stream still queues the copy behind the step that is
running. :class:`DevicePrefetcher` issues batch ``i + 1``'s copies on a second stream while
step ``i`` computes, and makes the compute stream wait for them (an event, not a host sync)
before the batch is used; each tensor is marked as used by the compute stream so the caching
allocator does not recycle it early. On the CPU (or any non-CUDA device) it is
``to_device(batch)`` in order, the same values as before.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor


class DevicePrefetcher:
    """Iterate ``loader``'s batches already on ``device`` (CUDA: copied one batch ahead)."""

    def __init__(
        self,
        loader: Iterable[dict[str, Any]],
        device: torch.device,
        to_device: Callable[[dict[str, Any], torch.device], dict[str, Any]],
    ) -> None:
        self.loader, self.device, self.to_device = loader, device, to_device
        self.cuda = device.type == "cuda"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.cuda:
            for batch in self.loader:
                yield self.to_device(batch, self.device)
            return
        stream = torch.cuda.Stream(device=self.device)
        it = iter(self.loader)
        nxt = self._issue(it, stream)
        while nxt is not None:
            batch, ready = nxt
            torch.cuda.current_stream(self.device).wait_event(ready)
            for v in batch.values():
                if isinstance(v, Tensor) and v.device.type == "cuda":
                    v.record_stream(torch.cuda.current_stream(self.device))
            nxt = self._issue(it, stream)  # the next copy overlaps this step's compute
            yield batch

    def _issue(self, it: Iterator[dict[str, Any]], stream: "torch.cuda.Stream") -> Optional[tuple[dict, Any]]:
        try:
            host = next(it)
        except StopIteration:
            return None
        with torch.cuda.stream(stream):
            batch = self.to_device(host, self.device)
            ready = torch.cuda.Event()
            ready.record(stream)
        return batch, ready
