"""LPR4M loader: both layouts load to the right records; bad annotations raise specific DataErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.core.registry import DATASETS
from datasets import faults as F
from datasets.errors import DataError
from datasets.lpr4m import detect_layout, live_id_of, load_lpr4m, normalise_attribute
from tests.data_fixtures import make_lpr4m_release, make_lpr750k


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_lpr4m_release(tmp_path_factory.mktemp("lpr4m") / "root")


@pytest.fixture(scope="module")
def l750k(tmp_path_factory):
    return make_lpr750k(tmp_path_factory.mktemp("lpr750k") / "root")


def _ann(root: Path, prefix: str) -> Path:
    (path,) = (root / "annotations").glob(prefix + "*")
    return path


def test_registered():
    assert DATASETS.get("lpr4m") is load_lpr4m


def test_release_train_records(release):
    s = load_lpr4m(release.root)
    assert s.layout == "lpr4m-release" and s.name == "lpr4m" and s.grouped
    assert len(s.train) == len(release.train) == 6
    for pair, exp in zip(s.train, release.train):
        assert pair.clip.clip_id == exp["clip_id"]
        assert [p.name for p in pair.clip.frame_paths] == [f"{f}.jpg" for f in exp["frame_ids"]]
        assert pair.clip.frame_paths[0] == release.root / "frames" / exp["clip_id"] / f"{exp['frame_ids'][0]}.jpg"
        assert pair.image_path == release.root / "images" / f"{exp['image_id']}.jpg"
        assert pair.product_id == pair.image_id == exp["image_id"]
        assert pair.category == exp["category"] and dict(pair.attributes) == exp["attrs"]
        assert pair.clip.asr == exp["asr"] and pair.title == exp["title"]
        expected_boxes = {i: tuple(float(v) for v in b) for i, b in enumerate(exp["boxes"]) if b}
        assert dict(pair.clip.boxes) == expected_boxes
    assert s.categories == sorted({"女装", "beauty", "shoes"})


def test_release_test_records(release):
    s = load_lpr4m(release.root)
    assert [q.query_id for q in s.queries] == [q["clip_id"] for q in release.queries]
    for q, exp in zip(s.queries, release.queries):
        assert q.group == exp["live_id"] == live_id_of(q.query_id)
        assert list(q.gt_ids) == exp["gt"]
        assert len(q.clip.frame_paths) == len(exp["frame_ids"])
        # frames ordered by frame index, not by JSON key order (10 sorts before 2 as text)
        assert [p.stem for p in q.clip.frame_paths] == exp["frame_ids"]
        assert q.clip.asr == exp["asr"] and dict(q.attributes) == exp["attrs"]
        assert sorted(q.clip.boxes) == [i for i, b in enumerate(exp["boxes"]) if b]
        assert not q.missing
    assert any(len(q.gt_ids) == 2 for q in s.queries)
    assert [(g.group, g.image_id) for g in s.gallery] == [
        (live, i) for live, ids in release.gallery.items() for i in ids
    ]
    assert all(g.title == release.titles[g.image_id] for g in s.gallery)
    assert len(s.annotation_checksum) == 64


def test_checksum_tracks_annotation_bytes(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    before = load_lpr4m(man.root).annotation_checksum
    assert load_lpr4m(man.root).annotation_checksum == before
    asr = _ann(man.root, "test_videoid_asr_")
    asr.write_text(asr.read_text(encoding="utf-8").replace("product", "produit"), encoding="utf-8")
    assert load_lpr4m(man.root).annotation_checksum != before


def test_lpr750k_records(l750k):
    assert detect_layout(l750k.root) == "lpr750k"
    s = load_lpr4m(l750k.root)
    assert s.layout == "lpr750k"
    assert [p.clip.clip_id for p in s.train] == [t["clip_id"] for t in l750k.train]
    p0, e0 = s.train[0], l750k.train[0]
    assert p0.clip.frame_paths[0].parent.parent.name.startswith("training_video_0")
    assert all(p.exists() for p in p0.clip.frame_paths) and p0.image_path.exists()
    assert p0.image_path == l750k.root / "training_image" / f"{e0['image_id']}.jpg"
    assert p0.category == e0["category"] and p0.clip.asr == e0["asr"] and p0.clip.boxes == {}
    assert [(q.query_id, q.group, list(q.gt_ids)) for q in s.queries] == [
        (q["clip_id"], q["live_id"], q["gt"]) for q in l750k.queries
    ]
    assert all(p.exists() for q in s.queries for p in q.clip.frame_paths)
    # gallery image id = first 5 dash fields of "<uuid>-0.jpg"
    assert [(g.group, g.image_id) for g in s.gallery] == [(live, i) for live, ids in l750k.gallery.items() for i in ids]
    assert all(g.image_path.exists() for g in s.gallery)


def test_lpr750k_prefers_official_gt_file(tmp_path):
    man = make_lpr750k(tmp_path / "r")
    q0 = man.queries[0]
    other = [i for i in man.gallery[q0["live_id"]] if i not in q0["gt"]][0]
    gt = {q["clip_id"]: q["gt"] for q in man.queries}
    gt[q0["clip_id"]] = [other]
    (man.root / "annotations" / "test_videoid_to_gtimage_4.json").write_text(json.dumps(gt))
    s = load_lpr4m(man.root)
    assert s.queries[0].gt_ids == (other,)


def test_not_a_data_root(tmp_path):
    with pytest.raises(DataError, match="not an LPR4M data root"):
        load_lpr4m(tmp_path)
    with pytest.raises(DataError, match="needs --data-root"):
        load_lpr4m(None)


def test_attribute_aliases():
    assert normalise_attribute("scale", "S") == "small"
    assert normalise_attribute("duration", "2") == "long"
    assert normalise_attribute("num_products", "f") == "few"
    assert normalise_attribute("scale", " ") is None
    with pytest.raises(ValueError, match="huge"):
        normalise_attribute("scale", "huge")


# ---------------------------------------------------------------- broken annotations


def _rewrite_train(root: Path, fn) -> Path:
    path = _ann(root, "training_videoinfo_")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = fn(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_tsv_row_names_file_and_line(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _rewrite_train(man.root, lambda ls: ls[:1] + ["\t".join(ls[1].split("\t")[:7])] + ls[2:])
    with pytest.raises(DataError, match=r"training_videoinfo_6\.txt:2: expected 11 tab-separated columns, got 7") as ei:
        load_lpr4m(man.root)
    assert ei.value.kind == F.MALFORMED_ROW and ei.value.path == str(path)


def test_bad_frame_literal_is_not_evaluated(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")

    def inject(ls):
        cols = ls[0].split("\t")
        cols[1] = "__import__('os').system('touch PWNED')"
        return ["\t".join(cols)] + ls[1:]

    _rewrite_train(man.root, inject)
    with pytest.raises(DataError, match=r":1: frame list: not a list literal"):
        load_lpr4m(man.root)
    assert not Path("PWNED").exists()


def test_box_count_mismatch_keeps_the_row_without_boxes(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")

    def inject(ls):
        cols = ls[0].split("\t")
        cols[2] = "[[1, 2, 3, 4]]"
        return ["\t".join(cols)] + ls[1:]

    _rewrite_train(man.root, inject)
    # a box list not aligned with the frames is a row without boxes (warned), not a malformed row
    s = load_lpr4m(man.root)
    assert len(s.train) == 6 and s.train[0].clip.boxes == {} and len(s.train[0].clip.frame_paths) == 12
    faults = F.Faults(strict=False)
    from datasets.lpr4m import read_lpr4m

    read_lpr4m(man.root, faults)
    assert faults.counts[F.BAD_BOX] == 1 and "1 boxes for 12 frames" in faults.examples[F.BAD_BOX][0].message


def test_non_utf8_asr(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_videoid_asr_")
    data = path.read_bytes().split(b"\n")
    data[2] = data[2] + b" \xff\xfe latin-1 caf\xe9"
    path.write_bytes(b"\n".join(data))
    with pytest.raises(DataError, match=r"test_videoid_asr_6\.txt:3: not valid UTF-8") as ei:
        load_lpr4m(man.root)
    assert ei.value.kind == F.BAD_ENCODING


def test_json_of_wrong_shape(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_liveid_to_gallery_")
    path.write_text(json.dumps(list(man.gallery)))  # a list instead of {live_id: [...]}
    with pytest.raises(DataError, match=r"test_liveid_to_gallery_2\.json: expected a JSON object .* got list") as ei:
        load_lpr4m(man.root)
    assert ei.value.kind == F.BAD_JSON


def test_gt_values_of_wrong_shape(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_videoid_to_gtimage_")
    gt = json.loads(path.read_text())
    gt[next(iter(gt))] = {"image": 3}
    path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match="must be a non-empty list of image ids"):
        load_lpr4m(man.root)


def test_invalid_json(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_frameid2gtbox_")
    path.write_text(path.read_text()[:-5])
    with pytest.raises(DataError, match=r"test_frameid2gtbox_\d+\.json: invalid JSON"):
        load_lpr4m(man.root)


def test_path_escaping_root_is_rejected(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")

    def inject(ls):
        cols = ls[0].split("\t")
        cols[1] = repr(["../../../etc/passwd"] + [f"x-{k}" for k in range(11)])
        return ["\t".join(cols)] + ls[1:]

    _rewrite_train(man.root, inject)
    with pytest.raises(DataError, match=r"escapes the data root") as ei:
        load_lpr4m(man.root)
    assert ei.value.kind == F.PATH_ESCAPE


def test_image_id_escaping_root_is_rejected(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_liveid_to_gallery_")
    gal = json.loads(path.read_text())
    live = next(iter(gal))
    gal[live][0] = "../../outside"
    path.write_text(json.dumps(gal))
    with pytest.raises(DataError, match=r"'images/\.\./\.\./outside\.jpg' escapes the data root"):
        load_lpr4m(man.root)


def test_a_test_clip_without_any_frame_is_kept_as_a_missing_query(tmp_path):
    """All of one test clip's frames absent: still a query (the official evaluation divides by all
    of them), with its ground truth, group and transcript, no frames, and ``missing`` set."""
    import shutil

    man = make_lpr4m_release(tmp_path / "r")
    lost = man.queries[1]
    shutil.rmtree(man.root / "frames" / lost["clip_id"])
    s = load_lpr4m(man.root)
    assert [q.query_id for q in s.queries] == [q["clip_id"] for q in man.queries]
    (q,) = [q for q in s.queries if q.missing]
    assert (q.query_id, list(q.gt_ids), q.group, q.clip.asr) == (
        lost["clip_id"],
        lost["gt"],
        lost["live_id"],
        lost["asr"],
    )
    assert q.clip.frame_paths == () and q.clip.video_path is None and dict(q.attributes) == lost["attrs"]


def test_missing_required_annotation(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    _ann(man.root, "test_frameid2gtbox_").unlink()
    with pytest.raises(DataError, match=r"test_frameid2gtbox_\*\.json: required annotation file is missing"):
        load_lpr4m(man.root)


def test_query_without_gallery_group(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_liveid_to_gallery_")
    gal = json.loads(path.read_text())
    gal.pop(man.queries[0]["live_id"])
    path.write_text(json.dumps(gal))
    with pytest.raises(DataError, match="has no gallery group") as ei:
        load_lpr4m(man.root)
    assert ei.value.kind == F.MISSING_GROUP


def test_gt_outside_group_is_a_warning_not_a_crash(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    path = _ann(man.root, "test_videoid_to_gtimage_")
    gt = json.loads(path.read_text())
    gt[man.queries[0]["clip_id"]] = ["not-in-gallery"]
    path.write_text(json.dumps(gt))
    s = load_lpr4m(man.root)
    assert s.queries[0].gt_ids == ("not-in-gallery",)


def test_loading_does_not_touch_frame_files(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    import shutil

    shutil.rmtree(man.root / "frames")
    s = load_lpr4m(man.root)  # existence is check_dataset's job
    assert len(s.train) == 6
