"""What the feature cache saves on a repeated evaluation: cold (encode + write) vs warm (read).

Run:  .venv/bin/python -m pytest tests/benchmarks/bench_feature_cache.py --benchmark-only --benchmark-enable -s -p no:xdist

One full :func:`benchmark.evaluation.evaluate.evaluate` of clip-meanpool (tiny profile encoder: 4-layer
width-192 ViT at 112 px, 8 frames per clip) on lpr4m-synth (tiny: 20 queries, 10 gallery
images; ranking, no bootstrap), single-threaded torch as in a CI worker. Because the machine
is shared, each warm round is paired with a cold round run just before it (the benchmark's
untimed ``setup``, into an empty cache folder); ``cold_over_warm`` is the median of the
per-round ratios cold_time / warm_time. Both include everything an evaluation does: the
warm one hashes the weights (the cache key), loads two entries and ranks; the cold one
hashes, decodes and encodes every clip and image, writes two entries and ranks.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmark.core import registry
from benchmark.core.config import PROFILES
from benchmark.core.registry import METHODS
from benchmark.evaluation import evaluate as E
from benchmark.evaluation import feature_cache as fc
from benchmark.training.distributed import DistEnv
from methods.base import DataInfo, build_method

TINY = PROFILES["tiny"]
EVAL = dataclasses.replace(TINY.eval, bootstrap=0)
RESULT: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _single_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def model():
    registry.load_builtin_methods()
    info = DataInfo(num_products=5, num_categories=3, num_frames=TINY.data.num_frames, image_size=TINY.data.image_size)
    torch.manual_seed(0)
    return build_method(METHODS.get("clip-meanpool"), "tiny", info)


def _evaluate(method, splits, root: Path):
    return E.evaluate(
        method, splits, TINY.data, EVAL, env=DistEnv(), show_progress=False, feature_cache=fc.FeatureCache(root)
    )


def test_repeated_evaluation_cold_vs_warm(benchmark, model, synth_lpr4m):
    warm_root = Path(tempfile.mkdtemp(prefix="fcache-warm-"))
    cold_times: list[float] = []
    reference = _evaluate(model, synth_lpr4m, warm_root)  # populates the warm cache

    def cold_round():
        root = Path(tempfile.mkdtemp(prefix="fcache-cold-"))
        try:
            t0 = time.perf_counter()
            out = _evaluate(model, synth_lpr4m, root)
            cold_times.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        assert torch.equal(out.ranking.index, reference.ranking.index)

    try:
        out = benchmark.pedantic(
            _evaluate, args=(model, synth_lpr4m, warm_root), setup=cold_round, rounds=5, warmup_rounds=0
        )
    finally:
        shutil.rmtree(warm_root, ignore_errors=True)
    assert torch.equal(out.ranking.index, reference.ranking.index)
    warm_times = benchmark.stats.stats.data
    ratios = [c / w for c, w in zip(cold_times[-len(warm_times) :], warm_times)]
    RESULT.update(
        cold_s=statistics.median(cold_times), warm_s=statistics.median(warm_times), ratio=statistics.median(ratios)
    )
    benchmark.extra_info.update(RESULT)
    print(
        f"\nevaluation with the feature cache: cold {RESULT['cold_s']:.3f} s, warm {RESULT['warm_s']:.3f} s, "
        f"cold/warm = {RESULT['ratio']:.1f}x (median of {len(ratios)} paired rounds)"
    )
