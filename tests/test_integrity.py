"""The record's integrity without training: leaderboard collection (duplicates, links, bad and
truncated files), per-row flags, the v2 schema, a dirty tree's diff, run identities (issue 22)."""

from __future__ import annotations

import copy
import gzip
import os
import subprocess
from pathlib import Path

import pytest

from benchmark.core import safe_json
from benchmark.record import collect, run_identity
from benchmark.record.provenance import diff_record, git_info
from benchmark.record.submission import (
    SubmissionError,
    dumps_submission,
    load_submission,
    schema_errors,
    submission_filename,
    write_submission,
)
from benchmark.reports import leaderboard as lb
from benchmark.reports import publish
from tests.evalkit import loader_for, make_submission


@pytest.fixture
def board_dir(tmp_path, toy):
    write_submission(make_submission(toy, method="good", noise=0.3), tmp_path)
    write_submission(make_submission(toy, method="weak", noise=3.0), tmp_path)
    return tmp_path


def _rows(board):
    return [r for rows in board.tables.values() for r in rows]


# --- leaderboard collection --------------------------------------------------------------


def test_a_copy_under_another_name_is_one_row_with_a_note(board_dir, toy):
    subs = board_dir / "submissions"
    original = subs / "toy__tiny__good__seed0.json"
    (subs / "my-copy.json").write_bytes(original.read_bytes())
    board = lb.regenerate(board_dir, load_splits=loader_for(toy), plots=False, site=False)
    good = [r for r in _rows(board) if r.method == "good"]
    assert len(good) == 1 and good[0].path == "submissions/toy__tiny__good__seed0.json"  # the canonical name kept
    assert good[0].duplicates == ["my-copy.json"] and "my-copy.json" in good[0].note
    assert not board.skipped


def test_a_submission_of_the_same_identity_with_other_rankings_is_a_duplicate(board_dir, toy):
    sub = load_submission(board_dir / "submissions" / "toy__tiny__good__seed0.json")
    other = copy.deepcopy(sub)
    i = next(i for i, (_, ids) in enumerate(other["rankings"]) if len(ids) > 1)
    other["rankings"][i][1] = list(reversed(other["rankings"][i][1]))  # same run, re-written rankings
    assert collect.rankings_digest(other) != collect.rankings_digest(sub)
    assert collect.identity_digest(other) == collect.identity_digest(sub)
    (board_dir / "submissions" / "again.json").write_text(dumps_submission(other))
    items, skipped = collect.gather(board_dir)
    assert [(i.path.name, i.duplicates) for i in items if i.submission["method"]["name"] == "good"] == [
        ("toy__tiny__good__seed0.json", ["again.json"])
    ]


def test_untrained_controls_that_rank_alike_stay_separate_rows(tmp_path, toy):
    """Same rankings, different variants (RICE's icl / icl+pmd untrained): not duplicates."""
    a = make_submission(toy, method="m", variant="a", noise=0.3)
    b = copy.deepcopy(a)
    b["method"]["variant"] = "b"
    write_submission(a, tmp_path)
    write_submission(b, tmp_path)
    items, _ = collect.gather(tmp_path)
    assert len(items) == 2 and not any(i.duplicates for i in items)


