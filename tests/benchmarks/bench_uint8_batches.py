"""Bytes per batch and collate + transfer time: float32 batches from the workers vs uint8 ones.

Run as a script (a side-by-side ratio, not a test)::

    .venv/bin/python tests/benchmarks/bench_uint8_batches.py [--pairs 32] [--batches 6] [--rounds 3]

Items at the paper profile's shapes (10 frames + 1 shop image at 224 px, a tail cut keeping 8 of
the 10 frames), already decoded, so that only the data path after the transforms is timed:

* ``float``: the path before this change: each item normalised to float32 in the worker
  (``datasets.transforms.to_float``), stacked by ``torch.stack`` (outside shared memory, so the
  worker's pickler copies the batch once more into it), pinned, copied to the device;
* ``uint8``: items kept uint8, stacked by :func:`datasets.torch_data.collate_batch` (torch's
  default collate: into shared memory in a worker), pinned, copied, and normalised on the device
  by :func:`benchmark.training.engine.to_device` (the same float32 values, see
  tests/test_device_pixels.py).

Rows: bytes per batch (the tensors a worker hands over), the collate alone in this process, a
DataLoader with one worker (collate in the worker, hand-over through shared memory, pinning on
CUDA), and the same followed by ``to_device`` (on CUDA the copy and, for uint8, the
normalisation on the GPU; on a machine without CUDA the copy is skipped and the uint8 path's
normalisation runs in this process, work the float path did in its worker before the timing).
Wall times, median over rounds that interleave the two paths.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.core.config import PROFILES
from benchmark.training.engine import to_device
from datasets.torch_data import collate_batch
from datasets.transforms import to_float

CFG = PROFILES["paper"].data
REAL_FRAMES = 8  # the tail cut keeps 7.75 of 10 on average


def _uint8_item(i: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    n, s = CFG.num_frames, CFG.image_size
    frames = torch.zeros(n, 3, s, s, dtype=torch.uint8)
    frames[:REAL_FRAMES] = torch.randint(0, 256, (REAL_FRAMES, 3, s, s), dtype=torch.uint8, generator=g)
    return {
        "frames": frames,
        "frame_mask": torch.arange(n) < REAL_FRAMES,
        "boxes": torch.zeros(n, 4),
        "box_mask": torch.zeros(n, dtype=torch.bool),
        "image": torch.randint(0, 256, (3, s, s), dtype=torch.uint8, generator=g),
        "asr": "",
        "title": "",
        "product": i,
        "index": i,
    }


def _float_item(item: dict[str, Any]) -> dict[str, Any]:
    """What the workers returned before: normalised float32, padding zeroed."""
    out = dict(item)
    frames = torch.empty(item["frames"].shape, dtype=torch.float32)
    to_float(item["frames"][:REAL_FRAMES], CFG.mean, CFG.std, out=frames[:REAL_FRAMES])
    frames[REAL_FRAMES:].zero_()
    out["frames"], out["image"] = frames, to_float(item["image"], CFG.mean, CFG.std)
    return out


def _old_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The collate before this change: ``torch.stack`` in the worker's private memory."""
    batch: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, str):
            batch[key] = values
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    return batch


class _Items(Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _nbytes(batch: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def _loader_seconds(items: list, pairs: int, collate: Callable, transfer: Callable, device: torch.device) -> float:
    """Seconds per batch through a one-worker DataLoader (pinned on CUDA), then ``transfer``."""
    loader = DataLoader(
        _Items(items), batch_size=pairs, num_workers=1, collate_fn=collate, pin_memory=device.type == "cuda"
    )
    it = iter(loader)
    transfer(next(it))  # worker start-up outside the timing
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, n = time.perf_counter(), 0
    for batch in it:
        transfer(batch)
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / max(n, 1)


def measure(pairs: int = 32, batches: int = 6, rounds: int = 3) -> dict[str, dict[str, float]]:
    """{path: {"bytes", "collate_s", "loader_transfer_s"}} (seconds per batch, median)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = [_uint8_item(i) for i in range(pairs)]
    paths: dict[str, tuple[list[dict[str, Any]], Callable, Any]] = {
        "float": ([_float_item(it) for it in base], _old_collate, lambda b: to_device(b, device)),
        "uint8": (base, collate_batch, lambda b: to_device(b, device, CFG)),
    }
    out: dict[str, dict[str, list[float]]] = {
        k: {"collate_s": [], "loader_s": [], "loader_transfer_s": []} for k in paths
    }
    sizes = {k: _nbytes(c(items)) for k, (items, c, _) in paths.items()}
    for _ in range(rounds):
        for name, (items, collate, transfer) in paths.items():
            t0 = time.perf_counter()
            collate(items)
            out[name]["collate_s"].append(time.perf_counter() - t0)
            for row, fn in (("loader_s", lambda b: b), ("loader_transfer_s", transfer)):
                out[name][row].append(_loader_seconds(items * batches, pairs, collate, fn, device))
    return {
        k: {"bytes": float(sizes[k]), **{m: statistics.median(v) for m, v in rows.items()}} for k, rows in out.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32, help="pairs per batch")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = measure(args.pairs, args.batches, args.rounds)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no copy: device = host)"
    print(f"{args.pairs} pairs a batch, 10 frames ({REAL_FRAMES} real) + 1 image at {CFG.image_size} px; device: {dev}")
    print(f"{'':22}{'float':>12}{'uint8':>12}{'float/uint8':>14}")
    f, u = res["float"], res["uint8"]
    print(f"{'MB per batch':22}{f['bytes'] / 1e6:12.1f}{u['bytes'] / 1e6:12.1f}{f['bytes'] / u['bytes']:14.2f}")
    rows = (("collate_s", "collate ms"), ("loader_s", "loader ms"), ("loader_transfer_s", "loader+to_device ms"))
    for key, label in rows:
        print(f"{label:22}{f[key] * 1e3:12.1f}{u[key] * 1e3:12.1f}{f[key] / u[key]:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
