"""The LPR4M loader on annotation files typed by hand after the official sources, not by our generator.

``tests/fixtures/lpr4m_official/`` (see its README.md) follows the dataset README of
github.com/adxcreative/RICE (file names with counts, the ten training part files and their column
order, the sample frame URL, the img2dataset sidecar JSON, a box file holding only boxed frames)
and the official code of github.com/deepalchemist/crossview-semantic-alignment (LPR750K's
``training_videoinfo_641821.txt`` beside ``training_videoinfo_val.txt``, ``query_tenframes.json``,
``gallery_main.txt`` with several images of one product, ``lpr_eval.py`` dividing by every query
of ``test_videoid_to_gtimage``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core.config import DataConfig
from datasets import faults as F
from datasets.faults import Faults
from datasets.lpr4m import load_lpr4m, read_lpr4m
from datasets.torch_data import load_clip

FIXTURES = Path(__file__).parent / "fixtures" / "lpr4m_official"
LIVE = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
C1 = f"{LIVE}-1667916122888-1667916252390"  # the README's sample clip
C2 = f"{LIVE}-1667916300000-1667916330000"
C3 = f"{LIVE}-1667916400000-1667916420000"  # in the ground truth, no frame in the frame list
COAT = "fff8b484-2eeb-11ee-b7bb-77cb20e634dc"  # the README's sample shop image id


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    shutil.copytree(FIXTURES / "release", root)
    return root


@pytest.fixture
def l750k(tmp_path: Path) -> Path:
    root = tmp_path / "lpr750k"
    shutil.copytree(FIXTURES / "lpr750k", root)
    return root


def _jpeg(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, dtype=np.uint8)).save(path, "JPEG", quality=90)


def test_query_frames_come_from_the_frame_url_list_not_the_box_file(release):
    s = load_lpr4m(release)
    assert [q.query_id for q in s.queries] == [C1, C2, C3]  # every query of the ground-truth file
    q1, q2, q3 = s.queries
    # 4 frames from the URL list (0010 after 0002: numeric order), although the box file keys only 3
    assert [p.name for p in q1.clip.frame_paths] == [f"{C1}-{i}.jpg" for i in ("0000", "0001", "0002", "0010")]
    assert q1.clip.frame_paths[0] == release / "frames" / C1 / f"{C1}-0000.jpg"
    # boxes from the box file where present: a list of boxes gives its first, a bare box is one box
    assert dict(q1.clip.boxes) == {
        1: (120.0, 300.0, 420.0, 700.0),
        2: (10.0, 20.0, 200.0, 300.0),
        3: (100.0, 200.0, 300.0, 500.0),
    }
    assert q1.clip.box_space == "original" and q1.clip.asr.startswith("宝宝们")
    # a clip with no box at all still has its frames
    assert (
        len(q2.clip.frame_paths) == 3
        and dict(q2.clip.boxes) == {}
        and q2.gt_ids == ("0a1b2c3d-2eeb-11ee-b7bb-77cb20e634dc", "5e6f7a8b-2eeb-11ee-b7bb-77cb20e634dc")
    )
    # a query with no frame is kept and scored as a miss, not dropped from the denominator
    assert q3.missing and q3.clip.frame_paths == () and q3.gt_ids == (COAT,)
    assert [g.image_id for g in s.gallery][:2] == [COAT, "0a1b2c3d-2eeb-11ee-b7bb-77cb20e634dc"]
    assert s.gallery[0].title == "秋冬新款外套 women coat" and s.gallery[3].title == ""


def test_query_without_frames_is_counted(release):
    faults = Faults(strict=False)
    s = read_lpr4m(release, faults)
    assert sum(q.missing for q in s.queries) == 1
    assert (
        faults.counts[F.EMPTY_CLIP] == 1 and "1 of 3 queries have no frame" in faults.examples[F.EMPTY_CLIP][0].message
    )


def test_without_a_url_list_the_frames_on_disk_are_the_clip(release):
    with_list = load_lpr4m(release).annotation_checksum
    (release / "annotations" / "test_frame_url_7.txt").unlink()
    for i in ("0000", "0002", "0010"):
        _jpeg(release / "frames" / C1 / f"{C1}-{i}.jpg", (256, 455))
    s = load_lpr4m(release)
    q1 = s.queries[0]
    # the sidecar .json files beside the frames are not frames; 0001 (boxed, not downloaded) is absent
    assert [p.stem[-4:] for p in q1.clip.frame_paths] == ["0000", "0002", "0010"]
    assert dict(q1.clip.boxes) == {1: (10.0, 20.0, 200.0, 300.0), 2: (100.0, 200.0, 300.0, 500.0)}
    assert s.queries[1].missing and s.queries[2].missing
    assert s.annotation_checksum != with_list  # the frame list is evaluation content: it is hashed


def test_ten_training_part_files_are_one_list_and_rows_without_boxes_are_valid(release):
    s = load_lpr4m(release)
    assert len(s.train) == 11
    assert [p.image_id for p in s.train][:3] == [
        "1a2b3c4d-2eeb-11ee-b7bb-77cb20e63400",
        COAT,
        "1a2b3c4d-2eeb-11ee-b7bb-77cb20e63401",
    ]
    assert s.train[-1].image_id == "1a2b3c4d-2eeb-11ee-b7bb-77cb20e63409"  # part 09 last
    assert all(p.clip.boxes == {} for i, p in enumerate(s.train) if i != 1)  # "[]": no boxes, not malformed
    boxed = s.train[1]
    assert len(boxed.clip.frame_paths) == 4 and dict(boxed.clip.boxes) == {
        1: (60.0, 480.0, 300.0, 900.0)
    }  # [0,0,0,0] = none
    assert dict(boxed.attributes) == {
        "category": "女装",
        "scale": "small",
        "duration": "long",
        "num_products": "single",
    }
    assert dict(s.train[0].attributes) == {
        "category": "category 0",
        "scale": "small",
        "duration": "medium",
        "num_products": "many",
    }
    assert s.train[0].image_path == release / "images" / "1a2b3c4d-2eeb-11ee-b7bb-77cb20e63400.jpg"


def test_a_single_training_list_beside_the_parts_is_ambiguous(release):
    (release / "annotations" / "training_videoinfo_full_4013617.txt").write_text("", encoding="utf-8")
    with pytest.raises(Exception, match="ambiguous training lists"):
        load_lpr4m(release)


def test_sidecar_rescales_original_pixel_boxes_to_the_stored_frame(release):
    # the README's example: a 540x960 frame stored at 256x455 (keep_ratio, shortest side 256)
    for i in ("0000", "0001", "0002", "0010"):
        _jpeg(release / "frames" / C1 / f"{C1}-{i}.jpg", (256, 455))
    q1 = load_lpr4m(release).queries[0]
    cfg = DataConfig(num_frames=4, image_size=64, resize_size=64, num_workers=0, resize_mode="square")
    item = load_clip(q1.clip, cfg)
    assert item["box_mask"].tolist() == [False, True, True, True]
    # frame 0001 ("540"/"960" as strings, as the README prints them) and 0010 (ints, as img2dataset writes)
    expected_1 = torch.tensor([120 / 540, 300 / 960, 420 / 540, 700 / 960])
    expected_3 = torch.tensor([100 / 540, 200 / 960, 300 / 540, 500 / 960])
    assert torch.allclose(item["boxes"][1], expected_1, atol=1e-4)
    assert torch.allclose(item["boxes"][3], expected_3, atol=1e-4)
    # frame 0002 has no sidecar: its box is taken as stored pixels (divided by 256 x 455, clamped)
    assert torch.allclose(item["boxes"][2], torch.tensor([10 / 256, 20 / 455, 200 / 256, 300 / 455]), atol=1e-4)


def test_lpr750k_keeps_every_gallery_line_and_divides_by_every_gt_query(l750k):
    s = load_lpr4m(l750k)
    assert s.layout == "lpr750k"
    assert len(s.train) == 1 and s.train[0].image_id == "1a2b3c4d-2eeb-11ee-b7bb-77cb20e63400"
    assert s.train[0].clip.frame_paths[0].parts[-3] == "training_video_03"
    ids = [(g.group, g.image_id) for g in s.gallery]
    assert ids[:3] == [(LIVE, f"{COAT}-0"), (LIVE, f"{COAT}-1"), (LIVE, "0a1b2c3d-2eeb-11ee-b7bb-77cb20e634dc")]
    assert len(s.gallery) == 5  # every line of gallery_main.txt
    q = {x.query_id: x for x in s.queries}
    assert len(s.queries) == 3  # the ground-truth file's queries, one without a query_tenframes entry
    assert q[C1].gt_ids == (f"{COAT}-0", f"{COAT}-1") and len(q[C1].clip.frame_paths) == 3
    other = "3c2d1e0f-2c63-11ee-bb6d-b8cef60c2fd0-1667920100000-1667920130000"
    assert q[other].missing and q[other].gt_ids == ("6a7b8c9d-2eeb-11ee-b7bb-77cb20e634dc",)


def test_prepare_report_leaves_failed_files_out(release):
    import json

    full = load_lpr4m(release)
    report = {
        "lists": {"test_frame_url": {}, "test_image_url": {}},
        "failed_frame_ids": [f"{C2}-0001"],
        "failed_image_ids": ["9c8d7e6f-2eeb-11ee-b7bb-77cb20e634dc"],
    }
    (release / "prepare_report.json").write_text(json.dumps(report))
    faults = Faults(strict=False)
    s = read_lpr4m(release, faults)
    assert s.train == [] and s.annotation_checksum == full.annotation_checksum  # --lists test: evaluation only
    assert [p.stem[-4:] for p in s.queries[1].clip.frame_paths] == ["0000", "0002"]  # the failed frame left out
    assert [g.image_id for g in s.gallery] == [g.image_id for g in full.gallery][:3]  # the failed gallery image
    assert faults.counts[F.FAILED_DOWNLOAD] == 3  # no training lists, 1 gallery image, 1 query without frames


def test_check_data_on_a_test_only_preparation_is_clean(release):
    import json

    from datasets.check import check_dataset

    for i in ("0000", "0001", "0002", "0010"):
        _jpeg(release / "frames" / C1 / f"{C1}-{i}.jpg", (256, 455))
    for i in ("0000", "0001", "0002"):
        _jpeg(release / "frames" / C2 / f"{C2}-{i}.jpg", (256, 455))
    for image in (COAT, "0a1b2c3d-2eeb-11ee-b7bb-77cb20e634dc", "5e6f7a8b-2eeb-11ee-b7bb-77cb20e634dc"):
        _jpeg(release / "images" / f"{image}.jpg", (256, 256))
    report = {
        "lists": {"test_frame_url": {}, "test_image_url": {}},
        "failed_frame_ids": [],
        "failed_image_ids": ["9c8d7e6f-2eeb-11ee-b7bb-77cb20e634dc"],
        "gallery_images_missing": ["9c8d7e6f-2eeb-11ee-b7bb-77cb20e634dc"],
    }
    (release / "prepare_report.json").write_text(json.dumps(report))
    rep = check_dataset("lpr4m", release)
    assert rep.ok, rep.format()
    assert rep.stats["training_not_prepared"] == 1 and rep.stats["queries_without_frames"] == 1
    assert rep.stats["gallery_images_missing"] == 1 and rep.counts["failed_download"] == 3
