"""check_dataset: a clean root is ok; each fault kind is found, counted and located."""

from __future__ import annotations

import json

import pytest

from datasets import faults as F
from datasets.check import KNOWN_MISSING_VIDEOS, check_dataset
from tests.data_fixtures import make_lpr4m_release, make_lpr750k, make_movingfashion


def _ann(root, prefix):
    (p,) = (root / "annotations").glob(prefix + "*")
    return p


def test_clean_roots_are_ok(tmp_path):
    man = make_lpr4m_release(tmp_path / "a")
    rep = check_dataset("lpr4m", man.root, deep=True)
    assert rep.ok and rep.counts == {} and rep.layout == "lpr4m-release", rep.format()
    assert rep.stats["queries"] == 6 and rep.stats["image_files"] > 0
    assert rep.format().endswith("OK")
    assert check_dataset("lpr4m-synth", make_lpr750k(tmp_path / "b").root).ok
    rep = check_dataset("movingfashion", make_movingfashion(tmp_path / "c").root, deep=True)
    assert rep.ok and rep.stats["video_files"] == 7, rep.format()


def test_finds_each_lpr4m_fault(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    root = man.root
    s_train = man.train
    # missing frame, truncated JPEG, zero-byte image
    missing = root / "frames" / s_train[0]["clip_id"] / f"{s_train[0]['frame_ids'][3]}.jpg"
    missing.unlink()
    trunc = root / "frames" / s_train[1]["clip_id"] / f"{s_train[1]['frame_ids'][0]}.jpg"
    trunc.write_bytes(trunc.read_bytes()[:200])
    empty = root / "images" / f"{s_train[2]['image_id']}.jpg"
    empty.write_bytes(b"")
    # malformed row, duplicate row, escaping path
    train = _ann(root, "training_videoinfo_")
    lines = train.read_text(encoding="utf-8").splitlines()
    cols = lines[3].split("\t")
    cols[1] = repr(["../../../secret"])
    cols[2] = "[[]]"
    lines[3] = "\t".join(cols)
    lines.append("only\tthree\tcolumns")
    lines.append(lines[0])
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # gt outside its group
    gt_path = _ann(root, "test_videoid_to_gtimage_")
    gt = json.loads(gt_path.read_text())
    gt[man.queries[0]["clip_id"]] = ["nowhere"]
    gt_path.write_text(json.dumps(gt))
    # non-UTF-8 ASR line
    asr = _ann(root, "test_videoid_asr_")
    asr.write_bytes(asr.read_bytes() + b"bad\xffline\tx\n")

    rep = check_dataset("lpr4m", root)
    assert not rep.ok
    assert rep.counts[F.MISSING_FILE] == 1 and str(missing) in rep.examples[F.MISSING_FILE][0]
    assert rep.counts[F.TRUNCATED_JPEG] == 1 and str(trunc) in rep.examples[F.TRUNCATED_JPEG][0]
    assert rep.counts[F.UNREADABLE_FILE] == 1 and str(empty) in rep.examples[F.UNREADABLE_FILE][0]
    assert rep.counts[F.MALFORMED_ROW] == 1 and f"{train}:7" in rep.examples[F.MALFORMED_ROW][0]
    assert rep.counts[F.DUPLICATE_ID] == 1 and f"{train}:8" in rep.examples[F.DUPLICATE_ID][0]
    assert rep.counts[F.PATH_ESCAPE] == 1 and f"{train}:4" in rep.examples[F.PATH_ESCAPE][0]
    assert rep.counts[F.GT_NOT_IN_GROUP] == 1 and "nowhere" in rep.examples[F.GT_NOT_IN_GROUP][0]
    assert rep.counts[F.BAD_ENCODING] == 1
    text = rep.format()
    assert "ERROR   truncated_jpeg: 1" in text and text.splitlines()[-1].startswith("FAILED")
    assert rep.to_dict()["ok"] is False


def test_wrong_json_shape_and_missing_annotation(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    _ann(man.root, "test_liveid_to_gallery_").write_text("[1, 2]")
    _ann(man.root, "test_frameid2gtbox_").unlink()
    rep = check_dataset("lpr4m", man.root)
    assert rep.counts[F.BAD_JSON] == 1 and rep.counts[F.MISSING_ANNOTATION] == 1
    assert not rep.ok


def test_not_a_data_root_is_reported(tmp_path):
    rep = check_dataset("lpr4m", tmp_path)
    assert not rep.ok and F.MISSING_ANNOTATION in rep.counts
    with pytest.raises(ValueError, match="unknown dataset"):
        check_dataset("imagenet", tmp_path)


def test_movingfashion_missing_videos_are_warnings_and_bad_videos_errors(tmp_path):
    man = make_movingfashion(tmp_path / "r", missing_train=[1], missing_test=[0])
    rep = check_dataset("movingfashion", man.root)
    assert rep.ok and rep.counts == {F.MISSING_VIDEO: 2}, rep.format()
    assert any("videos/test000_0.mp4" in ex for ex in rep.examples[F.MISSING_VIDEO])
    assert "warning missing_video: 2" in rep.format()
    (man.root / "videos" / "test001_0.mp4").write_bytes(b"")
    (man.root / "videos" / "test002_0.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x11" * 300)
    shallow = check_dataset("movingfashion", man.root)
    assert shallow.counts[F.UNREADABLE_FILE] == 1 and not shallow.ok
    deep = check_dataset("movingfashion", man.root, deep=True)
    assert deep.counts[F.UNREADABLE_FILE] == 2
    assert any("test002_0.mp4: cannot open video" in ex for ex in deep.examples[F.UNREADABLE_FILE])


def test_too_many_missing_videos_fail(tmp_path):
    n = KNOWN_MISSING_VIDEOS + 1
    man = make_movingfashion(tmp_path / "r", num_train=n, num_test=1, video_frames=4, missing_train=range(n))
    rep = check_dataset("movingfashion", man.root)
    assert rep.counts[F.MISSING_VIDEO] == n and not rep.ok
