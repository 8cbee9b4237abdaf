"""``prepare --frames-per-clip T``: reduced URL lists hold exactly the frames read at T, the root
records T and the rule, a run at another T that needs a missing frame refuses in one line, and a
reduced root loads the very items a full root loads (issue 36, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli.main import main
from benchmark.core.config import get_profile
from datasets.errors import DataError
from datasets.frame_selection import FRAME_RULE, clip_positions
from datasets.lpr4m import load_lpr4m
from datasets.records import ClipSource
from datasets.torch_data import PairDataset, QueryDataset
from tests.prepare_helpers import CLIP, TEST_CLIP, hand_made_release, prepare

TRAIN_AT_10 = (0, 3, 6, 9, 12, 16, 19, 22, 25, 29)  # linspace(0, 29, 10) truncated, worked by hand
TEST_AT_10 = (0, 1, 2, 3, 4, 6, 7, 8, 9, 11)  # linspace(0, 11, 10)


def _with_www(tmp_path: Path) -> Path:
    """The hand-made release of tests/prepare_helpers plus www/ holding a small JPEG per URL."""
    urls = hand_made_release(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    for lst in urls.glob("*_url_*.txt"):
        for url in lst.read_text().split():
            Image.fromarray(np.full((32, 24, 3), 120, np.uint8)).save(www / url.rsplit("/", 1)[1], "JPEG")
    return urls


def _prepare(urls: Path, out: Path, *extra: str) -> None:
    assert prepare(urls, out, "--fast", "--processes", "1", *extra) == 0


def test_reduced_lists_hold_exactly_the_frames_read_at_t(tmp_path):
    urls = _with_www(tmp_path)
    out = tmp_path / "root"
    _prepare(urls, out)  # the default: --frames-per-clip 10
    report = json.loads((out / "prepare_report.json").read_text())
    assert (report["frames_per_clip"], report["frame_rule"], report["format"]) == (10, FRAME_RULE, "files")
    assert report["lists"]["training_frame_url"] == {"urls": 10, "downloaded": 10, "failed": 0, "listed": 30}
    assert report["lists"]["test_frame_url"] == {"urls": 10, "downloaded": 10, "failed": 0, "listed": 12}
    (train_list,) = (out / "download" / "reduced").glob("training_frame_url_*.txt")
    assert train_list.name == "training_frame_url_10.txt"
    assert [u.rsplit("/", 1)[1] for u in train_list.read_text().split()] == [f"{CLIP}-{i:04d}.jpg" for i in TRAIN_AT_10]
    on_disk = sorted(p.stem for p in (out / "frames" / CLIP).glob("*.jpg"))
    assert on_disk == [f"{CLIP}-{i:04d}" for i in TRAIN_AT_10]
    assert sorted(p.stem for p in (out / "frames" / TEST_CLIP).glob("*.jpg")) == [
        f"{TEST_CLIP}-{i:04d}" for i in TEST_AT_10
    ]
    s = load_lpr4m(out)
    (pair,) = s.train
    assert (pair.clip.annotated_frames, pair.clip.prepared_frames, pair.clip.frame_positions) == (30, 10, TRAIN_AT_10)
    assert s.queries[0].clip.annotated_frames == 12 and s.queries[0].clip.frame_positions == TEST_AT_10
    # T=4 reads positions 0, 9, 19, 29 of 30: all held, so a T=4 run works on this root, on those frames
    assert [pair.clip.frame_paths[i].stem[-4:] for i in clip_positions(pair.clip, 4)] == [
        "0000",
        "0009",
        "0019",
        "0029",
    ]


def test_a_run_needing_a_frame_the_root_lacks_refuses_in_one_line(tmp_path, capsys):
    urls = _with_www(tmp_path)
    out = tmp_path / "root"
    _prepare(urls, out, "--frames-per-clip", "3")  # holds 0, 14, 29; the tiny profile (T=4) reads 9
    capsys.readouterr()
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m",
            "--data-root",
            str(out),
            "--profile",
            "tiny",
            "--epochs",
            "0",
            "--device",
            "cpu",
            "--output-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(tmp_path / "res"),
            "--no-leaderboard",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1
    assert err[0] == (
        f"error: clip {CLIP}: this run (T=4) reads frame 9 of its 30 annotated frames, which this root "
        f"lacks: it was prepared with --frames-per-clip 3; run at T=3 or prepare again with "
        f"--frames-per-clip 4 (0: every frame)"
    )


def test_a_failed_frame_of_a_reduced_clip_is_left_out_after_the_positions_are_chosen():
    held = (0, 3, 9, 12, 16, 19, 22, 25, 29)  # TRAIN_AT_10 but position 6, whose download failed
    paths = tuple(Path(f"/r/{CLIP}-{i}.jpg") for i in held)
    clip = ClipSource(clip_id=CLIP, frame_paths=paths, annotated_frames=30, prepared_frames=10, frame_positions=held)
    assert clip_positions(clip, 10) == list(range(9))  # nine frames, the failed one left out
    assert clip_positions(clip, 4) == [0, 2, 5, 8]  # positions 0, 9, 19, 29 of the annotated list
    with pytest.raises(DataError, match=r"reads frame 1 of its 30 annotated frames"):
        clip_positions(clip, 30)


def _items(dataset, n: int) -> list[dict]:
    out = []
    for i in range(n):
        torch.manual_seed(1000 + i)  # the same draws (tail cut, crop, flip) for both roots
        out.append(dataset[i])
    return out


def _same(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        for key in ("frames", "frame_mask", "boxes", "box_mask", "image"):
            if key in x:
                assert torch.equal(x[key], y[key]), key


def test_full_and_reduced_roots_load_identical_items(tiny_release, tmp_path):
    full, reduced = tmp_path / "full", tmp_path / "reduced"
    _prepare(tiny_release / "urls", full, "--frames-per-clip", "0", "--processes", "2")
    _prepare(tiny_release / "urls", reduced, "--frames-per-clip", "4", "--processes", "2")
    n_full = sum(1 for _ in (full / "frames").rglob("*.jpg"))
    n_reduced = sum(1 for _ in (reduced / "frames").rglob("*.jpg"))
    assert n_reduced < n_full
    s_full, s_red = load_lpr4m(full), load_lpr4m(reduced)
    cfg = get_profile("tiny").data  # T = 4
    products = {p: i for i, p in enumerate(sorted({p.product_id for p in s_full.train}))}
    train_full = PairDataset(s_full.train, cfg, products, {}, train=True)
    train_red = PairDataset(s_red.train, cfg, products, {}, train=True)
    _same(_items(train_full, len(train_full)), _items(train_red, len(train_red)))
    _same(_items(QueryDataset(s_full.queries, cfg), 20), _items(QueryDataset(s_red.queries, cfg), 20))