def test_symlinks_and_non_regular_files_are_refused(board_dir, toy, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "far.json"
    outside.write_text(dumps_submission(make_submission(toy, method="far", noise=0.3)))
    subs = board_dir / "submissions"
    os.symlink(outside, subs / "linked.json")
    os.mkfifo(subs / "pipe.json")
    board = lb.regenerate(board_dir, load_splits=loader_for(toy), plots=False, site=False)
    assert {r.method for r in _rows(board)} == {"good", "weak"}  # the link was not followed
    why = dict(board.skipped)
    assert "symbolic link" in why[str(subs / "linked.json")]
    assert "not a regular file" in why[str(subs / "pipe.json")]


def test_one_bad_file_is_skipped_the_rest_regenerated_and_the_command_fails(board_dir, toy, capsys, monkeypatch):
    subs = board_dir / "submissions"
    (subs / "broken.json").write_text('{"schema_version": 2, ')
    monkeypatch.setattr(lb, "registry_loader", lambda roots=None: loader_for(toy))
    rc = publish.leaderboard_command(board_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[0].startswith(f"skipped: {subs / 'broken.json'}: invalid JSON at line 1")
    assert err[-1].startswith("error: 1 file(s) skipped") and len(err) == 2
    md = (board_dir / "leaderboard.md").read_text()
    assert "good" in md and "weak" in md


def test_a_truncated_gzip_is_named_as_truncated(board_dir, toy):
    sub = make_submission(toy, method="big", noise=0.3)
    path = write_submission(sub, board_dir, gzip_over=100)
    assert path.name.endswith(".json.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SubmissionError, match="truncated gzip file"):
        load_submission(path)
    board = lb.regenerate(board_dir, load_splits=loader_for(toy), plots=False, site=False)
    assert "truncated gzip" in dict(board.skipped)[str(path)]
    assert {r.method for r in _rows(board)} == {"good", "weak"}


def test_an_honest_gzip_bomb_is_still_refused_from_its_trailer(tmp_path):
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b"[" + b" " * (4 << 20) + b"]"))
    with pytest.raises(safe_json.UntrustedJSONError, match="says its gzip trailer"):
        safe_json.read_limited(path, max_bytes=1 << 20)


def test_rows_carry_the_dirty_and_partial_flags(tmp_path, toy):
    clean = make_submission(toy, method="clean", noise=0.3)
    dirty = make_submission(toy, method="dirty", noise=0.3)
    dirty["provenance"]["git"] = {
        "commit": "1" * 40,
        "dirty": True,
        "diff_sha256": "2" * 64,
        "diff_bytes": 10,
        "diff": "x",
        "diff_truncated": False,
    }
    partial = make_submission(toy, method="cut", noise=0.3)
    partial["provenance"]["identity"] = {
        "dataset": "toy",
        "annotation_checksum": toy.annotation_checksum,
        "profile": "tiny",
        "method": "cut",
        "code": {"sha256": "3" * 64},
        "seed": 0,
        "max_steps": 2,
        "planned_steps": 40,
        "partial": True,
    }
    for s in (clean, dirty, partial):
        write_submission(s, tmp_path)
    board = lb.regenerate(tmp_path, load_splits=loader_for(toy), plots=False, site=False)
    rows = {r.method: r for r in _rows(board)}
    assert (rows["clean"].dirty, rows["dirty"].dirty, rows["cut"].dirty) == (False, True, False)
    assert (rows["clean"].partial, rows["cut"].partial) == (False, True)
    assert rows["cut"].analysis and "partial" in rows["cut"].stage and not rows["clean"].analysis


def test_legacy_partial_is_read_from_max_steps_and_epochs():
    sub = {"profile": {"train": {"epochs": 4, "max_steps": 2}}, "provenance": {"training": {"epochs_completed": 0}}}
    assert run_identity.is_partial(sub)
    sub["profile"]["train"]["max_steps"] = None  # no truncation asked: a full run
    assert not run_identity.is_partial(sub)


# --- schema --------------------------------------------------------------------------------


def test_v2_writes_identity_and_diff_and_v1_still_loads(tmp_path, toy):
    sub = make_submission(toy, method="m", noise=0.3)
    assert sub["schema_version"] == 3
    v1 = copy.deepcopy(sub)
    v1["schema_version"] = 1
    v1["dataset"].pop("num_queries_without_frames")  # a field v2 added (v1 files predate it)
    path = tmp_path / "v1.json"
    path.write_text(dumps_submission(v1))
    assert load_submission(path)["schema_version"] == 1  # committed v1 submissions keep loading
    bad = copy.deepcopy(sub)
    bad["provenance"]["identity"] = {
        "dataset": "toy",
        "annotation_checksum": "x",
        "profile": "tiny",
        "method": "m",
        "code": {"sha256": "not-a-hash"},
        "seed": 0,
        "partial": False,
    }
    assert any("identity/code/sha256" in e for e in schema_errors(bad))


# --- provenance of a dirty tree ----------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_dirty_tree_records_its_diff_capped(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "c")
    assert git_info(repo) == {"commit": git_info(repo)["commit"], "dirty": False}
    (repo / "results" / "r.json").write_text('{"a": 1}\n')  # harness output: not a code change
    assert git_info(repo)["dirty"] is False
    (repo / "a.py").write_text("x = 2\n" + "# pad\n" * 200)
    (repo / "new.py").write_text("y = 3\n")
    info = git_info(repo)
    assert info["dirty"] is True and "+x = 2" in info["diff"] and "results/r.json" not in info["diff"]
    assert info["diff_bytes"] == len(info["diff"].encode()) and not info["diff_truncated"]
    assert set(info["untracked"]) == {"new.py"}
    capped = diff_record(repo, diff_cap=100)
    assert capped["diff_truncated"] and len(capped["diff"].encode()) <= 100
    assert capped["diff_sha256"] == info["diff_sha256"] and capped["diff_bytes"] == info["diff_bytes"]


# --- run identity ------------------------------------------------------------------------------


def test_check_target_refuses_another_identity_and_allows_the_same(tmp_path, toy):
    sub = make_submission(toy, method="m", noise=0.3)
    path = write_submission(sub, tmp_path)
    run_identity.check_target(path, run_identity.comparable(sub), overwrite=False)  # same run: fine
    other = copy.deepcopy(sub)
    other["dataset"]["annotation_checksum"] = "f" * 64
    with pytest.raises(run_identity.IdentityError, match=r"annotation checksum .* -> ffffffffffff.*--overwrite"):
        run_identity.check_target(path, run_identity.comparable(other), overwrite=False)
    run_identity.check_target(path, run_identity.comparable(other), overwrite=True)
    coded = copy.deepcopy(sub)
    coded["provenance"]["identity"] = {"code": {"sha256": "a" * 64}}
    run_identity.check_target(path, run_identity.comparable(coded), overwrite=False)  # legacy: code unknown
    grown = copy.deepcopy(sub)
    grown["method"]["config"]["added_since"] = 3  # a config field the older record predates: unknown
    grown["profile"]["train"]["adam_eps"] = 1e-8
    run_identity.check_target(path, run_identity.comparable(grown), overwrite=False)
    grown["profile"]["train"]["max_steps"] = 2  # a recorded field that changed: another run
    with pytest.raises(run_identity.IdentityError, match=r"profile: train\.max_steps null -> 2"):
        run_identity.check_target(path, run_identity.comparable(grown), overwrite=False)
    assert path.name == submission_filename(sub)


def test_code_hash_follows_a_plugin_file(tmp_path):
    import importlib.util

    from torch import nn

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text("from torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n")
    spec = importlib.util.spec_from_file_location("my_plugin_for_hash", plugin)
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["my_plugin_for_hash"] = mod
    spec.loader.exec_module(mod)
    net = nn.Sequential(mod.Net(), nn.Linear(2, 2))
    first = run_identity.code_hash(net)
    assert "plugin:my_plugin.py" in first["files"] and not any("torch" in f for f in first["files"])
    plugin.write_text(plugin.read_text() + "        # edited\n")
    assert run_identity.code_hash(net)["sha256"] != first["sha256"]


def test_reproduce_applies_a_recorded_diff_only_when_asked_and_says_when_it_cannot(tmp_path):
    """A diff as git_info records it passes its own hash check and applies; unasked, or cut, it
    does not (benchmark/record/reproduce.py, issue 34)."""
    from benchmark.record.reproduce import NotFromCommit, _apply_recorded_diff, recorded_diff
    from benchmark.record.untrusted import SubmissionRefused

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "c")
    (repo / "a.py").write_text("x = 2\n")
    info = git_info(repo)
    _git(repo, "checkout", "-q", "--", "a.py")  # the commit alone: x = 1
    with pytest.raises(NotFromCommit, match="cannot be reproduced from its commit alone"):
        recorded_diff(Path("s.json"), info, apply=False)
    summary = recorded_diff(Path("s.json"), info, apply=True, log=lambda *_: None)
    assert summary.hash_matches and {p: (f.added, f.removed) for p, f in summary.files.items()} == {"a.py": (1, 1)}
    assert _apply_recorded_diff(info, repo) == ["applied the recorded diff of the dirty tree (--apply-recorded-diff)"]
    assert (repo / "a.py").read_text() == "x = 2\n"
    cut = {**info, "diff_truncated": True}
    with pytest.raises(NotFromCommit, match="its diff was recorded only in part"):
        recorded_diff(Path("s.json"), cut, apply=False)
    with pytest.raises(SubmissionRefused, match="recorded only in part: there is no verified diff to apply"):
        recorded_diff(Path("s.json"), cut, apply=True)


