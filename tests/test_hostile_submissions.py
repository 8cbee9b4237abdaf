"""Hostile submissions: ``reproduce`` runs nothing a submission carries unless asked.

A corpus that grows with each finding: every case is a committed submission
(``movingfashion-synth__tiny__nvan__untrained__seed0.json``) moved to this repository's HEAD and
altered as a hostile contributor would alter it, with the one line the user sees and the exit
status. Nothing here trains: a case is refused (or stopped) before anything runs, and the two
tests that must get as far as the re-run replace its one boundary
(:func:`benchmark.record.reproduce.run_child`) with a command that only imports the worktree's
``run_benchmark.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmark.cli.main import main
from benchmark.record import reproduce as rp
from benchmark.record.untrusted import FIELDS, SubmissionRefused, check_tree_paths, summarize_diff, vet_submission

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "results" / "submissions" / "movingfashion-synth__tiny__nvan__untrained__seed0.json"
HEADLINE = (
    "{path}: from a modified tree: cannot be reproduced from its commit alone; the recorded diff was not "
    "applied (it is code: read it, then pass --apply-recorded-diff)"
)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def worktrees() -> set[str]:
    """The repository's worktree paths (their commits move when someone commits meanwhile)."""
    return {line.split()[0] for line in _git("worktree", "list").splitlines()}


def marker_diff(marker: Path) -> str:
    """The issue's diff: one line at the top of ``run_benchmark.py`` (as at HEAD) writing ``marker``."""
    lines = _git("show", "HEAD:run_benchmark.py").split("\n")[:3]
    body = "".join(f" {line}\n" for line in lines)
    return (
        "diff --git a/run_benchmark.py b/run_benchmark.py\n--- a/run_benchmark.py\n+++ b/run_benchmark.py\n"
        f"@@ -1,{len(lines)} +1,{len(lines) + 1} @@\n+open({str(marker)!r}, 'w').write('ran')\n{body}"
    )


def with_diff(sub: dict, diff: str, *, sha: str | None = None) -> dict:
    git = sub["provenance"]["git"]
    data = diff.encode("utf-8")
    git.update(
        dirty=True,
        diff=diff,
        diff_bytes=len(data),
        diff_truncated=False,
        diff_sha256=sha or hashlib.sha256(data).hexdigest(),
        untracked={},
    )
    return sub


