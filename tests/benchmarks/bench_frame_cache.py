"""Decoded-frame cache vs decoding every time: item loading of the demo's data, side by side.

Run as a script::

    .venv/bin/python tests/benchmarks/bench_frame_cache.py [--size default] [--items 256] [--rounds 3]

or with pytest-benchmark (the generator's ``tiny`` size)::

    .venv/bin/python -m pytest tests/benchmarks/bench_frame_cache.py --benchmark-only --benchmark-enable -s -p no:xdist

On lpr4m-synth under the tiny profile (the demo's data and transforms), single-threaded as in a
DataLoader worker: ``--items`` training pairs (``PairDataset``, jitter on, item-seeded as in
training) and test queries / gallery images (evaluation transforms) loaded with and without
:mod:`datasets.frame_cache`, interleaved round by round because the machine is shared. Reported:
items/s of each (median over rounds), the median per-round time ratio cached / uncached, and the
one-off cost of building each cache (seconds, and in uncached-epoch equivalents for training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from benchmark.cli.run_setup import SYNTH_DATA_SEED
from benchmark.core.config import PROFILES
from benchmark.core.registry import DATASETS, load_all
from benchmark.training.item_seeding import ItemSeededDataset
from datasets import frame_cache as FC
from datasets.torch_data import GalleryDataset, PairDataset, QueryDataset


def _datasets(size: str):
    load_all()
    splits = DATASETS.get("lpr4m-synth")(None, size=size, seed=SYNTH_DATA_SEED)
    cfg = PROFILES["tiny"].data
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in splits.train}))}
    present = [q for q in splits.queries if not q.missing]
    return splits, {
        "train": lambda: PairDataset(splits.train, cfg, products, {}, train=True),
        "query": lambda: QueryDataset(present, cfg),
        "gallery": lambda: GalleryDataset(splits.gallery, cfg),
    }


def _load(ds, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return time.perf_counter() - t0


def measure(size: str = "default", items: int = 256, rounds: int = 3) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    splits, makers = _datasets(size)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, make in makers.items():
            plain, cached = make(), make()
            t0 = time.perf_counter()
            FC.attach(cached, f"{splits.name}/{splits.annotation_checksum}/{side}", root=Path(tmp))
            build_s = time.perf_counter() - t0
            if side == "train":
                plain, cached = ItemSeededDataset(plain, 0), ItemSeededDataset(cached, 0)
            n = min(items, len(plain))
            _load(plain, 8), _load(cached, 8)  # warm-up
            tp, tc = [], []
            for _ in range(rounds):
                tp.append(_load(plain, n))
                tc.append(_load(cached, n))
            epoch_s = statistics.median(tp) * len(plain) / n
            out[side] = {
                "uncached_items_s": n / statistics.median(tp),
                "cached_items_s": n / statistics.median(tc),
                "time_ratio": statistics.median(c / p for c, p in zip(tc, tp)),
                "build_s": build_s,
                "build_in_epochs": build_s / epoch_s,
                "images": len(cached.base.frame_cache if side == "train" else cached.frame_cache),
                "mib": (cached.base if side == "train" else cached).frame_cache.nbytes / 2**20,
            }
    return out


def table(res: dict[str, dict[str, float]]) -> str:
    lines = ["side     uncached items/s  cached items/s  time cached/uncached  build s (uncached passes)  images  MiB"]
    for side, r in res.items():
        lines.append(
            f"{side:8s} {r['uncached_items_s']:16.1f} {r['cached_items_s']:15.1f} {r['time_ratio']:21.2f}"
            f" {r['build_s']:10.1f} ({r['build_in_epochs']:.2f}) {r['images']:14d} {r['mib']:5.0f}"
        )
    return "\n".join(lines)


def test_bench_frame_cache(benchmark) -> None:
    res = benchmark.pedantic(measure, kwargs=dict(size="tiny", items=32, rounds=2), rounds=1, iterations=1)
    print("\n" + table(res))
    assert set(res) == {"train", "query", "gallery"} and all(r["cached_items_s"] > 0 for r in res.values())


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="default")
    p.add_argument("--items", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print(table(measure(args.size, args.items, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
