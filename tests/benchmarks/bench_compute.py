"""What torch offers on this CPU for the demo's RICE training step, side by side.

Run as a script::

    .venv/bin/python tests/benchmarks/bench_compute.py [--rounds 3] [--steps 2] [--batch-size 32] [--compile]

or with pytest-benchmark (no torch.compile, small batch)::

    .venv/bin/python -m pytest tests/benchmarks/bench_compute.py --benchmark-only --benchmark-enable -s -p no:xdist

The demo's model (``make demo``: rice, tiny profile, default variant) built from the same seed
for every variant, one random batch in the demo's shapes (``--batch-size`` pairs of 4 frames +
one shop image, 112 px, boxes, ASR and titles) held in memory, ``--steps`` forward + backward +
AdamW steps per round after a warm-up step, variants interleaved round by round (the machine
is shared). Variants:

* ``fp32``: as the demo trains (torch's default thread count);
* ``threads-1``: ``torch.set_num_threads(1)`` (the demo's DataLoader workers share the cores);
* ``channels-last-stem``: the convolutional stem's weights and input in channels-last memory;
* ``bf16-autocast``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward (the tiny
  profile trains with ``amp=False``: turning it on would be a recipe change);
* ``compile`` (``--compile``): ``torch.compile`` of the training-loss forward (inductor).

Reported: pairs/s (median over rounds), the median per-round time ratio to ``fp32``, and how far
each variant's loss at its last step is from ``fp32``'s (relative difference; every variant
starts from the same weights and batch, and each step is seeded alike), i.e. whether it changes
what is trained.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from methods.base import DataInfo, build_method


def demo_batch(b: int, t: int = 4, size: int = 112) -> dict[str, Any]:
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


def _channels_last_stem(model: torch.nn.Module) -> int:
    from methods.encoders import ConvStem

    stems = [m for m in model.modules() if isinstance(m, ConvStem)]
    for stem in stems:
        stem.to(memory_format=torch.channels_last)
        stem.register_forward_pre_hook(
            lambda mod, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        )
    return len(stems)


class Variant:
    def __init__(self, name: str, info: DataInfo, batch: dict[str, Any]) -> None:
        from methods.rice import Rice

        torch.manual_seed(0)
        self.name, self.batch = name, batch
        self.model = build_method(Rice, "tiny", info).train()
        self.opt = torch.optim.AdamW(self.model.parameter_groups(5e-4, 5e-4, 0.05))
        self.forward: Callable[[dict[str, Any]], dict[str, torch.Tensor]] = self.model.training_losses
        self.steps_done = 0
        self.last_loss = float("nan")
        if name == "channels-last-stem" and _channels_last_stem(self.model) == 0:
            raise RuntimeError("the demo's model has no convolutional stem")
        if name == "compile":
            self.forward = torch.compile(self.model.training_losses)

    def step(self) -> None:
        torch.manual_seed(1000 + self.steps_done)  # the same dropout / sampling draws in every variant
        threads = torch.get_num_threads()
        if self.name == "threads-1":
            torch.set_num_threads(1)
        try:
            if self.name == "bf16-autocast":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = sum(self.forward(self.batch).values())
            else:
                loss = sum(self.forward(self.batch).values())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
        finally:
            torch.set_num_threads(threads)
        self.last_loss = float(loss.detach())
        self.steps_done += 1


def measure(
    rounds: int = 3, steps: int = 2, batch_size: int = 32, with_compile: bool = False
) -> dict[str, dict[str, float]]:
    info = DataInfo(num_products=batch_size, num_categories=1, num_frames=4, image_size=112)
    batch = demo_batch(batch_size)
    names = ["fp32", "threads-1", "channels-last-stem", "bf16-autocast"] + (["compile"] if with_compile else [])
    variants = {n: Variant(n, info, batch) for n in names}
    warm: dict[str, float] = {}
    for n, v in variants.items():
        t0 = time.perf_counter()
        v.step()  # warm-up (for compile: the compilation)
        warm[n] = time.perf_counter() - t0
    times: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(rounds):
        for n, v in variants.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                v.step()
            times[n].append(time.perf_counter() - t0)
    base = variants["fp32"].last_loss
    out = {}
    for n, ts in times.items():
        out[n] = {
            "pairs_s": steps * batch_size / statistics.median(ts),
            "time_ratio": statistics.median(a / b for a, b in zip(ts, times["fp32"])),
            "loss_rel_diff": abs(variants[n].last_loss - base) / abs(base),
            "first_step_s": warm[n],
        }
    return out


def table(res: dict[str, dict[str, float]]) -> str:
    lines = [
        f"torch threads {torch.get_num_threads()}",
        "variant              pairs/s  time vs fp32  |loss - fp32| / fp32  first step s",
    ]
    for n, r in res.items():
        lines.append(
            f"{n:20s} {r['pairs_s']:8.1f} {r['time_ratio']:12.2f}x {r['loss_rel_diff']:20.2e} {r['first_step_s']:12.1f}"
        )
    return "\n".join(lines)


def test_bench_compute(benchmark) -> None:
    res = benchmark.pedantic(measure, kwargs=dict(rounds=2, steps=1, batch_size=8), rounds=1, iterations=1)
    print("\n" + table(res))
    assert res["fp32"]["time_ratio"] == 1.0 and res["fp32"]["loss_rel_diff"] == 0.0
    assert res["threads-1"]["loss_rel_diff"] < 1e-3  # same arithmetic, another reduction order


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="also torch.compile (compiles for minutes)")
    args = p.parse_args(argv)
    print(table(measure(args.rounds, args.steps, args.batch_size, args.compile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
