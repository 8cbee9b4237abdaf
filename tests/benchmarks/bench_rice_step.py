"""Cost of each RICE component: a bare training step of every ablation vs ICL alone.

Run as a script::

    .venv/bin/python tests/benchmarks/bench_rice_step.py [--rounds 3] [--batch-size 32] [--threads N]

or with pytest-benchmark::

    .venv/bin/python -m pytest tests/benchmarks/bench_rice_step.py --benchmark-only --benchmark-enable -s -p no:xdist

One random batch in the tiny profile's shapes (``--batch-size`` pairs, 8 frames of 112 px +
one shop image each, boxes on every frame, short ASR/title strings) stays in memory; for each
variant, forward + backward + AdamW step, timed after one warm-up step. Variants are timed
interleaved round by round (the machine is shared); reported: pairs/s (median over rounds)
and the median of the per-round ratios to ``icl`` (time of the variant / time of ``icl``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Optional

import torch
from tiny_pairs import bare_pairs_per_s

VARIANTS = {
    "icl": {"pmd": False, "pfr": False, "ipd": "none", "text": False},
    "icl+pmd": {"pfr": False, "ipd": "none", "text": False},
    "icl+pmd+pfr-ln": {"ipd": "none", "text": False},
    "icl+pmd+pfr-ln+ipd": {"text": False},
    "icl+pmd+pfr-ln+ipd+text": {},
    "icl+pmd+pfr-ln+ipd-mf+text": {"ipd": "multi"},
}


def _batch(b: int, t: int = 8, size: int = 112) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "frames": torch.randn(b, t, 3, size, size, generator=g),
        "frame_mask": torch.ones(b, t, dtype=torch.bool),
        "boxes": torch.tensor([0.2, 0.25, 0.6, 0.7]).repeat(b, t, 1),
        "box_mask": torch.ones(b, t, dtype=torch.bool),
        "asr": [f"look at this item number {i}" for i in range(b)],
        "image": torch.randn(b, 3, size, size, generator=g),
        "title": [f"product {i}" for i in range(b)],
        "product": torch.arange(b),
        "category": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }


def measure(rounds: int = 3, batch_size: int = 32) -> dict[str, tuple[float, float]]:
    """{variant: (pairs/s, time ratio to icl)}."""
    from methods.base import DataInfo, build_method
    from methods.rice import Rice

    info = DataInfo(num_products=batch_size, num_categories=1, num_frames=8, image_size=112)
    batch = _batch(batch_size)
    models = {}
    for name, ov in VARIANTS.items():
        torch.manual_seed(0)
        m = build_method(Rice, "tiny", info, ov)
        models[name] = (m, torch.optim.AdamW(m.parameter_groups(5e-4, 5e-4, 0.05)))

    def step(name: str) -> float:
        m, opt = models[name]
        return batch_size / bare_pairs_per_s(m, opt, batch, steps=1)  # seconds of one step

    for name in models:
        step(name)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for name in models:
            times[name].append(step(name))
    out = {}
    for name, ts in times.items():
        ratios = [a / b for a, b in zip(ts, times["icl"])]
        out[name] = (batch_size / statistics.median(ts), statistics.median(ratios))
    return out


def table(res: dict[str, tuple[float, float]]) -> str:
    from tabulate import tabulate

    rows = [[n, f"{p:.1f}", f"{r:.2f}x"] for n, (p, r) in res.items()]
    return tabulate(rows, headers=["variant", "pairs/s", "time vs icl"], tablefmt="github")


def test_bench_rice_step(benchmark) -> None:
    res = benchmark.pedantic(measure, kwargs=dict(rounds=2, batch_size=16), rounds=1, iterations=1)
    print("\n" + table(res))
    assert res["icl"][1] == 1.0 and all(p > 0 for p, _ in res.values())


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size} pairs x 8 frames, 112 px")
    print(table(measure(args.rounds, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
