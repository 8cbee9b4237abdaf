"""Shared pieces of the ``prepare`` tests: a hand-made LPR4M release folder (URL lists and
annotation files, nothing downloaded) and the ``prepare`` command line for ``lpr4m``."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.cli.main import main

LIVE = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
CLIP = f"{LIVE}-1667916122888-1667916252390"
TEST_CLIP = f"{LIVE}-1667916300000-1667916330000"
IMAGE = "fff8b484-2eeb-11ee-b7bb-77cb20e634dc"
BASE = "https://cdn.invalid/bs2/"


def hand_made_release(tmp_path: Path) -> Path:
    """A minimal, sound release folder: four URL lists, the test JSON files, one training part."""
    urls = tmp_path / "urls"
    urls.mkdir()
    train_frames = [f"{CLIP}-{i:04d}" for i in range(30)]
    test_frames = [f"{TEST_CLIP}-{i:04d}" for i in range(12)]
    (urls / "training_frame_url_full_30.txt").write_text("".join(f"{BASE}{f}.jpg\n" for f in train_frames))
    (urls / "training_image_url_full_1.txt").write_text(f"{BASE}{IMAGE}.jpg\n")
    (urls / "test_frame_url_12.txt").write_text("".join(f"{BASE}{f}.jpg\n" for f in test_frames))
    (urls / "test_image_url_1.txt").write_text(f"{BASE}{IMAGE}.jpg\n")
    (urls / "test_videoid_to_gtimage_1.json").write_text(json.dumps({TEST_CLIP: [IMAGE]}, indent=1))
    (urls / "test_liveid_to_gallery_1.json").write_text(json.dumps({LIVE: [IMAGE]}))
    (urls / "test_frameid2gtbox_1_1.json").write_text(json.dumps({test_frames[0]: [[1, 2, 30, 40]]}))
    row = [CLIP, json.dumps(train_frames), "[]", IMAGE, "a coat", "3", "coats", "asr text", "s", "m", "f"]
    (urls / "training_videoinfo_full_part_00.txt").write_text("\t".join(row) + "\n")
    return urls


def prepare(urls: Path, out: Path, *extra: str) -> int:
    """``run_benchmark.py prepare --dataset lpr4m --urls URLS --out OUT EXTRA...``; its exit code."""
    return main(["prepare", "--dataset", "lpr4m", "--urls", str(urls), "--out", str(out), *extra])
