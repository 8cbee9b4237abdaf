"""End to end through the command line: clip-meanpool on lpr4m-synth (tiny), a few steps.

One run (module fixture) trains 2 optimizer steps, evaluates, writes a submission and the
leaderboard; the tests then check the files, re-score the submission, tamper with it, and
resume the run from its checkpoint.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli.main import main
from benchmark.record import submission
from benchmark.record.rescore import rescore
from benchmark.training.checkpoint import load_checkpoint
from tests.evalkit import recall_at

pytestmark = pytest.mark.slow

LABEL = "clip-meanpool-train.batch_size-8"  # --batch-size 8: not the tiny profile's recipe (32)
SUB_NAME = f"lpr4m-synth__tiny__{LABEL}__seed0.json"


def _args(out: Path, res: Path, *extra: str) -> list[str]:
    return [
        "--method",
        "clip-meanpool",
        "--dataset",
        "lpr4m-synth",
        "--synth-size",
        "tiny",
        "--profile",
        "tiny",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "--bootstrap",
        "50",
        "--output-dir",
        str(out),
        "--results-dir",
        str(res),
        *extra,
    ]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, synth_lpr4m):
    base = tmp_path_factory.mktemp("e2e")
    out, res = base / "runs", base / "results"
    rc = main(_args(out, res))
    assert rc == 0
    return out, res


def test_submission_validates_and_metrics_are_real_percentages(e2e, synth_lpr4m):
    _, res = e2e
    path = res / "submissions" / SUB_NAME
    sub = submission.load_submission(path)  # schema + consistency
    assert sub["method"]["name"] == "clip-meanpool" and sub["dataset"]["name"] == "lpr4m-synth"
    assert sub["dataset"]["num_queries"] == len(synth_lpr4m.queries) == len(sub["rankings"])
    overall = sub["metrics"]["overall"]
    assert {"R1", "R3", "R5", "R10", "mAP"} <= set(overall)
    for name, entry in overall.items():
        v = entry["value"]
        assert isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 100.0, (name, v)
        lo, hi = entry["ci95"]
        assert 0.0 <= lo <= v <= hi <= 100.0
    for k in (1, 3, 5, 10):  # each claimed R@k is its saved rankings' own
        assert overall[f"R{k}"]["value"] == pytest.approx(recall_at(sub, synth_lpr4m, k), abs=1e-9)
    # every query is ranked inside its own livestream's gallery
    group_of = {g.image_id: g.group for g in synth_lpr4m.gallery}
    for q, (qid, ids) in zip(synth_lpr4m.queries, sub["rankings"]):
        assert qid == q.query_id and ids and {group_of[i] for i in ids} == {q.group}
    prov = sub["provenance"]
    assert prov["seed"] == 0 and prov["training"]["steps"] == 2 and prov["training"]["per_process_batch"] == 8
    assert len(prov["git"]["commit"] or "0" * 40) == 40
    assert prov["packages"]["torch"] and prov["device"].startswith("cpu")
    assert sub["dataset"]["size"] == "tiny" and sub["dataset"]["seed"] == 0


def test_rescoring_the_submission_verifies_every_claim(e2e, synth_lpr4m):
    _, res = e2e
    report = rescore(res / "submissions" / SUB_NAME, synth_lpr4m)
    assert {"R1", "R3", "R5", "R10"} <= set(report.verified)


def test_score_command_accepts_it_and_rejects_a_tampered_copy(e2e, tmp_path, capsys):
    _, res = e2e
    path = res / "submissions" / SUB_NAME
    assert main(["score", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    sub = json.loads(path.read_text())
    sub["metrics"]["overall"]["R1"]["value"] = min(100.0, sub["metrics"]["overall"]["R1"]["value"] + 5.0)
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(sub))
    assert main(["score", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.overall.R1: claimed" in err and "Traceback" not in err


def test_run_directory_holds_checkpoint_and_config(e2e):
    out, _ = e2e
    run_dir = out / "lpr4m-synth" / LABEL / "tiny-seed0"
    state = load_checkpoint(run_dir / "last.pt")
    assert state["step"] == 2 and state["identity"]["method"] == "clip-meanpool"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["run"]["profile"]["train"]["max_steps"] == 2 and cfg["run"]["profile"]["train"]["batch_size"] == 8
    assert cfg["method_config"]["encoder"]["width"] == 192


def test_resume_trains_no_further_and_reproduces_the_rankings(e2e, tmp_path):
    out, res = e2e
    before = json.loads((res / "submissions" / SUB_NAME).read_text())
    res2 = tmp_path / "results"
    assert main(_args(out, res2, "--resume")) == 0
    after = json.loads((res2 / "submissions" / SUB_NAME).read_text())
    assert after["provenance"]["training"]["resumed_from_step"] == 2
    assert after["provenance"]["training"]["steps"] == 2
    assert after["rankings"] == before["rankings"]
    assert after["metrics"] == before["metrics"]


def test_leaderboard_was_regenerated(e2e):
    _, res = e2e
    board = res / "leaderboard.md"
    assert board.is_file() and "clip-meanpool" in board.read_text()


def test_cli_as_a_subprocess_exits_cleanly(tmp_path):
    """The real entry point (``run_benchmark.py``) in a fresh interpreter, from another folder."""
    repo = Path(__file__).resolve().parents[1]
    bad = subprocess.run(
        [sys.executable, str(repo / "run_benchmark.py"), "--method", "clip-meenpool", "--dataset", "lpr4m-synth"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "Did you mean 'clip-meanpool'" in bad.stderr and "Traceback" not in bad.stderr


def test_epochs_zero_evaluates_the_untrained_network_beside_the_trained_run(tmp_path, synth_lpr4m):
    """``--epochs 0`` from random weights is the untrained control: its own run dir and
    submission (``-untrained``), never written over the trained run's checkpoint or row."""
    res, out = tmp_path / "results", tmp_path / "runs"
    assert main(_args(out, res, "--no-leaderboard")) == 0
    trained_dir = out / "lpr4m-synth" / LABEL / "tiny-seed0"
    before = {
        p.name: p.read_bytes()
        for p in (trained_dir / "last.pt", trained_dir / "config.json", res / "submissions" / SUB_NAME)
    }
    assert main(_args(out, res, "--epochs", "0", "--no-leaderboard")) == 0
    assert {
        p.name: p.read_bytes()
        for p in (trained_dir / "last.pt", trained_dir / "config.json", res / "submissions" / SUB_NAME)
    } == before
    sub = submission.load_submission(res / "submissions" / "lpr4m-synth__tiny__clip-meanpool__untrained__seed0.json")
    assert "training" not in sub["provenance"] and submission.submission_start(sub) == "untrained"
    untrained_dir = out / "lpr4m-synth" / "clip-meanpool" / "tiny-seed0-untrained"
    assert (untrained_dir / "config.json").is_file() and not (untrained_dir / "last.pt").exists()
    assert sub["provenance"]["run_dir"] == str(untrained_dir)
    assert not (res / "leaderboard.md").exists()


def test_a_stale_submission_beside_it_does_not_fail_the_run(e2e, tmp_path, capsys):
    """Another submission that no longer re-scores (its data changed) is left off the
    leaderboard, which is regenerated without it, and named in a warning; the run itself
    succeeds and its own submission is written."""
    out, res = e2e
    res2 = tmp_path / "results"
    stale = json.loads((res / "submissions" / SUB_NAME).read_text())
    stale["dataset"]["annotation_checksum"] = "0" * 64
    stale["method"]["variant"] = "old"
    (res2 / "submissions").mkdir(parents=True)
    stale_path = res2 / "submissions" / f"lpr4m-synth__tiny__{LABEL}-old__seed0.json"
    stale_path.write_text(json.dumps(stale))
    capsys.readouterr()
    assert main(_args(out, res2, "--resume")) == 0
    err = capsys.readouterr().err
    assert "warning: this run's submission was written; leaderboard: regenerated without 1 file(s)" in err
    assert stale_path.name in err and "annotation_checksum" in err
    assert submission.load_submission(res2 / "submissions" / SUB_NAME)["method"]["name"] == "clip-meanpool"
    md = (res2 / "leaderboard.md").read_text()
    assert "clip-meanpool" in md and "-old" not in md
