"""The committed leaderboard: the reported rows are the design's numbers, the committed tables are what
the committed submissions regenerate, and the registry loader verifies synthetic rows only."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmark.record.submission import write_submission
from benchmark.reports import leaderboard as lb
from tests.evalkit import make_submission

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


def test_reported_rows_are_the_design_numbers():
    rows = lb.load_reported(RESULTS / "reported.json")
    got = {(r.method, r.variant, r.dataset): r.values for r in rows}
    assert got[("rice", "icl", "lpr4m")] == {"R1": 31.50}
    assert got[("rice", "icl+pmd", "lpr4m")] == {"R1": 33.07}
    assert got[("rice", "icl+pmd+pfr", "lpr4m")] == {"R1": 33.77}
    assert got[("rice", "icl", "movingfashion")] == {"R1": 74.76}
    assert got[("rice", "icl+pmd", "movingfashion")] == {"R1": 76.87}
    assert got[("rice", "icl+pmd+pfr", "movingfashion")] == {"R1": 77.92}
    seam = got[("seam-match-rcnn", "", "movingfashion")]
    assert seam == {"R1": 49.0, "R5": 80.0, "R10": 89.0, "R20": 94.0}
    seam_row = next(r for r in rows if r.method == "seam-match-rcnn")
    assert "SEAM's own evaluation script" in seam_row.note


def test_committed_leaderboard_has_no_drift(tmp_path):
    """Regenerating from the committed submissions reproduces the committed tables byte for byte."""
    work = tmp_path / "results"
    work.mkdir()
    if (RESULTS / "submissions").is_dir():
        shutil.copytree(RESULTS / "submissions", work / "submissions")
    shutil.copy(RESULTS / "reported.json", work / "reported.json")
    lb.regenerate(work, load_splits=lb.registry_loader(), plots=False)
    for name in (
        "leaderboard.md",
        "leaderboard.tex",
        "site/index.html",
        "site/data.js",
        "site/app.js",
        "site/style.css",
    ):
        assert (work / name).read_text() == (RESULTS / name).read_text(), (
            f"results/{name} drifted from the submissions: run `run_benchmark.py leaderboard`"
        )


def test_registry_loader_verifies_synthetic_rows_and_not_real_ones(tmp_path, synth_lpr4m, synth_movingfashion):
    """The default loader regenerates a synthetic set from the submission's size/seed."""
    write_submission(
        make_submission(
            synth_lpr4m, method="synth-run", dataset="lpr4m-synth", dataset_size="tiny", dataset_seed=0, topk=5
        ),
        tmp_path,
    )
    write_submission(
        make_submission(
            synth_movingfashion,
            method="mf-run",
            dataset="movingfashion-synth",
            dataset_size="tiny",
            dataset_seed=0,
            topk=5,
        ),
        tmp_path,
    )
    real = make_submission(synth_lpr4m, method="real-run", dataset="lpr4m", topk=5)  # real dataset name, no data root
    write_submission(real, tmp_path)
    board = lb.regenerate(tmp_path, load_splits=lb.registry_loader(), plots=False)
    status = {r.method: r.status for rows in board.tables.values() for r in rows}
    assert status == {"synth-run": "verified", "mf-run": "verified", "real-run": "unverified"}
    assert lb.registry_loader()({"name": "no-such-dataset"}) is None
