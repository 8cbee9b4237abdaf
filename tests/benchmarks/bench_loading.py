"""Clip loading throughput vs raw JPEG decoding of the same files (pytest-benchmark, one run).

Run:  .venv/bin/python -m pytest tests/benchmarks/bench_loading.py --benchmark-only -s -p no:xdist

For each frame size, ``raw`` decodes the 10 JPEG frames of every clip with
``torchvision.io.decode_jpeg`` at full size (no resize, no normalisation): the baseline.
``test_query_loading[<size>-<backend>]`` builds the full ``QueryDataset`` item (sampling, decode,
resize 256, center crop 224, CLIP normalisation, box transform, padding) with each JPEG backend.
Because the machine is shared, every loading round is paired with a raw-decode round of the same
clips run just before it (the benchmark's untimed ``setup``); ``ratio_vs_raw`` is the median of
the per-round ratios raw_time / load_time, i.e. loading throughput as a fraction of raw decode
throughput. The summary (printed at the end with ``-s``) lists clips/s and that ratio; the aim
is >= 70% for the default backend ``auto``.
Frames: 720x1280 (portrait livestream frames, as LPR4M's) and 320x240 (synthetic-sized),
textured content (smooth noise + grain) so that entropy decoding costs what it costs on video.
Single-threaded torch, as in a DataLoader worker.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_jpeg

from benchmark.core.config import PROFILES
from datasets import decoding
from datasets.records import ClipSource, Query
from datasets.torch_data import QueryDataset

NUM_CLIPS = 12
NUM_FRAMES = 10
SIZES = {"720x1280": (720, 1280), "320x240": (320, 240)}
RESULTS: dict[tuple[str, str], float] = {}
RATIOS: dict[tuple[str, str], float] = {}


def _write_frame(path: Path, w: int, h: int, rng: np.random.Generator) -> None:
    base = (rng.random((max(2, h // 16), max(2, w // 16), 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = img + rng.integers(-10, 11, size=img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, list[Query]]:
    rng = np.random.default_rng(0)
    out = {}
    for name, (w, h) in SIZES.items():
        root = tmp_path_factory.mktemp(name)
        queries = []
        for c in range(NUM_CLIPS):
            paths = []
            for k in range(NUM_FRAMES):
                p = root / f"{c}-{k}.jpg"
                _write_frame(p, w, h, rng)
                paths.append(p)
            boxes = {k: (w * 0.2, h * 0.3, w * 0.6, h * 0.7) for k in range(0, NUM_FRAMES, 2)}
            queries.append(
                Query(
                    query_id=str(c),
                    clip=ClipSource(clip_id=str(c), frame_paths=tuple(paths), boxes=boxes),
                    gt_ids=("g",),
                )
            )
        out[name] = queries
    return out


@pytest.fixture(autouse=True)
def _single_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _raw(queries: list[Query]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for q in queries:
            for p in q.clip.frame_paths:
                decode_jpeg(torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8))


@pytest.mark.parametrize("size", list(SIZES))
def test_raw_decode(benchmark, clips, size):
    queries = clips[size]
    benchmark.pedantic(_raw, args=(queries,), rounds=7, warmup_rounds=1)
    RESULTS[(size, "raw")] = NUM_CLIPS / benchmark.stats.stats.median
    benchmark.extra_info["clips_per_s"] = RESULTS[(size, "raw")]


@pytest.mark.parametrize("backend", ["auto", "pil-draft", "torchvision"])
@pytest.mark.parametrize("size", list(SIZES))
def test_query_loading(benchmark, clips, size, backend, monkeypatch):
    monkeypatch.setenv("LPR_BENCH_JPEG_BACKEND", backend)
    assert decoding.jpeg_backend() == backend
    queries = clips[size]
    ds = QueryDataset(queries, PROFILES["paper"].data)
    raw_times: list[float] = []

    def paired_raw():
        t0 = time.perf_counter()
        _raw(queries)
        raw_times.append(time.perf_counter() - t0)

    def load_all():
        for i in range(len(ds)):
            item = ds[i]
        return item

    item = benchmark.pedantic(load_all, setup=paired_raw, rounds=7, warmup_rounds=1)
    assert item["frames"].shape == (10, 3, 224, 224) and bool(item["frame_mask"].all())
    load_times = benchmark.stats.stats.data
    ratios = [r / t for r, t in zip(raw_times[-len(load_times) :], load_times)]
    RESULTS[(size, backend)] = NUM_CLIPS / benchmark.stats.stats.median
    RATIOS[(size, backend)] = statistics.median(ratios)
    benchmark.extra_info["clips_per_s"] = RESULTS[(size, backend)]
    benchmark.extra_info["raw_clips_per_s_paired"] = NUM_CLIPS / statistics.median(raw_times)
    benchmark.extra_info["ratio_vs_raw"] = RATIOS[(size, backend)]


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if not RESULTS:
        return
    print("\nclip loading throughput (median clips/s; 10 frames -> 224 px) and paired ratio to raw JPEG decode")
    for size in SIZES:
        if (size, "raw") in RESULTS:
            print(f"  {size:9s} {'raw':12s} {RESULTS[(size, 'raw')]:8.1f} clips/s")
        for name in ("auto", "pil-draft", "torchvision"):
            if (size, name) in RESULTS:
                print(
                    f"  {size:9s} {name:12s} {RESULTS[(size, name)]:8.1f} clips/s  {100 * RATIOS[(size, name)]:6.1f}% of raw (paired)"
                )
