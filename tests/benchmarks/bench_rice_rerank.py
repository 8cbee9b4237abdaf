"""RICE's second stage: PMD re-scoring of every gallery pair vs re-ranking the ICL top K.

Run (pytest-benchmark, one run, the table printed at the end)::

    .venv/bin/python -m pytest tests/benchmarks/bench_rice_rerank.py --benchmark-only --benchmark-enable -s -p no:xdist

or as a script (same measurement, more options)::

    .venv/bin/python tests/benchmarks/bench_rice_rerank.py [--size default] [--queries 100] [--steps 60]
        [--checkpoint RUN/last.pt] [--grouped] [--set KEY=VALUE ...] [--threads N]

What it does, once:

1. loads ``lpr4m-synth`` (``--size``; generated into the cache on first use) and either loads
   a RICE checkpoint or trains the tiny-profile RICE for ``--steps`` optimizer steps
   (batch 16) so that both stages rank better than chance;
2. encodes the first ``--queries`` test clips and the whole gallery once, keeping PMD's tokens;
3. ranks them with :func:`benchmark.evaluation.retrieval.rank` in each mode: ``none`` (ICL cosine only),
   ``all`` (PMD scores every pair of the query's gallery group) and ``topk`` with K = 10, 20,
   50 (PMD re-orders the cosine top K, the rest keeps the cosine order).

Reported per mode: pairs PMD scored, wall time of ranking + scoring, R1, "R1 retained"
(R1 / R1 of ``all``; meaningful only for a trained model: pass ``--checkpoint``, or set
``LPR_BENCH_RICE_CHECKPOINT`` for the pytest run, since a few dozen steps leave PMD close to
chance on a gallery of hundreds), top-1 agreement with ``all`` (fraction of queries whose first image is
the same) and the speed-up over ``all`` (wall-time ratio, measured in the same run).

The synthetic livestreams have ~11 gallery images each, smaller than every K here, so by
default the gallery is one global group (all test images, several hundred), closer to
LPR4M's ~600 images per livestream; ``--grouped`` keeps the per-livestream groups.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

KS = (10, 20, 50)


@dataclasses.dataclass
class Row:
    mode: str
    pairs: int
    seconds: float
    r1: float
    retained: float = float("nan")
    agree: float = float("nan")
    speedup: float = float("nan")


def _load_or_train(size: str, steps: int, checkpoint: Optional[Path], overrides: dict[str, Any], workers: int):
    from benchmark.cli.run_setup import SYNTH_DATA_SEED, data_info
    from benchmark.core.config import RunConfig, get_profile
    from benchmark.core.registry import DATASETS, load_all
    from benchmark.training import engine
    from benchmark.training.checkpoint import load_model_weights
    from benchmark.training.distributed import DistEnv
    from benchmark.training.seeding import seed_everything
    from datasets.torch_data import PairDataset
    from methods.base import build_method
    from methods.rice import Rice

    load_all()
    splits = DATASETS.get("lpr4m-synth")(None, size=size, seed=SYNTH_DATA_SEED)
    profile = get_profile("tiny")
    cfg = RunConfig(method="rice", dataset="lpr4m-synth", profile=profile, method_overrides=overrides, synth_size=size)
    info, products, categories = data_info(splits, cfg)
    seed_everything(0)
    method = build_method(Rice, "tiny", info, overrides)
    env = DistEnv()
    if checkpoint is not None:
        load_model_weights(method, checkpoint)
    else:
        train_cfg = dataclasses.replace(profile.train, batch_size=16, max_steps=steps, epochs=100)
        pairs = PairDataset(splits.train, profile.data, products, categories, train=True)
        with tempfile.TemporaryDirectory() as tmp:
            engine.train(method, pairs, train_cfg, env=env, run_dir=Path(tmp), num_workers=workers, show_progress=False)
    return method.eval(), splits, profile, env


def measure(
    size: str = "default",
    queries: int = 100,
    steps: int = 60,
    checkpoint: Optional[Path] = None,
    grouped: bool = False,
    overrides: Optional[dict[str, Any]] = None,
    workers: int = 0,
) -> list[Row]:
    """The whole benchmark; returns one row per mode (``all`` first)."""
    from benchmark.evaluation import retrieval, scoring
    from benchmark.evaluation.evaluate import extract
    from datasets.torch_data import GalleryDataset, QueryDataset

    method, splits, profile, env = _load_or_train(size, steps, checkpoint, dict(overrides or {}), workers)
    if not method.supports_rerank:
        raise SystemExit("this RICE variant has no PMD (pmd=false): nothing to re-rank")
    present = [q for q in splits.queries if not q.missing][:queries]
    splits = dataclasses.replace(splits, queries=present, grouped=grouped)
    index = scoring.SplitIndex.from_splits(splits)
    common = dict(env=env, batch_size=32, num_workers=workers, keep_extras=True, show_progress=False)
    q_enc = extract(method, QueryDataset(present, profile.data), "query", **common)
    g_enc = extract(method, GalleryDataset(splits.gallery, profile.data), "gallery", **common)
    gt = index.gt_index()

    def score_pairs(q_idx: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in range(0, q_idx.numel(), 256):
                out.append(method.rerank(q_enc.select(q_idx[s : s + 256]), g_enc.select(g_idx[s : s + 256])).float())
        return torch.cat(out)

    def run(mode: str, k: int = 20) -> tuple[retrieval.Ranking, float]:
        t0 = time.perf_counter()
        ranking = retrieval.rank(
            q_enc.embedding,
            g_enc.embedding,
            index.query_groups,
            index.gallery_groups,
            k=10,
            gt_index=gt,
            query_valid=index.valid,
            score_pairs=score_pairs if mode != "none" else None,
            mode=mode,
            rerank_topk=k,
        )
        return ranking, time.perf_counter() - t0

    def r1(ranking: retrieval.Ranking) -> float:
        hit = ((ranking.gt_rank == 1).any(dim=1)).float()
        return 100.0 * float(hit.mean())

    full, full_s = run("all")
    rows = [Row("all", full.pairs_scored, full_s, r1(full))]
    for mode, k in [("topk", k) for k in KS] + [("none", 0)]:
        ranking, secs = run(mode, k)
        rows.append(Row(f"top{k}" if mode == "topk" else "none (ICL)", ranking.pairs_scored, secs, r1(ranking)))
        rows[-1].agree = float((ranking.index[:, 0] == full.index[:, 0]).float().mean())
    base = rows[0]
    for row in rows:
        row.retained = row.r1 / base.r1 if base.r1 > 0 else float("nan")
        row.speedup = base.seconds / row.seconds if row.seconds > 0 else float("inf")
    rows[0].agree = 1.0
    return rows


def table(rows: list[Row], note: str = "") -> str:
    from tabulate import tabulate

    body = [
        [r.mode, r.pairs, f"{r.seconds:.2f}", f"{r.speedup:.1f}x", f"{r.r1:.1f}", f"{r.retained:.3f}", f"{r.agree:.3f}"]
        for r in rows
    ]
    head = ["mode", "pairs scored", "wall s", "speed-up vs all", "R1 %", "R1 retained", "top-1 = all"]
    return (note + "\n" if note else "") + tabulate(body, headers=head, tablefmt="github")


def test_bench_rice_rerank(benchmark) -> None:
    ckpt = os.environ.get("LPR_BENCH_RICE_CHECKPOINT")
    kwargs = dict(size="default", queries=50, steps=30, checkpoint=Path(ckpt) if ckpt else None)
    rows = benchmark.pedantic(measure, kwargs=kwargs, rounds=1, iterations=1)
    print(
        "\n"
        + table(
            rows,
            f"RICE PMD re-ranking, lpr4m-synth default, 50 queries, global gallery, "
            f"{'checkpoint ' + ckpt if ckpt else '30 training steps'}",
        )
    )
    assert rows[0].mode == "all" and rows[0].pairs > rows[1].pairs > 0
    assert [r.pairs for r in rows[1:4]] == sorted(r.pairs for r in rows[1:4])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="default", choices=("tiny", "default"))
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--grouped", action="store_true", help="rank within each livestream's gallery")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    rows = measure(args.size, args.queries, args.steps, args.checkpoint, args.grouped, overrides, args.num_workers)
    note = (
        f"RICE PMD re-ranking on lpr4m-synth {args.size}, {args.queries} queries, "
        f"{'per-livestream' if args.grouped else 'global'} gallery, torch threads {torch.get_num_threads()}"
    )
    print(table(rows, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
