"""A submission is data from a stranger: what ``reproduce`` takes from it, checked first.

Submissions arrive from other people (a plugin author's pull request, a file sent by mail), and
``run_benchmark.py reproduce THEIR_FILE`` is a maintainer's natural next step. Everything a
submission carries that could reach a command line, an import, git or the file system is
listed in :data:`FIELDS` with what it now gets; :func:`vet_submission` applies those rules to
the parsed JSON before anything runs, and raises :class:`SubmissionRefused` (one line naming
the field) on the first fault.

The recorded diff of a dirty tree (``provenance.git.diff``) is code. :func:`read_diff` checks
it without running it: its SHA-256 must equal the recorded ``diff_sha256`` (else it is refused,
whatever the options), every path it names must stay inside the worktree (no absolute path, no
``..`` component, nothing under ``.git``, no symbolic link created), and :class:`DiffSummary`
says what it touches (files, lines added and removed, hash). Whether it is then applied is the
caller's choice (``reproduce --apply-recorded-diff``); :func:`check_tree_paths` also refuses a
diff whose target, in the checked-out commit, lies behind a symbolic link leading outside it.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")  # a registry name, a size or profile name
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # --set KEY
NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")  # a negative number is a value, not an option
RERANK_MODES = ("none", "all", "topk")
TRAIN_NUMBERS = {
    "epochs": int,
    "batch_size": int,
    "grad_accum": int,
    "max_steps": int,
    "lr_encoder": float,
    "lr_new": float,
    "weight_decay": float,
}
EVAL_NUMBERS = {"rerank_topk": int, "bootstrap": int}
SYMLINK_MODE = "120000"
SHOWN = 120  # characters of a submitted value shown in a message

# every field of a submission that can reach a command line, an import, git or the file
# system, and what it gets (README's "Reproducing a row" and docs/reproduce.md cite this)
FIELDS: dict[str, str] = {
    "method.name": "--method argument: a registry name ([A-Za-z0-9][A-Za-z0-9._+-]*), never an option",
    "dataset.name": "--dataset argument: a registry name, never an option",
    "dataset.size": "--synth-size argument: a name, never an option",
    "profile.name": "--profile argument: a name, never an option",
    "provenance.seed": "--seed argument: an integer",
    "profile.train.*": "--epochs/--batch-size/--lr-*/--weight-decay/--max-steps/--grad-accum: numbers only",
    "profile.eval.rerank": "--rerank argument: one of none, all, topk",
    "profile.eval.rerank_topk, profile.eval.bootstrap": "--rerank-topk/--bootstrap arguments: integers",
    "provenance.identity.overrides": "--set KEY=VALUE: KEY a dotted config path; VALUE printable, not an "
    "option (negative numbers allowed), not a file path",
    "method.config (legacy, no identity)": "--set values derived from it: the same rules as the overrides",
    "provenance.git.commit": "git argument: hexadecimal only, and the commit must already be in your repository",
    "provenance.git.diff": "code: never applied unless --apply-recorded-diff; hash must match diff_sha256 "
    "(refused otherwise, always); paths inside the worktree, no symlinks (refused otherwise)",
    "provenance.git.untracked": "never read or written: counted in a note only",
    "provenance.identity.code.files": "a 'plugin:' entry (the run imported a plugin file) is refused: never imported",
    "provenance.command": "never run; a '--plugin' in it is refused (never imported)",
    "provenance.initial_weights.path": "refused (reproduce starts from no checkpoint a submission names)",
    "method.variant, dataset/profile names in file names": "the re-run names its own output file inside its "
    "temporary folder (characters outside [A-Za-z0-9._+-] replaced)",
    "data root": "never taken from a submission: only your --data-root",
}


class SubmissionRefused(Exception):
    """A submission carries something ``reproduce`` will not pass on; ``str()`` is one line."""


def shown(value: Any, limit: int = SHOWN) -> str:
    """``value`` for a message: quoted, control characters escaped, cut at ``limit``."""
    if not isinstance(value, str):
        return repr(value)[:limit]
    return repr(value[:limit] + ("..." if len(value) > limit else ""))  # repr escapes control characters


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


# --- fields that reach the command line -----------------------------------------------------


def check_token(where: str, value: Any) -> None:
    """A value passed as a command-line argument must be a plain name, never an option."""
    if not isinstance(value, str):
        raise SubmissionRefused(f"{where} {shown(value)} is not a name")
    if value.startswith("-"):
        raise SubmissionRefused(f"{where} {shown(value)} looks like a command-line option")
    if not TOKEN.match(value):
        raise SubmissionRefused(f"{where} {shown(value)} is not a plain name ([A-Za-z0-9][A-Za-z0-9._+-]*)")


def check_number(where: str, value: Any, kind: type) -> None:
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise SubmissionRefused(f"{where} {shown(value)} is not {'an integer' if kind is int else 'a number'}")


def check_override(key: Any, value: Any) -> None:
    """One ``--set KEY=VALUE`` a submission asks for."""
    if not isinstance(key, str) or not CONFIG_KEY.match(key):
        raise SubmissionRefused(f"override key {shown(key)} is not a dotted config path")
    where = f"override {key}"
    if not isinstance(value, str) or not value.isprintable():
        raise SubmissionRefused(f"{where}={shown(value)} is not printable text")
    if value.startswith("-") and not NUMBER.match(value):
        raise SubmissionRefused(f"{where}={shown(value)} looks like a command-line option")
    if value.startswith(("~", ".")) or "/" in value or "\\" in value:
        raise SubmissionRefused(
            f"{where}={shown(value)} names a file path; reproduce passes no path a "
            "submission names (re-run it yourself with --set after reading it)"
        )


def check_commit(value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{7,64}", value):
        raise SubmissionRefused(f"provenance.git.commit {shown(value)} is not a hexadecimal commit id")


def check_plugins(prov: Mapping[str, Any]) -> None:
    """A run that imported a plugin cannot be re-run without importing it: refused."""
    files = _get(prov, "identity.code.files")
    plugins = (
        sorted(k for k in files if isinstance(k, str) and k.startswith("plugin:")) if isinstance(files, Mapping) else []
    )
    if plugins:
        raise SubmissionRefused(
            f"the run imported plugin file {shown(plugins[0][len('plugin:') :])}; reproduce never "
            "imports code a submission names (read it, then run it yourself with --plugin)"
        )
    command = prov.get("command")
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = command.split()
        named = [a for a in argv if a == "--plugin" or a.startswith("--plugin=")]
        if named:
            i = argv.index(named[0])
            spec = named[0].partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
            raise SubmissionRefused(
                f"the run imported plugin {shown(spec)} (provenance.command); reproduce never "
                "imports code a submission names (read it, then run it yourself with --plugin)"
            )


def vet_submission(sub: Mapping[str, Any]) -> None:
    """Every rule of :data:`FIELDS` that needs no git; raises :class:`SubmissionRefused`."""
    prov = sub.get("provenance") if isinstance(sub.get("provenance"), Mapping) else {}
    for where in ("method.name", "dataset.name", "profile.name"):
        check_token(where, _get(sub, where))
    if _get(sub, "dataset.size") is not None:
        check_token("dataset.size", _get(sub, "dataset.size"))
    check_number("provenance.seed", prov.get("seed"), int)
    for name, kind in TRAIN_NUMBERS.items():
        if _get(sub, f"profile.train.{name}") is not None:
            check_number(f"profile.train.{name}", _get(sub, f"profile.train.{name}"), kind)
    rerank = _get(sub, "profile.eval.rerank")
    if rerank is not None and rerank not in RERANK_MODES:
        raise SubmissionRefused(f"profile.eval.rerank {shown(rerank)} is not one of {', '.join(RERANK_MODES)}")
    for name, kind in EVAL_NUMBERS.items():
        if _get(sub, f"profile.eval.{name}") is not None:
            check_number(f"profile.eval.{name}", _get(sub, f"profile.eval.{name}"), kind)
    overrides = _get(prov, "identity.overrides")
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            check_override(key, value)
    if _get(prov, "git.commit") is not None:
        check_commit(_get(prov, "git.commit"))
    if prov.get("initial_weights"):
        raise SubmissionRefused(
            "the run started from a checkpoint (provenance.initial_weights); reproduce loads no file a submission names"
        )
    if prov.get("weights_files"):
        raise SubmissionRefused(
            "the run read weights from files its config names (provenance.weights_files); "
            "reproduce loads no file a submission names"
        )
    check_plugins(prov)


# --- the recorded diff -------------------------------------------------------------------------


@dataclass
class FileChange:
    path: str
    added: int = 0
    removed: int = 0
    binary: bool = False


@dataclass
class DiffSummary:
    """What a recorded diff touches, and whether its hash is the recorded one."""

    sha256: str
    recorded_sha256: str | None
    size: int
    files: dict[str, FileChange] = field(default_factory=dict)

    @property
    def hash_matches(self) -> bool:
        return self.sha256 == self.recorded_sha256

    def lines(self) -> list[str]:
        added = sum(f.added for f in self.files.values())
        removed = sum(f.removed for f in self.files.values())
        match = "matches the recorded diff_sha256" if self.hash_matches else "does NOT match the recorded diff_sha256"
        out = [
            (
                f"recorded diff: {len(self.files)} file(s), +{added} -{removed} lines, {self.size} bytes, "
                f"sha256 {self.sha256[:16]} ({match})"
            )
        ]
        out += [
            f"  {shown(f.path)[1:-1]}: " + ("binary" if f.binary else f"+{f.added} -{f.removed}")
            for f in self.files.values()
        ]
        return out


def _unquote(path: str) -> str:
    """A path as git writes it: C-quoted when it holds special characters."""
    if len(path) >= 2 and path.startswith('"') and path.endswith('"'):
        return codecs.escape_decode(path[1:-1].encode("utf-8"))[0].decode("utf-8", errors="replace")
    return path


def _strip_prefix(path: str) -> str | None:
    """The repository path of a ``---``/``+++`` name (``a/x`` -> ``x``); None for /dev/null."""
    path = _unquote(path.split("\t")[0].rstrip())
    if path == "/dev/null":
        return None
    return path[2:] if path[:2] in ("a/", "b/") else path


def unsafe_path(path: str) -> str | None:
    """Why ``path`` (relative to the worktree) is not one a recorded diff may touch."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        return "an absolute path"
    if ".." in parts:
        return "a path outside the worktree ('..')"
    if any(p.lower() == ".git" for p in parts):
        return "a path inside .git"
    return None


