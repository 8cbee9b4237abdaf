"""``datasets.prepare_report``: a prepared root's ``prepare_report.json`` and a frame's img2dataset
sidecar JSON are read as JSON objects; absent is None, anything else broken is one ``DataError``
naming the file and the fault."""

from __future__ import annotations

import json

import pytest

from datasets.errors import DataError
from datasets.faults import BAD_JSON
from datasets.prepare_report import REPORT_NAME, read_report, sidecar_original_size


def test_a_report_is_read_and_an_absent_one_is_none(tmp_path):
    assert read_report(tmp_path) is None
    report = {"failed_frame_ids": ["a", "b"], "frames_per_clip": 4, "format": "webdataset"}
    (tmp_path / REPORT_NAME).write_text(json.dumps(report))
    got = read_report(tmp_path)
    assert (got.failed_frames, got.frames_per_clip, got.storage, got.num_failed) == ({"a", "b"}, 4, "webdataset", 2)


@pytest.mark.parametrize(
    ("text", "fault"),
    [("{not json", "unreadable prepare report (Expecting"), ("[1, 2]", "a prepare report must be a JSON object")],
)
def test_a_broken_report_is_one_error_naming_it(tmp_path, text, fault):
    path = tmp_path / REPORT_NAME
    path.write_text(text)
    with pytest.raises(DataError) as exc:
        read_report(tmp_path)
    assert str(exc.value).startswith(f"{path}: {fault}") and (exc.value.path, exc.value.kind) == (str(path), BAD_JSON)


def test_a_sidecar_gives_the_original_size_and_an_absent_one_is_none(tmp_path):
    frame = tmp_path / "clip-0001.jpg"
    assert sidecar_original_size(frame) is None
    (tmp_path / "clip-0001.json").write_text(json.dumps({"original_width": "540", "original_height": 960}))
    assert sidecar_original_size(frame) == (540.0, 960.0)


@pytest.mark.parametrize(
    ("text", "fault"),
    [("{not json", "unreadable frame sidecar (Expecting"), ('"540x960"', "a frame sidecar must be a JSON object")],
)
def test_a_broken_sidecar_is_one_error_naming_it(tmp_path, text, fault):
    side = tmp_path / "clip-0001.json"
    side.write_text(text)
    with pytest.raises(DataError) as exc:
        sidecar_original_size(tmp_path / "clip-0001.jpg")
    assert str(exc.value).startswith(f"{side}: {fault}") and (exc.value.path, exc.value.kind) == (str(side), BAD_JSON)
