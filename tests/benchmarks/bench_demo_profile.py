"""Where the demo's time goes: RICE (tiny profile) on lpr4m-synth, split by phase.

Run as a script (uses the demo's synthetic set, generated into the cache on first use)::

    .venv/bin/python tests/benchmarks/bench_demo_profile.py [--steps 20] [--size default] [--workers 0]
        [--no-eval] [--threads N] [--frame-cache]

or with pytest-benchmark (the generator's ``tiny`` size, 3 steps)::

    .venv/bin/python -m pytest tests/benchmarks/bench_demo_profile.py --benchmark-only --benchmark-enable -s -p no:xdist

Training: ``--steps`` optimizer steps of the demo's model (``make demo``: rice, tiny profile,
seed 0, batch 32) on the demo's data, timed phase by phase in one process after one warm-up
step: ``data`` (the next batch from a DataLoader with ``--workers`` workers: with 0 this is the
CPU time of decoding, sampling, augmenting and collating one batch), ``forward`` (the method's
training losses), ``backward``, ``optimizer`` (gradient clipping, AdamW, schedule). Evaluation:
the demo's evaluation (query and gallery encoding, ranking) with its timings, the data side of
each encoding alone (the same datasets iterated without the model), the metrics with their
bootstrap intervals, and the leaderboard regenerated from a copy of ``results/`` (every
submission re-scored). Numbers are seconds and fractions of the measured total; the machine
may be shared, so read fractions, not absolute times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[2]


def _setup(size: str):
    from benchmark.cli.run_setup import build, data_info, load_splits
    from benchmark.core.config import PROFILES, RunConfig
    from benchmark.core.registry import load_all
    from benchmark.training import distributed as D

    load_all()
    cfg = RunConfig(method="rice", dataset="lpr4m-synth", profile=PROFILES["tiny"], seed=0, synth_size=size)
    env = D.DistEnv(device=torch.device("cpu"))
    t0 = time.perf_counter()
    splits = load_splits(cfg, env)
    load_s = time.perf_counter() - t0
    info, products, cats = data_info(splits, cfg)
    torch.manual_seed(0)
    method = build(cfg, info)
    return cfg, env, splits, method, products, cats, load_s


def profile_training(
    cfg, splits, method, products, cats, steps: int, workers: int, frame_cache: bool = False
) -> dict[str, float]:
    """Seconds per phase summed over ``steps`` optimizer steps (after one warm-up step); with
    ``frame_cache`` the pairs read the decoded-frame cache (built or opened first, not timed)."""
    from benchmark.training.engine import build_optimizer, to_device, warmup_cosine
    from benchmark.training.item_seeding import ItemSeededDataset
    from datasets.torch_data import PairDataset, collate_batch

    tcfg = cfg.profile.train
    pairs = PairDataset(splits.train, cfg.profile.data, products, cats, train=True)
    if frame_cache:
        from datasets import frame_cache as FC

        FC.attach(pairs, f"{splits.name}/{splits.annotation_checksum}/train", num_workers=workers, log=print)
    data = ItemSeededDataset(pairs, cfg.seed)
    sampler = RandomSampler(data, num_samples=(steps + 1) * tcfg.batch_size, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(
        data, batch_size=tcfg.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_batch, drop_last=True
    )
    opt = build_optimizer(method, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(1, steps + 1))
    method.train()
    out: dict[str, float] = defaultdict(float)
    it = iter(loader)
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = to_device(next(it), torch.device("cpu"), cfg.profile.data)  # uint8 pixels -> the float input
        t1 = time.perf_counter()
        loss = sum(method.training_losses(batch).values())
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(method.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        t4 = time.perf_counter()
        if step == 0:
            continue  # warm-up (worker start, first allocations)
        for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
            out[k] += b - a
    del it
    return dict(out)


def _iterate(dataset, batch_size: int, workers: int) -> float:
    from datasets.torch_data import collate_batch

    t0 = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_batch):
        pass
    return time.perf_counter() - t0


def profile_eval(cfg, env, splits, method, workers: int) -> dict[str, float]:
    """Seconds of the evaluation's phases, its data side alone, metrics and the leaderboard."""
    from benchmark.evaluation import evaluate, scoring
    from benchmark.reports.publish import regenerate_leaderboard
    from datasets.torch_data import GalleryDataset, QueryDataset

    out: dict[str, float] = {}
    present = [q for q in splits.queries if not q.missing]
    bs = cfg.profile.eval.batch_size
    out["eval data: queries"] = _iterate(QueryDataset(present, cfg.profile.data), bs, workers)
    out["eval data: gallery"] = _iterate(GalleryDataset(splits.gallery, cfg.profile.data), bs, workers)
    res = evaluate.evaluate(
        method, splits, cfg.profile.data, cfg.profile.eval, env=env, num_workers=workers, show_progress=False
    )
    assert res is not None
    out.update({f"eval {k.removesuffix('_s')}": v for k, v in res.timings.items()})
    t0 = time.perf_counter()
    scoring.metrics_for_ranking(res.ranking, res.index, cfg.profile.eval, seed=cfg.seed)
    out["metrics + bootstrap"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "results", Path(tmp) / "results")
        t0 = time.perf_counter()
        regenerate_leaderboard(Path(tmp) / "results", splits=splits)
        out["leaderboard (re-score all)"] = time.perf_counter() - t0
    return out


def measure(
    steps: int = 20, size: str = "default", workers: int = 0, with_eval: bool = True, frame_cache: bool = False
) -> dict[str, Any]:
    cfg, env, splits, method, products, cats, load_s = _setup(size)
    train = profile_training(cfg, splits, method, products, cats, steps, workers, frame_cache)
    ev = profile_eval(cfg, env, splits, method, workers) if with_eval else {}
    return {
        "load_s": load_s,
        "train": train,
        "eval": ev,
        "steps": steps,
        "batch": cfg.profile.train.batch_size,
        "pairs": len(splits.train),
    }


def report(res: dict[str, Any]) -> str:
    lines = [
        f"torch threads {torch.get_num_threads()}; {res['steps']} steps of {res['batch']} pairs "
        f"({res['pairs']} training pairs: {res['pairs'] // res['batch']} steps an epoch); dataset load {res['load_s']:.2f} s"
    ]
    tot = sum(res["train"].values())
    lines.append(f"training, {tot:.1f} s = {res['steps'] * res['batch'] / tot:.1f} pairs/s:")
    for k, v in res["train"].items():
        lines.append(f"  {k:28s} {v:8.2f} s  {100 * v / tot:5.1f}%  ({1000 * v / res['steps']:.0f} ms/step)")
    if res["eval"]:
        lines.append("evaluation (data rows: the datasets iterated without the model; eval rows include their data):")
        for k, v in res["eval"].items():
            lines.append(f"  {k:28s} {v:8.2f} s")
    return "\n".join(lines)


def test_bench_demo_profile(benchmark) -> None:
    res = benchmark.pedantic(
        measure, kwargs=dict(steps=3, size="tiny", workers=0, with_eval=True), rounds=1, iterations=1
    )
    print("\n" + report(res))
    assert set(res["train"]) == {"data", "forward", "backward", "optimizer"} and all(
        v > 0 for v in res["train"].values()
    )


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", default="default", help="the synthetic set's size (the demo's: default)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: data time is CPU time)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--frame-cache", action="store_true", help="training pairs read the decoded-frame cache")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(report(measure(args.steps, args.size, args.workers, not args.no_eval, args.frame_cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
