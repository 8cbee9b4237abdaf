"""RICE's paper profile, one training step at a time, on whatever device is there.

On a GPU machine (one command, under five minutes; see docs/performance.md)::

    python tests/benchmarks/bench_gpu_step.py                       # one GPU
    torchrun --nproc_per_node 8 tests/benchmarks/bench_gpu_step.py  # eight

builds ``--method rice --profile paper`` (icl+pmd+pfr+ipd+text, ViT-B/32 at 224 px) from random
weights (no download: the step's cost does not depend on the weights), feeds synthetic batches
at the real shapes (per process ``--batch-size`` pairs of 10 frames + 1 image, the frames'
temporal mask and boxes drawn like LPR4M's: ``--real-frames`` of 10 real on average, a box on
``--boxed`` of the frames, Chinese-length ASR and titles, tokenized before the timed steps as the DataLoader's workers
do), runs ``--warmup`` steps and then
``--steps`` timed ones through the engine's own ``micro_step``/``optimizer_step``, bf16 autocast
and fused AdamW on CUDA, and prints: pairs/s (global), the step time split into data (the
wait for the next batch, copied one ahead on a side stream by the engine's ``DevicePrefetcher``), forward, backward and optimizer (CUDA events, read once
at the end), peak GPU memory, and the host syncs of one step (``tests/sync_counter.py``).

On the CPU (``--tiny``, the default there) the same code runs at small shapes in seconds;
``tests/test_bench_gpu_step.py`` runs it so CI keeps it working.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.core.config import DataConfig, TrainConfig  # noqa: E402
from benchmark.core.frame_index import frame_indices  # noqa: E402
from benchmark.training import engine  # noqa: E402
from benchmark.training.distributed import cleanup, init_distributed  # noqa: E402
from benchmark.training.loop import micro_step, optimizer_step  # noqa: E402
from benchmark.training.loss_meter import LossMeter  # noqa: E402
from benchmark.training.prefetch import DevicePrefetcher  # noqa: E402
from methods.base import DataInfo, build_method  # noqa: E402
from methods.rice import Rice  # noqa: E402
from tests.sync_counter import count_syncs  # noqa: E402

RANDOM_PAPER = {"encoder.pretrained": None, "encoder.text_pretrained": None, "require_pretrained": False}
TINY_SHAPES = {  # the paper architecture (patchify, no BatchNorm) narrowed for a CPU
    **RANDOM_PAPER,
    "encoder.model_name": "custom",
    "encoder.image_size": 112,
    "encoder.patch_size": 16,
    "encoder.width": 64,
    "encoder.layers": 2,
    "encoder.heads": 2,
    "encoder.embed_dim": 32,
    "encoder.text_width": 32,
    "encoder.text_layers": 1,
    "encoder.text_heads": 2,
    "encoder.context_length": 16,
    "encoder.text_config": "custom",  # a small random BERT of the text_* sizes (Chinese-CLIP's tokenizer)
    "encoder.quick_gelu": True,
    "det_dim": 32,
    "det_heads": 2,
    "det_layers": 1,
}


def synthetic_batch(b: int, t: int, size: int, real_frames: float, boxed: float, seed: int) -> dict[str, Any]:
    """One collated batch as the DataLoader yields it (pinned on CUDA), at the given shapes."""
    g = torch.Generator().manual_seed(seed)
    n_real = (torch.rand(b, generator=g) * 2 * (t - real_frames) + 2 * real_frames - t).round().clamp(1, t)
    frame_mask = torch.arange(t)[None] < n_real[:, None]
    box_mask = (torch.rand(b, t, generator=g) < boxed) & frame_mask
    xy = torch.rand(b, t, 2, generator=g) * 0.5
    batch = {
        # uint8 pixels, as the workers hand them over; the feed normalises them on the device
        "frames": torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)
        * frame_mask[:, :, None, None, None],
        "frame_mask": frame_mask,
        "box_mask": box_mask,
        "boxes": torch.cat([xy, xy + 0.2 + torch.rand(b, t, 2, generator=g) * 0.3], dim=-1),
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "asr": ["主播介绍这款商品的材质和尺码" * 3 for _ in range(b)],
        "title": ["女装连衣裙夏季新款" for _ in range(b)],
        "product": torch.randperm(10 * b, generator=g)[:b],
        "category": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }
    batch.update(frame_indices(frame_mask, box_mask))
    return batch


class Timer:
    """Phase marks: CUDA events (read once at the end, no sync in the step) or wall clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[list[Any]] = []

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def spans(self) -> list[list[float]]:
        """Per step, the seconds between consecutive marks."""
        if self.cuda:
            torch.cuda.synchronize()
            return [[a.elapsed_time(b) / 1e3 for a, b in zip(m, m[1:])] for m in self.marks]
        return [[b - a for a, b in zip(m, m[1:])] for m in self.marks]


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = init_distributed("auto" if args.device == "auto" else args.device)
    device = env.device
    tiny = args.tiny if args.tiny is not None else device.type == "cpu"
    size, t = (112, args.frames) if tiny else (224, args.frames)
    info = DataInfo(num_products=1000, num_categories=1, num_frames=t, image_size=size)
    torch.manual_seed(env.rank)
    method = build_method(Rice, "paper", info, TINY_SHAPES if tiny else RANDOM_PAPER)
    cfg = TrainConfig(
        epochs=1,
        batch_size=args.batch_size * env.world_size,
        lr_encoder=1e-6,
        lr_new=1e-4,
        weight_decay=0.2,
        grad_clip=0.0,
        amp=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tr, _ = engine._build_trainer(method, args.batch_size * env.world_size, cfg, env, Path(tmp), None, None)
    prepare = method.batch_preparer() or (lambda b: b)  # the workers' part (text ids), outside the timed step as there
    host = [
        prepare(synthetic_batch(args.batch_size, t, size, args.real_frames, args.boxed, seed=env.rank * 100 + i))
        for i in range(2)
    ]
    if device.type == "cuda":
        host = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in host]
    meter = LossMeter(device)
    method.train()
    feed = functools.partial(engine.to_device, data_cfg=DataConfig())  # copy, then normalise on the device
    batches = iter(DevicePrefetcher(itertools.cycle(host), device, feed))  # the engine's feed

    def step(i: int, timer: Timer | None) -> None:
        marks = [timer.mark()] if timer else None
        batch = next(batches)
        if timer:
            marks.append(timer.mark())
        losses, loss = micro_step(tr, batch, True)  # forward + backward (split below by a hook)
        meter.add(losses, loss)
        if timer:
            marks.append(timer.mark())
        optimizer_step(tr)
        if timer:
            marks.append(timer.mark())
            timer.marks.append(marks)

    for i in range(args.warmup):
        step(i, None)
    with count_syncs() as log:  # the sync count of one step, not timed
        step(0, None)
    fwd = _forward_seconds(tr, host[0], device, args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timer = Timer(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i, timer)
    spans = timer.spans()
    wall = time.perf_counter() - t0
    meter.read()  # the one read of the interval
    data, fwd_bwd, opt = (statistics.median(s[k] for s in spans) for k in range(3))
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": env.world_size,
        "shapes": "tiny" if tiny else "paper",
        "per_process_batch": args.batch_size,
        "frames": t,
        "image_size": size,
        "pairs_per_s": round(args.batch_size * env.world_size * args.steps / wall, 2),
        "step_s": round(wall / args.steps, 4),
        "data_s": round(data, 4),
        "forward_s": round(fwd, 4),
        "backward_s": round(max(fwd_bwd - fwd, 0.0), 4),
        "optimizer_s": round(opt, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "syncs_per_step": log.count,
        "sync_sites": sorted({w for _, w in log.calls}),
    }
    cleanup(env)
    return out


def _forward_seconds(tr, batch: dict[str, Any], device: torch.device, steps: int) -> float:
    """Median forward time alone (no backward), to split the forward+backward span."""
    timer = Timer(device)
    for _ in range(max(2, min(steps, 5))):
        b = engine.to_device(batch, device, DataConfig())
        with torch.no_grad(), engine.autocast(device, tr.amp):
            start = timer.mark()
            tr.module(b)
            timer.marks.append([start, timer.mark()])
    return statistics.median(s[0] for s in timer.spans())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=None, help="pairs per process (paper: 128 / GPUs; tiny: 4)")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--real-frames", type=float, default=7.75, help="mean real frames a clip (LPR4M's tail cut)")
    p.add_argument("--boxed", type=float, default=0.002, help="share of frames with a box (LPR4M training: ~0.2%%)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--tiny", action=argparse.BooleanOptionalAction, default=None, help="small shapes (default on the CPU)"
    )
    args = p.parse_args(argv)
    if args.batch_size is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
        args.batch_size = 4 if (args.tiny or on_cpu) else max(1, 128 // world)
    out = run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        for k, v in out.items():
            print(f"{k:>18}: {v}")
    return out


if __name__ == "__main__":
    main()
