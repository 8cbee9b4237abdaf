"""Tiny-profile training speed of the CNN baselines (part A) vs clip-meanpool, bare steps.

Run as a script (the synthetic set is generated into the cache on first use)::

    .venv/bin/python tests/benchmarks/bench_baselines_a.py [--rounds 2] [--steps 2] [--batch-size 32] [--threads 1]

or with pytest-benchmark::

    .venv/bin/python -m pytest tests/benchmarks/bench_baselines_a.py --benchmark-only --benchmark-enable -s -p no:xdist

For every method (fashionnet, asymnet, nvan, nvan-ste, mgh) and the baseline ``clip-meanpool``
(tiny profiles, random init): forward + backward + AdamW step on one pre-loaded batch of real
``lpr4m-synth`` (tiny) training pairs (8 frames + 1 shop image each, 112 px), no data loading.
Rounds are interleaved (every method once per round) because the machine is shared; reported:
pairs/s (median over rounds) and the ratio to clip-meanpool's pairs/s in the same round
(median of the per-round ratios). The methods that chunk-sample 4 of the 8 frames do so inside
their step, as in training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmark.registry import METHODS
from methods.base import DataInfo, build_method
from tiny_pairs import tiny_pairs

CASES = [("clip-meanpool", {}), ("fashionnet", {}), ("asymnet", {}), ("nvan", {}), ("nvan", {"ste": True}), ("mgh", {})]


def label(name: str, overrides: dict) -> str:
    return name + ("-ste" if overrides.get("ste") else "")


def setup(batch_size: int) -> tuple[DataInfo, dict]:
    """One collated batch of ``lpr4m-synth`` (tiny) training pairs, the tiny profile's transforms."""
    _, info, _, batch = tiny_pairs(batch_size)
    return info, batch


def pairs_per_s(name: str, overrides: dict, info: DataInfo, batch: dict, steps: int) -> float:
    torch.manual_seed(0)
    m = build_method(METHODS.get(name), "tiny", info, overrides).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    loss = sum(m.training_losses(batch).values())  # warm-up step, not timed
    loss.backward()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = sum(m.training_losses(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch["frames"].shape[0] / (time.perf_counter() - t0)


def measure(rounds: int, steps: int, batch_size: int, threads: int) -> dict[str, dict[str, float]]:
    torch.set_num_threads(threads)
    info, batch = setup(batch_size)
    speed: dict[str, list[float]] = {label(n, o): [] for n, o in CASES}
    ratio: dict[str, list[float]] = {label(n, o): [] for n, o in CASES}
    for _ in range(rounds):
        base = None
        for name, overrides in CASES:
            s = pairs_per_s(name, overrides, info, batch, steps)
            base = s if base is None else base
            speed[label(name, overrides)].append(s)
            ratio[label(name, overrides)].append(s / base)
    return {k: {"pairs_per_s": statistics.median(speed[k]), "vs_clip_meanpool": statistics.median(ratio[k])} for k in speed}


def report(out: dict[str, dict[str, float]]) -> str:
    return "\n".join(f"{k:14s} {v['pairs_per_s']:7.2f} pairs/s  x{v['vs_clip_meanpool']:.2f} of clip-meanpool" for k, v in out.items())


def test_baselines_a_training_speed(benchmark):
    out = benchmark.pedantic(measure, kwargs=dict(rounds=1, steps=2, batch_size=32, threads=1), rounds=1, iterations=1)
    print("\n" + report(out))
    assert all(v["pairs_per_s"] > 0 for v in out.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    print(f"threads={a.threads} batch={a.batch_size} steps={a.steps} rounds={a.rounds}")
    print(report(measure(a.rounds, a.steps, a.batch_size, a.threads)))


if __name__ == "__main__":
    main()
