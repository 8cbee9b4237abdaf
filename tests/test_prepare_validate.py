"""``prepare`` checks every URL list and annotation file it relies on before the first URL is
fetched, and names each fault in one line (file and line): a damaged download folder costs
seconds, not the days of a download (issue 36, item 5)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from datasets.prepare_lpr4m import find_url_lists
from datasets.prepare_validate import validate_release
from tests.prepare_helpers import BASE, CLIP, TEST_CLIP, hand_made_release, prepare


@pytest.fixture
def no_download(tmp_path, monkeypatch) -> Path:
    """img2dataset replaced by a script that leaves a marker: a validation fault must stop before it."""
    marker = tmp_path / "img2dataset-ran"
    script = tmp_path / "fake-img2dataset"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LPR_BENCH_IMG2DATASET", str(script))
    return marker


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_sound_release_has_no_fault(tmp_path):
    urls = hand_made_release(tmp_path)
    assert validate_release(urls, find_url_lists(urls), "all") == []


def test_a_non_utf8_line_in_a_url_list_is_named_before_any_download(tmp_path, capsys, no_download):
    urls = hand_made_release(tmp_path)
    path = urls / "training_frame_url_full_30.txt"
    lines = path.read_bytes().split(b"\n")
    lines[2] = b"https://cdn.invalid/bs2/caf\xe9-1.jpg"
    path.write_bytes(b"\n".join(lines))
    assert prepare(urls, tmp_path / "out") == 1
    assert _errors(capsys) == [f"error: {path}:3: not valid UTF-8 at byte 27 of the line"]
    assert not no_download.exists() and not (tmp_path / "out").exists()


def test_a_truncated_ground_truth_json_fails_prepare_lists_test(tmp_path, capsys, no_download):
    urls = hand_made_release(tmp_path)
    path = urls / "test_videoid_to_gtimage_1.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # cut mid-file, as an interrupted copy leaves it
    assert prepare(urls, tmp_path / "out", "--lists", "test") == 1
    (err,) = _errors(capsys)
    assert err.startswith(f"error: {path}:2: truncated JSON:") and not no_download.exists()


def test_each_fault_gets_its_own_line_naming_file_and_line(tmp_path, capsys, no_download):
    urls = hand_made_release(tmp_path)
    part = urls / "training_videoinfo_full_part_00.txt"
    part.write_text(part.read_text() + f"{CLIP}-x\tnot a list\n" + "\t".join(["c"] * 11) + "\n")
    frames = urls / "test_frame_url_12.txt"
    frames.write_text(frames.read_text() + f"{BASE}no-index.jpg\nftp://host/{TEST_CLIP}-0099.jpg\n")
    gallery = urls / "test_liveid_to_gallery_1.json"
    gallery.write_text("[1, 2]")
    (urls / "test_frameid2gtbox_1_1.json").unlink()
    assert prepare(urls, tmp_path / "out") == 1
    assert sorted(_errors(capsys)) == sorted(
        [
            f"error: {part}:2: expected 11 tab-separated columns, got 2",
            f"error: {part}:3: frame list: not a list literal",
            f"error: {frames}:13: frame URL 'https://cdn.invalid/bs2/no-index.jpg' does not end in <clip_id>-<frame_idx>.jpg",
            f"error: {frames}:14: not an http(s) URL: 'ftp://host/{TEST_CLIP}-0099.jpg'",
            f"error: {gallery}: expected a JSON object, got list",
            f"error: {urls / 'test_frameid2gtbox_*.json'}: required annotation file is missing",
        ]
    )
    assert not no_download.exists()


def test_lists_test_does_not_need_the_training_annotations(tmp_path):
    urls = hand_made_release(tmp_path)
    (urls / "training_videoinfo_full_part_00.txt").write_bytes(b"\xff\xfe broken\n")
    test_lists = find_url_lists(urls, "test")
    assert validate_release(urls, test_lists, "test") == []
    faults = validate_release(urls, find_url_lists(urls), "all")
    assert faults == [f"{urls / 'training_videoinfo_full_part_00.txt'}:1: not valid UTF-8 at byte 0 of the line"]


def test_many_faults_in_one_file_are_capped_with_a_count(tmp_path):
    urls = hand_made_release(tmp_path)
    path = urls / "training_image_url_full_1.txt"
    path.write_bytes(b"".join(b"bad\xff line\n" for _ in range(25)))
    faults = validate_release(urls, find_url_lists(urls), "all")
    assert len(faults) == 21 and faults[-1] == f"{path}: 5 more fault(s) not listed"
    assert faults[0] == f"{path}:1: not valid UTF-8 at byte 3 of the line" and os.path.basename(faults[19]).endswith(
        ":20: not valid UTF-8 at byte 3 of the line"
    )
