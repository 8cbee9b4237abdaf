"""Failure corpus, submissions that must not score: tampered fields, gigantic files, gzip bombs and
deep nesting are refused with one ``error:`` line naming the file and the fault, before they cost
more than the limits."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from pathlib import Path

import pytest

from benchmark.cli.main import main
from benchmark.core import safe_json
from benchmark.record.submission import SubmissionError, load_submission
from tests.scaleout_helpers import cli_stderr

pytestmark = pytest.mark.usefixtures("isolated_registry")


def _tamper(good: Path, dest: Path, edit) -> Path:
    obj = json.loads(good.read_text())
    edit(obj)
    dest.write_text(json.dumps(obj, allow_nan=True))
    return dest


def _present(obj) -> int:
    return next(i for i, (_, ids) in enumerate(obj["rankings"]) if len(ids) >= 2)


FAULTS = {
    "NaN metric": (
        lambda o: o["metrics"]["overall"]["R1"].update(value=float("nan")),
        "NaN is not allowed (metrics must be finite numbers)",
    ),
    "infinite metric": (lambda o: o["metrics"]["overall"]["R5"].update(value=float("inf")), "Infinity is not allowed"),
    "negative metric": (
        lambda o: o["metrics"]["overall"]["R5"].update(value=-3.0),
        "metrics/overall/R5/value: -3.0 is less than the minimum of 0",
    ),
    "metric over 100": (
        lambda o: o["metrics"]["overall"]["R10"].update(value=100.01),
        "metrics/overall/R10/value: 100.01 is greater than the maximum of 100",
    ),
    "duplicate query id": (lambda o: o["rankings"].__setitem__(1, list(o["rankings"][0])), "duplicate query id"),
    "unknown query id": (lambda o: o["rankings"][0].__setitem__(0, "no-such-clip"), "unknown query id 'no-such-clip'"),
    "unknown gallery id": (
        lambda o: o["rankings"][_present(o)][1].__setitem__(0, "no-such-image"),
        "unknown gallery id 'no-such-image'",
    ),
    "duplicate gallery id": (
        lambda o: o["rankings"][_present(o)][1].__setitem__(1, o["rankings"][_present(o)][1][0]),
        "listed twice",
    ),
}


def test_score_accepts_the_untampered_submission(good_submission, capsys):
    assert main(["score", str(good_submission)]) == 0
    assert ": OK - toy-method" in capsys.readouterr().out


@pytest.mark.parametrize("fault", list(FAULTS))
def test_score_rejects_a_faulty_submission_naming_the_fault(good_submission, tmp_path, capsys, fault):
    edit, message = FAULTS[fault]
    path = _tamper(good_submission, tmp_path / "bad.json", edit)
    assert main(["score", str(path)]) == 1
    err = cli_stderr(capsys)
    assert err.startswith(f"error: {path}") and message in err, err


def test_gigantic_submission_is_refused_before_reading(tmp_path, capsys):
    big = tmp_path / "huge.json"
    with open(big, "wb") as fh:  # sparse: 300 MiB on paper, nothing on disk
        fh.truncate(300 * 2**20)
    tracemalloc.start()
    try:
        assert main(["score", str(big)]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{300 * 2**20} bytes, more than the limit of {safe_json.MAX_BYTES}" in cli_stderr(capsys)
    assert peak < 16 * 2**20  # nothing of the file was read


def _gzip_bomb(path: Path, size: int, lie_about_size: bool = False) -> Path:
    """``size`` bytes of spaces inside ``[...]``, gzip-compressed in 1 MiB pieces (a few KiB per MiB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    with open(path, "wb") as fh:
        fh.write(comp.compress(b"["))
        block = b" " * 2**20
        for _ in range(size // 2**20):
            fh.write(comp.compress(block))
        fh.write(comp.compress(b"]"))
        fh.write(comp.flush())
    if lie_about_size:  # a crafted trailer: ISIZE (last 4 bytes) claims 10 bytes
        with open(path, "r+b") as fh:
            fh.seek(-4, 2)
            fh.write((10).to_bytes(4, "little"))
    return path


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, capsys):
    bomb = _gzip_bomb(tmp_path / "bomb.json.gz", 300 * 2**20)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert main(["score", str(bomb)]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"decompresses to more than the limit of {safe_json.MAX_BYTES} bytes" in cli_stderr(capsys)
    assert peak < 16 * 2**20


def test_gzip_bomb_with_a_lying_trailer_costs_at_most_the_limit(tmp_path):
    bomb = _gzip_bomb(tmp_path / "liar.json.gz", 64 * 2**20, lie_about_size=True)
    limit = 4 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match=f"decompresses to more than the limit of {limit} bytes"):
            load_submission(bomb, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit + 8 * 2**20  # the limit plus a decompression chunk or two, not 64 MiB


def test_deeply_nested_submission_is_refused(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert main(["score", str(deep)]) == 1
    assert f"JSON nested 200001 deep, more than the limit of {safe_json.MAX_DEPTH}" in cli_stderr(capsys)
