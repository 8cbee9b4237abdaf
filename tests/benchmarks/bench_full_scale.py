"""Full-scale data paths side by side (pytest-benchmark, one run): prepare time, disk and files per
1,000 clips for full vs reduced lists and files vs shards, and training pairs per CPU-second
streamed from shards vs read from files, on a synthetic release with the real release's clip lengths.

Run:  .venv/bin/python -m pytest tests/benchmarks/bench_full_scale.py --benchmark-only -s -p no:xdist
      (``LPR_BENCH_LONG_RELEASE=DIR`` reuses a release written by ``synth --size tiny-long --release
      --original-size 256x455``; otherwise one is generated, about two minutes).

The release is lpr4m-synth ``tiny-long`` (40 training clips, 20 test clips, 20-160 frames a clip:
the real release has ~118 a training clip, ~25 a test clip), frames written at 256 x 455 (the
size img2dataset stores LPR4M's 540 x 960 frames at). ``prepare --fast`` (img2dataset's own
resizer, no HTTP: the CPU part of a download) makes four roots: full lists or ``--frames-per-clip
10``, files or shards; per root: seconds (one process), bytes on disk (allocated blocks, as ``du``
counts them) and files, each scaled to 1,000 clips (clips = training + test clips; linear scaling
stated, not measured at 1,000). Loading: the paper profile's data settings (T = 10, 224 px crop of
a 256 resize) on the reduced files root (map-style, ``PairDataset`` through ``ItemSeededDataset``,
as training reads it) and the reduced shards root (``ShardPairStream``, one worker), pairs per
CPU-second of this process (``time.process_time``), the two measured in alternating rounds and
reported as a ratio. The synthetic frames are smoother than video frames: their JPEGs are
smaller, so disk figures here are a floor; docs/full-scale.md scales the release with the
README's bytes instead.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
import torch

from benchmark.core.config import get_profile
from benchmark.training.item_seeding import ItemSeededDataset
from datasets.lpr4m import load_lpr4m
from datasets.prepare_lpr4m import prepare
from datasets.shard_stream import ShardPairStream
from datasets.torch_data import PairDataset

ROOTS = {
    "full-files": (0, "files"),
    "reduced-files": (10, "files"),
    "full-shards": (0, "webdataset"),
    "reduced-shards": (10, "webdataset"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    given = os.environ.get("LPR_BENCH_LONG_RELEASE")
    if given:
        return Path(given)
    from datasets.synthetic.generate import generate
    from datasets.synthetic.release import write_release

    base = tmp_path_factory.mktemp("long")
    root = generate("lpr4m", base / "gen", seed=0, size="tiny-long", workers=1)
    write_release(root, base / "rel", base_url="http://127.0.0.1:9/", original_size=(256, 455))
    return base / "rel"


def _disk(root: Path) -> tuple[int, int]:
    blocks = files = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            blocks += st.st_blocks * 512
            files += 1
    return blocks, files


def measure_prepare(release: Path, out: Path) -> dict[str, dict[str, float]]:
    res = {}
    for name, (t, fmt) in ROOTS.items():
        t0 = time.perf_counter()
        r = prepare(release / "urls", out / name, fast=True, processes=1, frames_per_clip=t, fmt=fmt, shard_size=1000)
        seconds = time.perf_counter() - t0
        clips = len(
            {
                u.rsplit("/", 1)[1].rsplit("-", 1)[0]
                for p in ("training_frame_url", "test_frame_url")
                for u in open(next((release / "urls").glob(f"{p}_*.txt"))).read().split()
            }
        )
        urls = sum(c["urls"] for c in r.report["lists"].values())
        disk, files = _disk(out / name)
        k = 1000 / clips
        res[name] = {"urls": urls * k, "seconds": seconds * k, "GB": disk * k / 1e9, "files": files * k}
    return res


def _pairs_cpu_s(make_iter, n: int) -> float:
    t0 = time.process_time()
    got = 0
    for _ in make_iter():
        got += 1
        if got == n:
            break
    return got / (time.process_time() - t0)


def measure_loading(out: Path, rounds: int = 3) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = get_profile("paper").data
    files, shards = load_lpr4m(out / "reduced-files"), load_lpr4m(out / "reduced-shards")
    products = {p: i for i, p in enumerate(sorted({p.product_id for p in files.train}))}
    ds_files = ItemSeededDataset(PairDataset(files.train, cfg, products, {}, train=True), 0)
    ds_shards = ItemSeededDataset(PairDataset(shards.train, cfg, products, {}, train=True), 0)
    n = len(files.train)
    stream = ShardPairStream(ds_shards, shards.train, cfg.num_frames, seed=0, epoch=0)
    rf, rs = [], []
    for _ in range(rounds):
        rf.append(_pairs_cpu_s(lambda: (ds_files[i] for i in range(n)), n))
        rs.append(_pairs_cpu_s(lambda: iter(stream), n))
    return {
        "files_pairs_per_cpu_s": statistics.median(rf),
        "shards_pairs_per_cpu_s": statistics.median(rs),
        "shards_vs_files": statistics.median(s / f for s, f in zip(rs, rf)),
    }


def table(prep: dict[str, dict[str, float]], load: dict[str, float]) -> str:
    lines = ["per 1,000 clips     URLs      prepare s   disk GB   files"]
    for name, r in prep.items():
        lines.append(f"{name:15s} {r['urls']:10.0f} {r['seconds']:10.1f} {r['GB']:9.3f} {r['files']:9.0f}")
    lines.append(
        f"training pairs per CPU-second (T=10, 256x455 frames): files {load['files_pairs_per_cpu_s']:.1f}, "
        f"shards {load['shards_pairs_per_cpu_s']:.1f}, shards / files {load['shards_vs_files']:.2f}"
    )
    return "\n".join(lines)


def test_bench_full_scale(benchmark, release, tmp_path) -> None:
    def run():
        prep = measure_prepare(release, tmp_path)
        return prep, measure_loading(tmp_path)

    prep, load = benchmark.pedantic(run, rounds=1, iterations=1)
    print("\n" + table(prep, load))
    assert prep["reduced-files"]["urls"] < prep["full-files"]["urls"]
    assert load["shards_pairs_per_cpu_s"] > 0 and load["files_pairs_per_cpu_s"] > 0
