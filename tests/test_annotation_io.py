"""Low-level annotation readers: literal lists, boxes, root-confined paths, lines, JPEG headers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import faults as F
from datasets.annotation_io import RootPaths, parse_box, parse_literal_list, read_lines, safe_path
from datasets.decoding import jpeg_size
from datasets.errors import DataError
from datasets.faults import Faults


@pytest.mark.parametrize(
    "text, value",
    [
        ("['a-1', 'a-2']", ["a-1", "a-2"]),
        ('["a", "b"]', ["a", "b"]),
        ("[\"it's\", 'x']", ["it's", "x"]),
        ("['it\\'s']", ["it's"]),
        ("[[1, 2, 3, 4], [], [0, 0, 0, 0]]", [[1, 2, 3, 4], [], [0, 0, 0, 0]]),
        ("[1.5, -2]", [1.5, -2]),
        ("[]", []),
    ],
)
def test_parse_literal_list(text, value):
    assert parse_literal_list(text) == value


@pytest.mark.parametrize("text", ["{'a': 1}", "['a'", "[open('x')]", "[__import__('os')]", "('a',)", "-"])
def test_parse_literal_list_rejects(text):
    with pytest.raises(ValueError):
        parse_literal_list(text)


def test_parse_box():
    assert parse_box([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
    assert parse_box([[5, 6, 7, 8], [1, 1, 2, 2]]) == (5.0, 6.0, 7.0, 8.0)
    assert parse_box([]) is None and parse_box(None) is None and parse_box([0, 0, 0, 0]) is None
    for bad in ([3, 2, 1, 4], [1, 2, 3], ["a", 2, 3, 4], [-1, 0, 3, 4]):
        with pytest.raises(ValueError):
            parse_box(bad)


def test_root_paths_match_safe_path_and_reject_escapes(tmp_path):
    faults = Faults(strict=True)
    rp = RootPaths(tmp_path, faults)
    for rel in ["frames/c-1/c-1-0.jpg", "images/x.jpg", "x.jpg", "a/./b.jpg", "gallery/l/i-0.jpg"]:
        assert rp.join(rel, tmp_path) == safe_path(tmp_path, rel, faults, tmp_path) == tmp_path / Path(rel)
    assert rp.join("a/b/../c.jpg", tmp_path) == tmp_path / "a" / "c.jpg"
    for rel in ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "..", "frames/../../x"]:
        with pytest.raises(DataError) as ei:
            rp.join(rel, tmp_path / "ann.txt", line=3)
        assert ei.value.kind in (F.PATH_ESCAPE, F.MALFORMED_ROW) and "ann.txt:3" in str(ei.value)
    collecting = Faults(strict=False)
    assert RootPaths(tmp_path, collecting).join("../../x", tmp_path) is None
    assert collecting.counts[F.PATH_ESCAPE] == 1


def test_read_lines_handles_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfid1\tx\r\n\r\n  \nid2\t\xe4\xb8\xad\n")
    assert read_lines(p, Faults()) == [(1, "id1\tx"), (4, "id2\t中")]


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_from_header(progressive):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((37, 53, 3), np.uint8)).save(buf, "JPEG", progressive=progressive)
    assert jpeg_size(buf.getvalue()) == (53, 37)
    assert jpeg_size(b"\xff\xd8\xff\xe0garbage") is None
