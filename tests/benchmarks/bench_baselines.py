"""Tiny-profile training speed of every baseline vs clip-meanpool, bare steps.

Run as a script (the synthetic set is generated into the cache on first use)::

    .venv/bin/python tests/benchmarks/bench_baselines.py [--group cnn|video|all] [--rounds 2] [--steps 2] [--batch-size 32] [--threads 1]

or with pytest-benchmark (one test per group)::

    .venv/bin/python -m pytest tests/benchmarks/bench_baselines.py --benchmark-only --benchmark-enable -s -p no:xdist

Groups: ``cnn`` = fashionnet, asymnet, nvan, nvan-ste, mgh; ``video`` = timesformer, video-swin,
seam-match-rcnn. Each method (tiny profile, random init) and the baseline ``clip-meanpool``:
forward + backward + AdamW step on one pre-loaded batch of real ``lpr4m-synth`` (tiny) training
pairs (the tiny profile's frames + 1 shop image each, 112 px), no data loading, after one
untimed warm-up step. Every model is timed after ``set_epoch(1)``, so SEAM's aggregation loss
(off in its first epoch) is on, as in every epoch but the first; the methods that chunk-sample
frames do so inside their step, as in training. Rounds are interleaved (every method once per
round) because the machine is shared; reported: pairs/s (median over rounds) and the ratio to
clip-meanpool's pairs/s in the same round (median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from tiny_pairs import bare_pairs_per_s, tiny_pairs

from benchmark.core.registry import METHODS
from methods.base import DataInfo, build_method

BASELINE = ("clip-meanpool", {})
GROUPS: dict[str, list[tuple[str, dict]]] = {
    "cnn": [("fashionnet", {}), ("asymnet", {}), ("nvan", {}), ("nvan", {"ste": True}), ("mgh", {})],
    "video": [("timesformer", {}), ("video-swin", {}), ("seam-match-rcnn", {})],
}


def label(name: str, overrides: dict) -> str:
    return name + ("-ste" if overrides.get("ste") else "")


def pairs_per_s(name: str, overrides: dict, info: DataInfo, batch: dict, steps: int) -> float:
    """Training pairs per second of ``steps`` bare optimizer steps (after one warm-up step)."""
    torch.manual_seed(0)
    m = build_method(METHODS.get(name), "tiny", info, overrides).train()
    m.set_epoch(1)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    sum(m.training_losses(batch).values()).backward()  # warm-up step, not timed
    return bare_pairs_per_s(m, opt, batch, steps)


def measure(group: str, rounds: int, steps: int, batch_size: int, threads: int) -> dict[str, dict[str, float]]:
    """{method: {pairs_per_s, vs_clip_meanpool}} for the baseline and every method of ``group``."""
    torch.set_num_threads(threads)
    _, info, _, batch = tiny_pairs(batch_size)
    cases = [BASELINE] + (GROUPS["cnn"] + GROUPS["video"] if group == "all" else GROUPS[group])
    speed: dict[str, list[float]] = {label(n, o): [] for n, o in cases}
    ratio: dict[str, list[float]] = {label(n, o): [] for n, o in cases}
    for _ in range(rounds):
        base = None
        for name, overrides in cases:
            s = pairs_per_s(name, overrides, info, batch, steps)
            base = s if base is None else base
            speed[label(name, overrides)].append(s)
            ratio[label(name, overrides)].append(s / base)
    return {
        k: {"pairs_per_s": statistics.median(speed[k]), "vs_clip_meanpool": statistics.median(ratio[k])} for k in speed
    }


def report(out: dict[str, dict[str, float]]) -> str:
    return "\n".join(
        f"{k:16s} {v['pairs_per_s']:7.2f} pairs/s  x{v['vs_clip_meanpool']:.2f} of clip-meanpool"
        for k, v in out.items()
    )


def test_cnn_baselines_training_speed(benchmark):
    out = benchmark.pedantic(
        measure, kwargs=dict(group="cnn", rounds=1, steps=2, batch_size=32, threads=1), rounds=1, iterations=1
    )
    print("\n" + report(out))
    assert all(v["pairs_per_s"] > 0 for v in out.values())


def test_video_baselines_training_speed(benchmark):
    out = benchmark.pedantic(
        measure, kwargs=dict(group="video", rounds=1, steps=1, batch_size=32, threads=1), rounds=1, iterations=1
    )
    print("\n" + report(out))
    assert all(v["pairs_per_s"] > 0 for v in out.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", choices=[*GROUPS, "all"], default="all")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    print(f"group={a.group} threads={a.threads} batch={a.batch_size} steps={a.steps} rounds={a.rounds}")
    print(report(measure(a.group, a.rounds, a.steps, a.batch_size, a.threads)))


if __name__ == "__main__":
    main()