def _hunk_counts(line: str) -> tuple[int, int]:
    m = re.match(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@", line)
    if not m:
        raise SubmissionRefused(f"the recorded diff has a malformed hunk header {shown(line)}")
    return int(m.group(1) if m.group(1) is not None else 1), int(m.group(2) if m.group(2) is not None else 1)


def summarize_diff(text: str, recorded_sha256: str | None) -> DiffSummary:
    """Parse a unified (git) diff without applying it; refuse unsafe paths and symbolic links."""
    data = text.encode("utf-8")
    summary = DiffSummary(hashlib.sha256(data).hexdigest(), recorded_sha256, len(data))
    current: FileChange | None = None
    old_left = new_left = 0

    def touch(path: str | None) -> None:
        nonlocal current
        if path is None:
            return
        problem = unsafe_path(path)
        if problem:
            raise SubmissionRefused(f"the recorded diff writes {problem}: {shown(path)}")
        current = summary.files.setdefault(path, FileChange(path))

    for line in text.split("\n"):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                old_left, current.removed = old_left - 1, current.removed + 1
            elif tag == "+":
                new_left, current.added = new_left - 1, current.added + 1
            elif tag != "\\":
                raise SubmissionRefused(f"the recorded diff has a malformed hunk line {shown(line)}")
            continue
        if line.startswith("diff --git "):
            rest = line[len("diff --git ") :]
            for part in re.split(r"[ /]", rest.replace('"', "")):
                if part in ("..", ".git"):
                    raise SubmissionRefused(f"the recorded diff writes a path outside the worktree: {shown(rest)}")
            current = None
            half = (len(rest) - 1) // 2  # "a/X b/X": a file whose change may have no ---/+++ lines
            if rest[:2] == "a/" and rest[half + 1 : half + 3] == "b/" and rest[2:half] == rest[half + 3 :]:
                touch(rest[2:half])
        elif line.startswith(("--- ", "+++ ")):
            touch(_strip_prefix(line[4:]))
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            touch(_unquote(line.split(" ", 2)[2]))
        elif line.startswith(("new file mode ", "new mode ")) and line.split()[-1] == SYMLINK_MODE:
            raise SubmissionRefused("the recorded diff creates a symbolic link (it could lead outside the worktree)")
        elif line.startswith("@@"):
            if current is None:
                raise SubmissionRefused("the recorded diff has a hunk before any file name")
            old_left, new_left = _hunk_counts(line)
        elif line.startswith(("GIT binary patch", "Binary files ")) and current is not None:
            current.binary = True
    return summary


def read_diff(git: Mapping[str, Any]) -> DiffSummary:
    """The recorded diff of a dirty tree, checked (see the module docstring); refused on a fault."""
    text = git.get("diff")
    if not isinstance(text, str):
        raise SubmissionRefused("provenance.git.diff is not text")
    summary = summarize_diff(text, git.get("diff_sha256"))
    if not summary.hash_matches:
        raise SubmissionRefused(
            f"the recorded diff's sha256 {summary.sha256[:16]} does not match its recorded "
            f"diff_sha256 {shown(str(git.get('diff_sha256'))[:16])}"
        )
    return summary


def check_tree_paths(summary: DiffSummary, tree: Path) -> None:
    """Refuse a diff whose target, in the checked-out ``tree``, resolves outside it (a symbolic link)."""
    root = tree.resolve()
    for path in summary.files:
        target = (tree / path).resolve()
        if target != root and root not in target.parents:
            raise SubmissionRefused(
                f"the recorded diff writes through a symbolic link outside the worktree: {shown(path)}"
            )
