"""The colour-histogram calibration baseline: R@1 within gallery groups on toy images, near chance
on whole synthetic frames and better inside the boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.lpr4m import load_lpr4m
from datasets.records import ClipSource, DatasetSplits, GalleryItem, Query
from datasets.synthetic.calibration import color_histogram_r1


def _solid(path: Path, rgb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((32, 32, 3), 250, np.uint8)
    arr[6:26, 6:26] = rgb
    Image.fromarray(arr).save(path, quality=95)
    return path


def test_color_histogram_r1_ranks_by_colour_within_groups(tmp_path):
    colours = {"r": (200, 30, 30), "g": (30, 180, 40), "b": (30, 40, 200), "y": (230, 210, 40)}
    gallery = [
        GalleryItem(k, _solid(tmp_path / f"g/{k}.jpg", c), group="A" if k in "rg" else "B") for k, c in colours.items()
    ]

    def query(qid, colour, gt, group, scale):
        frames = tuple(_solid(tmp_path / f"q/{qid}-{i}.jpg", colours[colour]) for i in range(3))
        return Query(qid, ClipSource(qid, frame_paths=frames), (gt,), group=group, attributes={"scale": scale})

    queries = [
        query("q1", "r", "r", "A", "large"),
        query("q2", "g", "g", "A", "large"),
        query("q3", "b", "b", "B", "small"),
        query("q4", "b", "y", "B", "small"),
    ]  # q4 shows blue but its ground truth is yellow: a miss
    queries.append(Query("q5", ClipSource("q5"), ("r",), group="A", attributes={"scale": "small"}, missing=True))
    splits = DatasetSplits("toy", tmp_path, [], queries, gallery, "0")
    out = color_histogram_r1(splits, ks=(1, 2))
    assert out["r1"] == pytest.approx(60.0) and out["r2"] == pytest.approx(80.0)  # q5 is a miss even at k=2
    assert out["chance_r1"] == pytest.approx(50.0) and out["num_queries"] == 5
    assert out["per_attribute"]["scale"] == {
        "large": {"r1": 100.0, "n": 2},
        "small": {"r1": pytest.approx(100 / 3), "n": 3},
    }


def test_color_histogram_is_near_chance_on_whole_frames_and_better_with_boxes(synth_roots):
    splits = load_lpr4m(synth_roots["release"])
    whole = color_histogram_r1(splits)
    boxed = color_histogram_r1(splits, use_boxes=True)
    assert whole["num_queries"] == 20 and set(whole["per_attribute"]) == {
        "category",
        "scale",
        "duration",
        "num_products",
    }
    assert boxed["r1"] > whole["r1"]
