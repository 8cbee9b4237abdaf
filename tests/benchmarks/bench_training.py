"""Training throughput of the engine (clip-meanpool, tiny profile, lpr4m-synth tiny) vs a bare step.

Run as a script (the synthetic set is generated into the cache on first use)::

    .venv/bin/python tests/benchmarks/bench_training.py [--rounds 2] [--steps 2] [--batch-size 32] [--num-workers 0]

or with pytest-benchmark::

    .venv/bin/python -m pytest tests/benchmarks/bench_training.py --benchmark-only --benchmark-enable -s -p no:xdist

Measured, interleaved round by round because the machine is shared:

* ``bare``: forward + backward + AdamW step of the same model on one pre-loaded batch held in
  memory (no data loading, no engine): the floor for this model and batch on this machine.
* ``engine``: :func:`benchmark.training.engine.train` for ``--steps`` optimizer steps on the real
  synthetic data (JPEG decoding, sampling, augmentation, collation, gradient clipping,
  schedule, the end-of-run checkpoint).

Reported: pairs/s of each (a pair = one clip of ``num_frames`` frames + one shop image) and
their ratio engine / bare (the fraction of the bare model throughput the whole pipeline
keeps), the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tiny_pairs import bare_pairs_per_s, tiny_pairs

from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from methods.base import DataInfo, build_method
from methods.clip_meanpool import ClipMeanPool


def _setup(batch_size: int):
    data, info, prof, batch = tiny_pairs(batch_size)
    if len(data) < batch_size:
        raise SystemExit(f"--batch-size {batch_size} is larger than the {len(data)} training pairs")
    return data, info, prof, batch


def bare_model_pairs_per_s(info: DataInfo, batch: dict, steps: int) -> float:
    torch.manual_seed(0)
    m = build_method(ClipMeanPool, "tiny", info).train()
    return bare_pairs_per_s(m, torch.optim.AdamW(m.parameters(), lr=1e-4), batch, steps)


def engine_pairs_per_s(data, info: DataInfo, prof, batch_size: int, steps: int, workers: int) -> float:
    torch.manual_seed(0)
    m = build_method(ClipMeanPool, "tiny", info)
    cfg = dataclasses.replace(prof.train, batch_size=batch_size, max_steps=steps, epochs=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = engine.train(
            m, data, cfg, env=DistEnv(), run_dir=Path(tmp), seed=0, num_workers=workers, show_progress=False
        )
        wall = time.perf_counter() - t0
    assert res.steps == steps
    return steps * batch_size / wall


def measure(rounds: int, steps: int, batch_size: int, workers: int) -> dict:
    data, info, prof, batch = _setup(batch_size)
    bare, eng, ratios = [], [], []
    for _ in range(rounds):
        b = bare_model_pairs_per_s(info, batch, steps)
        e = engine_pairs_per_s(data, info, prof, batch_size, steps, workers)
        bare.append(b)
        eng.append(e)
        ratios.append(e / b)
    return {
        "bare_pairs_per_s": statistics.median(bare),
        "engine_pairs_per_s": statistics.median(eng),
        "ratio_engine_vs_bare": statistics.median(ratios),
        "rounds": rounds,
        "steps": steps,
        "batch_size": batch_size,
        "num_workers": workers,
        "threads": torch.get_num_threads(),
    }


def test_training_throughput(benchmark):
    out = benchmark.pedantic(measure, kwargs=dict(rounds=1, steps=2, batch_size=32, workers=0), rounds=1, iterations=1)
    print("\n" + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()))
    assert out["engine_pairs_per_s"] > 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    a = p.parse_args()
    out = measure(a.rounds, a.steps, a.batch_size, a.num_workers)
    for k, v in out.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
