"""``reproduce``: a tiny run made at a commit is re-run there and matches exactly.

The original run is made in a throwaway ``git worktree`` of HEAD (a clean tree, so the
submission records HEAD and ``dirty: false``), outside this checkout; ``reproduce`` then makes
its own temporary worktree at the recorded commit. Neither touches this checkout's files or
index; both worktrees are removed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.record.reproduce import ReproduceError, command_for, compare, legacy_overrides, reproduce
from benchmark.record.submission import dumps_submission, load_submission

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def original(tmp_path_factory, synth_lpr4m):
    """A 2-step clip-meanpool run on lpr4m-synth (tiny), made at HEAD in a clean worktree."""
    base = tmp_path_factory.mktemp("made-at-head")
    tree = base / "worktree"
    assert _git("worktree", "add", "--detach", str(tree), "HEAD").returncode == 0
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
        proc = subprocess.run(
            [
                sys.executable,
                "run_benchmark.py",
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
                "--bootstrap",
                "50",
                "--num-workers",
                "0",
                "--no-leaderboard",
                "--output-dir",
                str(base / "runs"),
                "--results-dir",
                str(base / "results"),
            ],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        _git("worktree", "remove", "--force", str(tree))
        _git("worktree", "prune")
    (path,) = (base / "results" / "submissions").glob("*.json*")
    return path


def _listing(root: Path) -> dict[str, int]:
    """Every finished entry of a cache and its mtime; a generation in progress (another test worker's
    hidden ``.<name>.tmp-<pid>`` folder, renamed into place when whole) is not the re-run's doing."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") and ".tmp-" in part for part in rel.parts):
            continue
        try:
            out[rel.as_posix()] = p.stat().st_mtime_ns
        except FileNotFoundError:  # renamed away between the listing and the stat
            continue
    return out


def test_a_tiny_run_is_reproduced_exactly_at_its_commit(original, synth_cache):
    sub = load_submission(original)
    assert sub["provenance"]["git"]["dirty"] is False
    worktrees_before = {line.split()[0] for line in _git("worktree", "list").stdout.splitlines()}
    users_cache = _listing(synth_cache)
    result = reproduce(original, log=lambda *_: None)
    assert _listing(synth_cache) == users_cache  # the re-run regenerated its set in a cache of its own
    assert result.comparison.rankings_identical and result.comparison.verdict == "exact", result.comparison.lines
    assert result.comparison.max_abs_diff == 0.0
    assert "--max-steps" in result.command and "--seed" in result.command
    assert {
        line.split()[0] for line in _git("worktree", "list").stdout.splitlines()
    } == worktrees_before  # its worktree is gone


def test_compare_reports_differences_against_the_intervals(original):
    sub = load_submission(original)
    moved = copy.deepcopy(sub)
    r1 = moved["metrics"]["overall"]["R1"]
    r1["value"] = r1["ci95"][1] + 5.0  # outside the recorded interval
    moved["rankings"][0][1] = list(reversed(moved["rankings"][0][1]))
    out = compare(sub, moved)
    assert not out.rankings_identical and not out.within and out.verdict == "NOT reproduced"
    assert any(line.startswith("R1: recorded") and "OUTSIDE" in line for line in out.lines)


def test_an_unknown_commit_is_one_clear_error(original, tmp_path):
    sub = load_submission(original)
    sub["provenance"]["git"]["commit"] = "f" * 40
    path = tmp_path / "x.json"
    path.write_text(dumps_submission(sub))
    with pytest.raises(ReproduceError, match="commit ffffffffffff is not in this repository"):
        reproduce(path, log=lambda *_: None)


def test_the_command_carries_the_recorded_settings(original, tmp_path):
    sub = load_submission(original)
    args = command_for(sub, {"encoder.layers": "2"}, output=tmp_path)
    joined = " ".join(args)
    assert "--method clip-meanpool --dataset lpr4m-synth --profile tiny --seed 0" in joined
    assert "--synth-size tiny" in joined and "--max-steps 2" in joined and "--batch-size 8" in joined
    assert "--bootstrap 50" in joined and "--set encoder.layers=2" in joined and "--no-feature-cache" in joined
    assert legacy_overrides({"a": 1, "b": {"c": [1, 2]}, "d": None}, {"a": 1, "b": {"c": [1, 3]}, "d": 0.5}) == {
        "b.c": "1,2",
        "d": "none",
    }
