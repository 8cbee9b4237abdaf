"""MovingFashion loader: records, missing videos reported (not a crash), tracklets, bad JSON."""

from __future__ import annotations

import json

import pytest

from benchmark.core.registry import DATASETS
from datasets import faults as F
from datasets.errors import DataError
from datasets.movingfashion import load_movingfashion
from tests.data_fixtures import make_movingfashion


@pytest.fixture(scope="module")
def mf(tmp_path_factory):
    return make_movingfashion(tmp_path_factory.mktemp("mf") / "root", missing_train=[1], missing_test=[2])


def test_registered():
    assert DATASETS.get("movingfashion") is load_movingfashion


def test_records(mf):
    s = load_movingfashion(mf.root)
    assert s.layout == "movingfashion" and not s.grouped
    # train000 has 2 videos, train001's only video is missing, train002 has 1 -> 3 pairs
    assert [(p.product_id, p.clip.video_path.name) for p in s.train] == [
        ("train000", "train000_0.mp4"),
        ("train000", "train000_1.mp4"),
        ("train002", "train002_0.mp4"),
    ]
    assert all(p.clip.sample_fps == 1.0 and p.clip.frame_paths == () for p in s.train)
    assert [p.attributes["source"] for p in s.train] == ["hard", "hard", "hard"]
    assert s.train[0].image_path == mf.root / "imgs" / "train000.jpg"
    assert s.train[0].clip.boxes[4] == (4.0, 4.0, 34.0, 40.0)
    assert [g.image_id for g in s.gallery] == ["test000", "test001", "test002"]
    assert all(g.group is None for g in s.gallery)
    # RICE's protocol: the query whose video is missing is left out (video_to_gt.json lacks it),
    # its product image stays in the gallery; frames are picked by linspace(0, n, T, endpoint=False)
    assert [(q.query_id, q.gt_ids, q.attributes["source"], q.missing) for q in s.queries] == [
        ("test000_0", ("test000",), "hard", False),
        ("test001_0", ("test001",), "regular", False),
    ]
    assert all(q.clip.frame_pick == "rice-mf" for q in s.queries) and s.train[0].clip.frame_pick == "rice-mf"
    assert s.missing == ["videos/test002_0.mp4", "videos/train001_0.mp4"]


def test_missing_test_video_as_a_miss_and_linspace_pick_on_request(mf, monkeypatch):
    monkeypatch.setenv("LPR_BENCH_MF_MISSING_TEST", "miss")
    monkeypatch.setenv("LPR_BENCH_MF_FRAME_PICK", "linspace")
    s = load_movingfashion(mf.root)
    assert [(q.query_id, q.missing) for q in s.queries] == [
        ("test000_0", False),
        ("test001_0", False),
        ("test002_0", True),
    ]
    assert s.queries[2].clip.video_path is None and s.queries[2].clip.frame_paths == ()
    assert all(q.clip.frame_pick == "linspace" for q in s.queries)
    monkeypatch.setenv("LPR_BENCH_MF_MISSING_TEST", "ignore")
    with pytest.raises(ValueError, match="LPR_BENCH_MF_MISSING_TEST='ignore'"):
        load_movingfashion(mf.root)


def test_degenerate_or_negative_tracklet_box_is_dropped_with_a_warning(tmp_path, caplog):
    man = make_movingfashion(tmp_path / "r")
    path = man.root / "train.json"
    data = json.loads(path.read_text())
    track = data["train000"]["tracklets"][0]
    track["1"], track["2"], track["-3"] = [10, 10, 10, 20], [-5, 2, 8, 9], [1, 1, 5, 5]
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        s = load_movingfashion(man.root)
    boxes = s.train[0].clip.boxes
    assert 1 not in boxes and 2 not in boxes and -3 not in boxes and boxes[4] == (4.0, 4.0, 34.0, 40.0)
    assert "3 x bad_box" in caplog.text


def test_missing_videos_are_logged(mf, caplog):
    with caplog.at_level("WARNING"):
        load_movingfashion(mf.root)
    assert "dropped 1 training pair(s)" in caplog.text
    assert "videos/test002_0.mp4" in caplog.text


def test_bad_source_value(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=2, num_test=1)
    data = json.loads((man.root / "test.json").read_text())
    data["test000"]["source"] = 2
    (man.root / "test.json").write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=r"test\.json: product 'test000': 'source' must be 0 \(hard\) or 1 \(regular\), got 2"
    ) as ei:
        load_movingfashion(man.root)
    assert ei.value.kind == F.BAD_JSON


def test_json_of_wrong_shape(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    (man.root / "train.json").write_text(json.dumps([{"img_path": "imgs/x.jpg"}]))
    with pytest.raises(DataError, match=r"train\.json: expected a JSON object keyed by product id, got list"):
        load_movingfashion(man.root)


def test_tracklets_must_align_with_videos(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    data = json.loads((man.root / "train.json").read_text())
    data["train000"]["tracklets"] = [{"0": [1, 1, 5, 5]}]  # 2 videos, 1 tracklet
    (man.root / "train.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"one dict per video \(2\)"):
        load_movingfashion(man.root)


def test_video_path_escaping_root(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    data = json.loads((man.root / "test.json").read_text())
    data["test000"]["video_paths"] = ["videos/../../x.mp4"]
    (man.root / "test.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="escapes the data root") as ei:
        load_movingfashion(man.root)
    assert ei.value.kind == F.PATH_ESCAPE


def test_missing_split_file(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    (man.root / "test.json").unlink()
    with pytest.raises(DataError, match=r"test\.json: annotation file is missing"):
        load_movingfashion(man.root)