# --- a run leaves the committed record alone (issue 38) -------------------------------------------


def test_a_run_writes_to_the_untracked_user_results_by_default():
    from benchmark.cli.main import build_parser
    from benchmark.core.config import USER_RESULTS_DIR, RunConfig, get_profile

    args = build_parser().parse_args(["run", "--method", "m", "--dataset", "d"])
    assert args.results_dir == USER_RESULTS_DIR == RunConfig("m", "d", get_profile("tiny")).results_dir
    assert USER_RESULTS_DIR.parts[0] == "runs"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(USER_RESULTS_DIR / "submissions" / "x.json")],
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert ignored.returncode == 0  # git ignores it: a run never modifies a tracked file


def test_a_run_beside_a_committed_row_says_how_it_compares(tmp_path, toy):
    committed, user = tmp_path / "results", tmp_path / "runs" / "results"
    sub = make_submission(toy, method="good", noise=0.3)
    write_submission(sub, committed)
    assert "exact: the same rankings" in publish.committed_comparison(sub, user, committed)
    near = copy.deepcopy(sub)
    ids = next(r[1] for r in near["rankings"] if len(set(r[1])) > 1)
    ids[0], ids[1] = ids[1], ids[0]  # one query's ranking changed
    assert "within the committed row's 95% interval" in publish.committed_comparison(near, user, committed)
    far = make_submission(toy, method="good", noise=6.0)  # another config: another identity
    line = publish.committed_comparison(far, user, committed)
    assert "outside the committed row's 95% interval" in line and "another identity" in line
    assert publish.committed_comparison(sub, committed, committed) is None  # written into the record itself
    other = make_submission(toy, method="other", noise=0.3)
    assert publish.committed_comparison(other, user, committed) is None  # no committed row of that name
