"""benchmark.reports.leaderboard's tables: re-scored numbers, unverified and reported rows, atomic and
deterministic output, the run table."""

from __future__ import annotations

import copy
import io
import json
import re

import pytest

from benchmark.record.submission import dumps_submission, write_submission
from benchmark.reports import leaderboard as lb
from tests.evalkit import loader_for, make_submission


@pytest.fixture
def results(tmp_path, toy):
    good = make_submission(toy, method="good", noise=0.3, seed=0, train_s=3700.0)
    bad = make_submission(toy, method="weak", variant="small", noise=3.0, seed=0, train_s=59.0)
    write_submission(good, tmp_path)
    write_submission(bad, tmp_path)
    reported = {
        "schema_version": 1,
        "rows": [
            {
                "method": "paper-method",
                "variant": "",
                "dataset": "toy",
                "profile": "tiny",
                "metrics": {"R1": 12.5, "R5": 40.0},
                "protocol": "its own",
                "source": "a paper (2020)",
                "date": "2020",
            }
        ],
    }
    (tmp_path / "reported.json").write_text(json.dumps(reported))
    return tmp_path, good, bad


def test_tables_show_rescored_numbers_ranked_by_r1(results, toy):
    root, good, bad = results
    board = lb.regenerate(root, load_splits=loader_for(toy))
    rows = board.tables[("toy", "tiny")]
    r1 = [r.values["R1"] for r in rows]
    assert rows[0].method == "good" and len(rows) == 3
    assert r1 == sorted(r1, reverse=True)
    good_row = next(r for r in rows if r.method == "good")
    assert good_row.status == "verified" and good_row.values["R1"] == pytest.approx(
        good["metrics"]["overall"]["R1"]["value"]
    )
    assert good_row.values["mAP"] == pytest.approx(good["metrics"]["overall"]["mAP@10"]["value"])
    md = (root / "leaderboard.md").read_text()
    g = good["metrics"]["overall"]
    assert f"{g['R1']['value']:.2f} [{g['R1']['ci95'][0]:.2f}, {g['R1']['ci95'][1]:.2f}]" in md
    assert "| weak (small)" in md and "| verified " in md and "reported [1]" in md
    assert "1.0h" in md and "59s" in md and "1.2K" in md and "2025-01-02" in md
    assert "[1] a paper (2020); protocol: its own" in md
    tex = (root / "leaderboard.tex").read_text()
    assert "\\begin{tabular}" in tex and "weak (small)" in tex and "\\toprule" in tex
    png = root / "plots" / "toy__tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_trusts_no_claimed_number(results, toy):
    """Claims that disagree with the rankings keep that file off the board, named with its
    first fault in ``board.skipped``; the rest is regenerated unchanged."""
    root, good, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    before = (root / "leaderboard.md").read_bytes()
    liar = copy.deepcopy(good)
    liar["method"]["name"] = "liar"
    liar["metrics"]["overall"]["R1"]["value"] = 99.0
    (root / "submissions" / "liar.json").write_text(dumps_submission(liar))
    board = lb.regenerate(root, load_splits=loader_for(toy))
    assert [p for p, _ in board.skipped] == [str(root / "submissions" / "liar.json")]
    assert re.search(r"metrics\.overall\.R1: claimed 99\.0, re-scored", board.skipped[0][1])
    assert (root / "leaderboard.md").read_bytes() == before
    with pytest.raises(lb.LeaderboardError, match=r"(?s)liar\.json.*metrics\.overall\.R1: claimed 99\.0"):
        lb.collect_rows(root, loader_for(toy))  # without a skip list: strict, as before


def test_unverified_rows_show_claims_and_say_so(results):
    root, good, _ = results
    board = lb.regenerate(root, load_splits=lambda ds: None)
    rows = board.tables[("toy", "tiny")]
    good_row = next(r for r in rows if r.method == "good")
    assert good_row.status == "unverified" and good_row.curve is None
    assert good_row.values["R1"] == good["metrics"]["overall"]["R1"]["value"]
    md = (root / "leaderboard.md").read_text()
    assert "| unverified [1]" in md and "claimed numbers: the dataset was not available" in md


def test_regeneration_is_deterministic_and_removes_stale_plots(results, toy):
    root, _, _ = results
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "gone__tiny.png").write_bytes(b"old")
    lb.regenerate(root, load_splits=loader_for(toy))
    first = {p: (root / p).read_bytes() for p in ("leaderboard.md", "leaderboard.tex")}
    lb.regenerate(root, load_splits=loader_for(toy))
    assert {p: (root / p).read_bytes() for p in first} == first
    assert not (root / "plots" / "gone__tiny.png").exists()


def test_interrupted_regeneration_leaves_old_file_whole(results, toy, monkeypatch):
    root, _, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    before = (root / "leaderboard.md").read_bytes()
    (root / "submissions" / "good__extra.json").write_text(
        (root / "submissions" / "toy__tiny__good__seed0.json").read_text().replace('"good"', '"other"')
    )
    import os

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lb.regenerate(root, load_splits=loader_for(toy))
    monkeypatch.undo()
    assert (root / "leaderboard.md").read_bytes() == before
    assert not [p for p in root.rglob("*.tmp")]


def test_bad_reported_file_is_rejected(results, toy):
    root, _, _ = results
    (root / "reported.json").write_text(json.dumps({"schema_version": 1, "rows": [{"method": "x"}]}))
    board = lb.regenerate(root, load_splits=loader_for(toy))
    assert [p for p, _ in board.skipped] == [str(root / "reported.json")]
    assert "schema violation" in board.skipped[0][1]
    assert all(r.source != "reported" for rows in board.tables.values() for r in rows)


def test_one_seed_rows_say_so(results, toy):
    root, _, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    md = (root / "leaderboard.md").read_text()
    assert "| 1 seed " in md and "queries only (1 seed)" in md


def test_print_run_table(toy):
    from rich.console import Console

    sub = make_submission(toy, bootstrap=50)
    buf = io.StringIO()
    lb.print_run_table(sub["metrics"], Console(file=buf, width=120, color_system=None), title="toy run")
    text = buf.getvalue()
    r1 = sub["metrics"]["overall"]["R1"]
    assert "toy run (40 queries)" in text
    assert f"{r1['value']:.2f}" in text and f"[{r1['ci95'][0]:.2f}, {r1['ci95'][1]:.2f}]" in text
    assert "by scale" in text and "by category" in text and "unknown" in text