@pytest.fixture
def import_only(monkeypatch) -> dict[str, Any]:
    """The re-run's boundary replaced: instead of training, only import the worktree's
    ``run_benchmark.py`` (which runs whatever a diff put at its top), then fail with status 7."""
    seen: dict[str, Any] = {}

    def run(argv, *, cwd, env, log_path, timeout):
        seen.update(env=env, cwd=cwd)
        return (
            subprocess.run(
                [sys.executable, "run_benchmark.py", "--help"],
                cwd=cwd,
                env=dict(env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode
            + 7
        )

    monkeypatch.setattr(rp, "run_child", run)
    return seen


@pytest.fixture
def base() -> dict:
    sub = json.loads(BASE.read_text(encoding="utf-8"))
    sub["provenance"]["git"] = {"commit": _git("rev-parse", "HEAD").strip(), "dirty": False}
    return sub


def write(tmp_path: Path, sub: dict, name: str = "hostile.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(sub), encoding="utf-8")
    return path


def run_cli(path: Path, capsys, *flags: str) -> tuple[int, list[str], list[str]]:
    status = main(["reproduce", str(path), *flags])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


# --- the crafted diff of the issue ---------------------------------------------------------------


def test_the_crafted_diff_is_not_run_by_default(base, tmp_path, capsys, import_only):
    marker = tmp_path / "marker"
    diff = marker_diff(marker)
    path = write(tmp_path, with_diff(base, diff))
    before = worktrees()
    status, out, err = run_cli(path, capsys)
    sha = hashlib.sha256(diff.encode()).hexdigest()
    assert status == rp.EXIT_MODIFIED_TREE == 3
    assert out == [
        HEADLINE.format(path=path),
        (
            f"recorded diff: 1 file(s), +1 -0 lines, {len(diff.encode())} bytes, sha256 {sha[:16]} "
            f"(matches the recorded diff_sha256)"
        ),
        "  run_benchmark.py: +1 -0",
    ]
    assert err == []
    assert not marker.exists()
    assert worktrees() == before  # nothing was checked out, nothing ran


def test_the_crafted_diff_runs_only_when_asked_and_in_its_own_cache(base, tmp_path, capsys, monkeypatch, import_only):
    """The same file with --apply-recorded-diff: the diff is applied (the marker appears, so the
    default case above is a real test), after the summary; the re-run's cache is its own."""
    marker = tmp_path / "marker"
    path = write(tmp_path, with_diff(base, marker_diff(marker)))
    seen = import_only
    monkeypatch.setenv("LPR_BENCH_CACHE", str(tmp_path / "users-cache"))
    status, out, err = run_cli(path, capsys, "--apply-recorded-diff")
    assert (
        out[0] == f"{path}: from a modified tree: cannot be reproduced from its commit alone; applying its "
        "recorded diff (--apply-recorded-diff)"
    )
    assert out[1].startswith("recorded diff: 1 file(s), +1 -0 lines")
    assert marker.read_text() == "ran"
    assert status == 1 and err == ["error: the re-run failed (exit 7): no output"]
    cache = Path(seen["env"]["LPR_BENCH_CACHE"])
    assert cache.name == "cache" and cache.parent == Path(seen["cwd"]).parent  # inside the temporary folder
    assert not (tmp_path / "users-cache").exists()


# --- the corpus: one altered field, one line, one exit status ------------------------------------


@dataclass
class Case:
    name: str
    alter: Callable[[dict, Path], Any]
    line: str  # what the user sees on stderr, after "refused: <path>: "
    flags: tuple[str, ...] = ()


def _set(dotted: str, value: Any) -> Callable[[dict, Path], None]:
    def alter(sub: dict, _tmp: Path) -> None:
        *parents, last = dotted.split(".")
        obj = sub
        for p in parents:
            obj = obj.setdefault(p, {})
        obj[last] = value

    return alter


def _diff(text: str, sha: str | None = None) -> Callable[[dict, Path], None]:
    return lambda sub, _tmp: with_diff(sub, text, sha=sha)


def _tampered(sub: dict, tmp: Path) -> None:
    with_diff(sub, marker_diff(tmp / "marker"), sha="0" * 64)


OUTSIDE = (
    "diff --git a/../outside.py b/../outside.py\nnew file mode 100644\n--- /dev/null\n+++ b/../outside.py\n"
    "@@ -0,0 +1 @@\n+x = 1\n"
)
ABSOLUTE = "--- /dev/null\n+++ /tmp/lpr-absolute.py\n@@ -0,0 +1 @@\n+x = 1\n"
SYMLINK = (
    "diff --git a/link b/link\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/link\n"
    "@@ -0,0 +1 @@\n+/home\n\\ No newline at end of file\n"
)
INTO_GIT = "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1,2 @@\n x\n+[core]\n"
EVIL = "--plugin=/tmp/evil.py"

CASES = [
    Case(
        "diff-hash-mismatch",
        _tampered,
        "the recorded diff's sha256 {sha} does not match its recorded diff_sha256 '0000000000000000'",
    ),
    Case(
        "diff-hash-mismatch-even-when-asked",
        _tampered,
        "the recorded diff's sha256 {sha} does not match its recorded diff_sha256 '0000000000000000'",
        ("--apply-recorded-diff",),
    ),
    Case(
        "diff-writes-outside",
        _diff(OUTSIDE),
        "the recorded diff writes a path outside the worktree: 'a/../outside.py b/../outside.py'",
    ),
    Case(
        "diff-writes-outside-even-when-asked",
        _diff(OUTSIDE),
        "the recorded diff writes a path outside the worktree: 'a/../outside.py b/../outside.py'",
        ("--apply-recorded-diff",),
    ),
    Case("diff-absolute-path", _diff(ABSOLUTE), "the recorded diff writes an absolute path: '/tmp/lpr-absolute.py'"),
    Case(
        "diff-creates-symlink",
        _diff(SYMLINK),
        "the recorded diff creates a symbolic link (it could lead outside the worktree)",
    ),
    Case("diff-into-dot-git", _diff(INTO_GIT), "the recorded diff writes a path inside .git: '.git/config'"),
    Case(
        "diff-truncated-when-asked",
        lambda s, t: (with_diff(s, "x\n"), s["provenance"]["git"].update(diff_truncated=True)),
        "its diff was recorded only in part: there is no verified diff to apply",
        ("--apply-recorded-diff",),
    ),
    Case("method-name-option", _set("method.name", EVIL), f"method.name '{EVIL}' looks like a command-line option"),
    Case("dataset-name-option", _set("dataset.name", "-h"), "dataset.name '-h' looks like a command-line option"),
    Case("dataset-size-option", _set("dataset.size", EVIL), f"dataset.size '{EVIL}' looks like a command-line option"),
    Case(
        "profile-name-option", _set("profile.name", "--help"), "profile.name '--help' looks like a command-line option"
    ),
    Case(
        "override-value-option",
        _set("provenance.identity.overrides", {"encoder.layers": EVIL}),
        f"override encoder.layers='{EVIL}' looks like a command-line option",
    ),
    Case(
        "override-key-option",
        _set("provenance.identity.overrides", {"--plugin": "x"}),
        "override key '--plugin' is not a dotted config path",
    ),
    Case(
        "override-value-path",
        _set("provenance.identity.overrides", {"encoder.pretrained": "/home/u/.ssh/id_rsa"}),
        "override encoder.pretrained='/home/u/.ssh/id_rsa' names a file path; reproduce passes no path a "
        "submission names (re-run it yourself with --set after reading it)",
    ),
    Case(
        "override-value-newline",
        _set("provenance.identity.overrides", {"a": "1\n--plugin=x"}),
        "override a='1\\n--plugin=x' is not printable text",
    ),
    Case(
        "train-number-option",
        _set("profile.train.batch_size", EVIL),
        f"profile.train.batch_size '{EVIL}' is not an integer",
    ),
    Case(
        "rerank-option",
        _set("profile.eval.rerank", EVIL),
        f"profile.eval.rerank '{EVIL}' is not one of none, all, topk",
    ),
    Case(
        "commit-option",
        _set("provenance.git.commit", "--upload-pack=touch /tmp/x"),
        "provenance.git.commit '--upload-pack=touch /tmp/x' is not a hexadecimal commit id",
    ),
    Case(
        "plugin-file",
        _set("provenance.identity.code", {"sha256": "0" * 64, "files": {"plugin:evil.py": "0" * 64}}),
        "the run imported plugin file 'evil.py'; reproduce never imports code a submission names (read it, then "
        "run it yourself with --plugin)",
    ),
    Case(
        "plugin-in-command",
        _set("provenance.command", "run_benchmark.py --plugin ./evil.py --method nvan"),
        "the run imported plugin './evil.py' (provenance.command); reproduce never imports code a submission "
        "names (read it, then run it yourself with --plugin)",
    ),
    Case(
        "initial-weights",
        _set("provenance.initial_weights", {"path": "/home/u/x.pt", "sha256": "0" * 64}),
        "the run started from a checkpoint (provenance.initial_weights); reproduce loads no file a submission names",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_submission_is_refused_with_one_line(case, base, tmp_path, capsys, import_only):
    case.alter(base, tmp_path)
    path = write(tmp_path, base)
    before = worktrees()
    status, out, err = run_cli(path, capsys, *case.flags)
    sha = hashlib.sha256((base["provenance"]["git"].get("diff") or "").encode()).hexdigest()[:16]
    assert (status, out, err) == (rp.EXIT_REFUSED, [], [f"refused: {path}: {case.line.format(sha=sha)}"])
    assert status == 4
    assert not (tmp_path / "marker").exists() and not import_only  # nothing ran
    assert worktrees() == before


def test_the_committed_submission_itself_passes_the_vetting(base):
    """The corpus's base is not refused (so every refusal above is the altered field's), nor a
    negative number, which is a value and not an option."""
    vet_submission(base)
    base["provenance"]["identity"]["overrides"] = {"loss.margin": "-0.3", "encoder.layers": "2"}
    vet_submission(base)


def test_every_listed_field_is_in_the_corpus():
    """:data:`FIELDS` (the note of what each field gets) and the corpus move together."""
    covered = {
        "method.name",
        "dataset.name",
        "dataset.size",
        "profile.name",
        "profile.train.*",
        "profile.eval.rerank",
        "provenance.identity.overrides",
        "provenance.git.commit",
        "provenance.git.diff",
        "provenance.identity.code.files",
        "provenance.command",
        "provenance.initial_weights.path",
    }
    unit_tested = {
        "provenance.seed",
        "profile.eval.rerank_topk, profile.eval.bootstrap",
        "method.config (legacy, no identity)",
    }
    not_passed_on = {"provenance.git.untracked", "method.variant, dataset/profile names in file names", "data root"}
    assert set(FIELDS) == covered | unit_tested | not_passed_on


@pytest.mark.parametrize(
    "where, value, line",
    [
        ("provenance.seed", "0 --plugin=x", "provenance.seed '0 --plugin=x' is not an integer"),
        ("profile.eval.bootstrap", True, "profile.eval.bootstrap True is not an integer"),
        ("profile.eval.rerank_topk", "-5", "profile.eval.rerank_topk '-5' is not an integer"),
    ],
)
def test_numbers_on_the_command_line_are_numbers(base, where, value, line):
    _set(where, value)(base, Path("."))
    with pytest.raises(SubmissionRefused) as exc:
        vet_submission(base)
    assert str(exc.value) == line


def test_legacy_overrides_get_the_same_rules(monkeypatch, base, tmp_path, capsys):
    """A submission without an identity: its --set values come from its method config, checked the same."""
    del base["provenance"]["identity"]
    base["method"]["config"] = {**base["method"]["config"], "dropout": EVIL}
    monkeypatch.setattr(rp, "default_config", lambda *a, **k: {**base["method"]["config"], "dropout": 0.1})
    monkeypatch.setattr(rp, "run_child", lambda *a, **k: pytest.fail("the re-run must not start"))
    status, _out, err = run_cli(write(tmp_path, base), capsys)
    assert status == 4 and err == [
        (f"refused: {tmp_path / 'hostile.json'}: override dropout='{EVIL}' looks like a command-line option")
    ]


def test_a_symbolic_link_in_the_checked_out_tree_cannot_lead_the_diff_outside(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").symlink_to(tmp_path.parent)
    summary = summarize_diff("--- a/data/x.py\n+++ b/data/x.py\n@@ -1 +1 @@\n-a\n+b\n", None)
    with pytest.raises(
        SubmissionRefused,
        match=r"^the recorded diff writes through a symbolic link outside the "
        r"worktree: 'data/x.py'$",
    ):
        check_tree_paths(summary, tree)
    check_tree_paths(summarize_diff("--- a/ok.py\n+++ b/ok.py\n@@ -1 +1 @@\n-a\n+b\n", None), tree)


def test_a_hunk_line_is_counted_once_even_when_it_looks_like_a_header():
    """``+++ ../x`` inside a hunk is an added line (counted), not a file name: the hunk counts decide."""
    text = "--- a/f.py\n+++ b/f.py\n@@ -1 +1,2 @@\n a\n+++ ../x\n"
    summary = summarize_diff(text, hashlib.sha256(text.encode()).hexdigest())
    assert [(f.path, f.added, f.removed) for f in summary.files.values()] == [("f.py", 1, 0)]
    assert summary.hash_matches
    assert copy.deepcopy(summary).lines()[0].endswith("(matches the recorded diff_sha256)")


def test_a_file_that_is_not_json_is_one_error_line_not_a_refusal(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    status, out, err = run_cli(path, capsys)
    assert status == 1 and out == [] and len(err) == 1 and err[0].startswith(f"error: {path}: ")
