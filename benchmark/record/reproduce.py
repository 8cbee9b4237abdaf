"""``run_benchmark.py reproduce SUBMISSION``: re-run a submission where it was made, compare.

A submission is data from a stranger, never code: it is vetted first
(:mod:`benchmark.record.untrusted`: every field that reaches the command line, git or the file
system, refused with one line and exit status :data:`EXIT_REFUSED` on a fault). :func:`reproduce`
then checks the submission's recorded commit (which must already be in this repository) out
into a temporary ``git worktree`` (detached; the current checkout, its index and ``results/``
are never touched). A run from a dirty tree cannot be reproduced from its commit alone: by
default nothing runs, the recorded diff is summarised (files, lines, hash) and the exit status
is :data:`EXIT_MODIFIED_TREE`; ``--apply-recorded-diff`` applies it (after the same summary)
when its hash matches the recorded one and its paths stay inside the worktree (refused
otherwise, always). The re-run uses this environment's Python and runs the command the
submission describes (:func:`command_for`): its method, dataset (a synthetic set regenerated
from its size and seed into the re-run's own cache, ``LPR_BENCH_CACHE`` inside the temporary
folder, so that nothing it writes is read by the user's runs; or ``--data-root``), profile, seed, training
recipe and truncation, second stage, bootstrap and ``--set`` overrides, on one thread
(``OMP_NUM_THREADS=1``), no DataLoader workers, no feature cache, outputs in the temporary
folder. Overrides come from the recorded identity, or, for a submission written before
identities were recorded, from the fields of its method config that differ from the method's
default at that commit.

The report (:func:`compare`) says whether the rankings are identical, and for every overall
metric the recorded and reproduced values, their difference, and whether each lies in the
other's 95% interval. "exact": identical rankings (expected on the same CPU, one thread, where
training is deterministic; another CPU may take other float paths and say "rankings: differ"
within the intervals); "within intervals": every metric inside the recorded CI; otherwise the
reproduction failed (exit status 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.core import safe_json
from benchmark.core.paths import REPO_ROOT
from benchmark.record.record import Submission
from benchmark.record.submission import SUBMISSIONS_SUBDIR, SubmissionError, load_submission
from benchmark.record.untrusted import (
    DiffSummary,
    SubmissionRefused,
    check_override,
    check_tree_paths,
    read_diff,
    vet_submission,
)

EXACT = 1e-9  # percentage points
EXIT_NOT_REPRODUCED = 1
EXIT_MODIFIED_TREE = 3  # a dirty tree's row, its diff not applied: nothing was run
EXIT_REFUSED = 4  # the submission carries something reproduce will not pass on


class ReproduceError(RuntimeError):
    """The submission cannot be re-run (no commit, commit unknown, unsupported settings, run failed)."""


class NotFromCommit(ReproduceError):
    """A dirty tree's row whose recorded diff was not applied; ``lines``: the report."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = lines


@dataclass
class Comparison:
    rankings_identical: bool
    lines: list[str] = field(default_factory=list)
    within: bool = True  # every reproduced value inside the recorded CI (or equal)
    max_abs_diff: float = 0.0

    @property
    def verdict(self) -> str:
        if self.rankings_identical and self.max_abs_diff <= EXACT:
            return "exact"
        return "within intervals" if self.within else "NOT reproduced"


# --- the command -------------------------------------------------------------------------


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def legacy_overrides(recorded: Mapping[str, Any], default: Mapping[str, Any]) -> dict[str, str]:
    """``--set`` overrides turning the method's ``default`` config into the ``recorded`` one."""
    rec, base = _flat(recorded), _flat(default)
    return {
        k: _text(v)
        for k, v in sorted(rec.items())
        if k in base
        and base[k] != v
        and not (isinstance(v, list) and isinstance(base[k], (list, tuple)) and list(base[k]) == v)
    }


def default_config(
    worktree: Path, python: str, method: str, profile: str, env: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """The method's default config at the worktree's commit (JSON form); ``env``: the child's."""
    code = (
        "import dataclasses, json, sys\n"
        "from benchmark.core.registry import METHODS, load_all\n"
        "load_all(())\n"
        f"cfg = METHODS.get({method!r}).default_config({profile!r})\n"
        "print(json.dumps(dataclasses.asdict(cfg), default=str))\n"
    )
    proc = subprocess.run(
        [python, "-c", code],
        cwd=worktree,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(env) if env is not None else {**os.environ, "PYTHONPATH": str(worktree)},
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReproduceError(f"cannot read {method}'s default config at that commit: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def command_for(
    sub: Submission, overrides: Mapping[str, str], *, output: Path, data_root: Optional[Path] = None
) -> list[str]:
    """``run_benchmark.py`` arguments that redo ``sub`` (outputs under ``output``)."""
    ds, prof, prov = sub["dataset"], sub["profile"], sub["provenance"]
    if prov.get("initial_weights"):
        raise ReproduceError("a --weights run starts from another run's checkpoint, which a submission does not hold")
    args = [
        "--method",
        sub["method"]["name"],
        "--dataset",
        ds["name"],
        "--profile",
        prof["name"],
        "--seed",
        str(prov["seed"]),
    ]
    if data_root is not None:
        args += ["--data-root", str(data_root)]
    elif ds.get("size") is not None:
        args += ["--synth-size", str(ds["size"])]
    else:
        raise ReproduceError(f"dataset {ds['name']!r} is not a generated synthetic set: pass --data-root")
    train = prof.get("train") or {}
    if train.get("updates") is None and "epochs" in train:
        args += ["--epochs", str(train["epochs"])]
    for name in ("batch_size", "lr_encoder", "lr_new", "weight_decay", "max_steps"):
        if train.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", _text(train[name])]
    if (train.get("grad_accum") or 1) != 1:
        args += ["--grad-accum", str(train["grad_accum"])]
    ev = prof.get("eval") or {}
    if ev.get("rerank", "none") != "none":
        args += ["--rerank", ev["rerank"], "--rerank-topk", str(ev["rerank_topk"])]
    if ev.get("bootstrap") is not None:
        args += ["--bootstrap", str(ev["bootstrap"])]
    if (prov.get("seeds") or {}).get("deterministic"):
        args.append("--deterministic")
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    device = "cpu" if str(prov.get("device", "cpu")).startswith("cpu") else "auto"
    return args + [
        "--device",
        device,
        "--num-workers",
        "0",
        "--no-feature-cache",
        "--no-leaderboard",
        "--output-dir",
        str(output / "runs"),
        "--results-dir",
        str(output / "results"),
    ]


# --- comparing ---------------------------------------------------------------------------


def _inside(value: float, ci: Any) -> bool:
    return bool(ci) and ci[0] - EXACT <= value <= ci[1] + EXACT


def compare(recorded: Mapping[str, Any], again: Mapping[str, Any]) -> Comparison:
    """Rankings and overall metrics of two submissions of one run (see the module docstring)."""
    same = [list(r) for r in recorded["rankings"]] == [list(r) for r in again["rankings"]]
    out = Comparison(rankings_identical=same)
    out.lines.append("rankings: identical" if same else "rankings: differ")
    for name, entry in recorded["metrics"]["overall"].items():
        other = again["metrics"]["overall"].get(name)
        if other is None:
            out.lines.append(f"{name}: not in the reproduced submission")
            out.within = False
            continue
        a, b = float(entry["value"]), float(other["value"])
        diff = b - a
        out.max_abs_diff = max(out.max_abs_diff, abs(diff))
        inside = abs(diff) <= EXACT or _inside(b, entry.get("ci95"))
        out.within &= inside
        out.lines.append(
            f"{name}: recorded {a:.4f}, reproduced {b:.4f}, difference {diff:+.4f}"
            + (
                ""
                if abs(diff) <= EXACT
                else f" ({'inside' if inside else 'OUTSIDE'} the recorded 95% CI, recorded value "
                f"{'inside' if _inside(a, other.get('ci95')) else 'outside'} the reproduced CI)"
            )
        )
    return out


# --- the whole thing ---------------------------------------------------------------------


def _git(*args: str, cwd: Path = REPO_ROOT, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], input=stdin, capture_output=True, timeout=300)


@dataclass
class Reproduction:
    comparison: Comparison
    command: list[str]
    seconds: float
    notes: list[str]
    submission: Optional[Path] = None  # the reproduced one (kept only with keep=True)


def load_vetted(path: Path) -> dict[str, Any]:
    """``path`` parsed under size limits, vetted (:func:`vet_submission`) before the schema check,
    so that a hostile field is refused with its own line; then validated as a submission."""
    try:
        raw = safe_json.load(path)
    except safe_json.UntrustedJSONError as exc:  # oversized, too deep, not JSON: as load_submission says it
        raise SubmissionError(str(exc)) from None
    if isinstance(raw, Mapping):
        vet_submission(raw)
    return load_submission(path)


def child_env(tmp: Path, tree: Path) -> dict[str, str]:
    """The re-run's environment: one thread, the worktree's code, and a cache of its own (inside
    ``tmp``), so that nothing it writes is read by a run of the user's tree."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(tree),
        "LPR_BENCH_CACHE": str(tmp / "cache"),
    }


def run_child(argv: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, timeout: Optional[float]) -> int:
    """Run ``argv`` in ``cwd`` (output to ``log_path``); its exit status (the one boundary tests replace)."""
    with open(log_path, "wb") as fh:
        try:
            return subprocess.run(
                argv, cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            raise ReproduceError(f"the run took longer than {timeout} s; stopped") from None


def recorded_diff(path: Path, git: Mapping[str, Any], *, apply: bool, log=print) -> Optional[DiffSummary]:
    """The verified diff to apply (None for a clean tree); :class:`NotFromCommit` for a dirty
    tree unless ``apply``; :class:`SubmissionRefused` for a diff that fails its checks, always."""
    if not git.get("dirty"):
        return None
    head = f"{path}: from a modified tree: cannot be reproduced from its commit alone"
    diff = git.get("diff")
    if not isinstance(diff, str) or git.get("diff_truncated"):
        whole = "its diff was recorded only in part" if git.get("diff_truncated") else "its diff was not recorded"
        if apply:
            raise SubmissionRefused(f"{whole}: there is no verified diff to apply")
        raise NotFromCommit([f"{head}; {whole}"])
    summary = read_diff(git)  # hash and paths: refused in every case
    if not apply:
        raise NotFromCommit(
            [
                (f"{head}; the recorded diff was not applied (it is code: read it, then pass --apply-recorded-diff)"),
                *summary.lines(),
            ]
        )
    for line in [f"{head}; applying its recorded diff (--apply-recorded-diff)", *summary.lines()]:
        log(line)
    return summary


def reproduce(
    path: Path,
    *,
    data_root: Optional[Path] = None,
    python: str = sys.executable,
    keep: bool = False,
    timeout: Optional[float] = None,
    apply_diff: bool = False,
    log=print,
) -> Reproduction:
    """Re-run submission ``path`` at its commit in a temporary worktree; compare (see above)."""
    sub = load_vetted(path)
    if sub.get("source") == "external":
        raise ReproduceError(
            f"{path}: an external submission (its model ran outside the harness): there is no run of "
            f"this repository to reproduce; `score` re-scores its rankings"
        )
    git = sub["provenance"].get("git") or {}
    commit = git.get("commit")
    if not commit:
        raise ReproduceError(f"{path}: records no git commit")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise ReproduceError(f"{path}: commit {commit[:12]} is not in this repository")
    diff = recorded_diff(path, git, apply=apply_diff, log=log)
    tmp = Path(tempfile.mkdtemp(prefix="lpr-reproduce-"))
    tree = tmp / "worktree"
    notes: list[str] = []
    added = _git("worktree", "add", "--detach", str(tree), commit)
    if added.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReproduceError(f"git worktree add failed: {added.stderr.decode(errors='replace').strip()[:300]}")
    try:
        if diff is not None:
            check_tree_paths(diff, tree)
            notes += _apply_recorded_diff(git, tree)
        env = child_env(tmp, tree)
        identity = sub["provenance"].get("identity")
        if isinstance(identity, Mapping) and isinstance(identity.get("overrides"), Mapping):
            overrides = {str(k): str(v) for k, v in identity["overrides"].items()}
        else:
            default = default_config(tree, python, sub["method"]["name"], sub["profile"]["name"], env)
            overrides = legacy_overrides(sub["method"].get("config") or {}, default)
        for key, value in overrides.items():
            check_override(key, value)
        args = command_for(sub, overrides, output=tmp, data_root=data_root)
        log(f"reproducing {path} at {commit[:12]} in {tree}:\n  run_benchmark.py {' '.join(args)}")
        t0 = time.perf_counter()
        status = run_child(
            [python, "run_benchmark.py", *args], cwd=tree, env=env, log_path=tmp / "run.log", timeout=timeout
        )
        seconds = time.perf_counter() - t0
        if status != 0:
            text = (tmp / "run.log").read_text(errors="replace") if (tmp / "run.log").is_file() else ""
            tail = text.strip().splitlines()[-1:] or ["no output"]
            raise ReproduceError(f"the re-run failed (exit {status}): {tail[0][:300]}")
        made = sorted((tmp / "results" / SUBMISSIONS_SUBDIR).glob("*.json*"))
        if len(made) != 1:
            raise ReproduceError(f"the re-run wrote {len(made)} submissions, expected 1")
        again = load_submission(made[0])
        comparison = compare(sub, again)
        if again["method"].get("config") != sub["method"].get("config"):
            comparison.within = False
            comparison.lines.append("method config: the re-run's differs from the recorded one")
        return Reproduction(
            comparison=comparison, command=args, seconds=seconds, notes=notes, submission=made[0] if keep else None
        )
    finally:
        _git("worktree", "remove", "--force", str(tree))
        _git("worktree", "prune")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_recorded_diff(git: Mapping[str, Any], tree: Path) -> list[str]:
    """Apply a dirty run's verified diff in ``tree`` (git's own path checks on top of ours)."""
    applied = _git("apply", "--binary", "--whitespace=nowarn", "-", cwd=tree, stdin=git["diff"].encode("utf-8"))
    if applied.returncode != 0:
        raise ReproduceError(
            f"the recorded diff does not apply at its commit: {applied.stderr.decode(errors='replace').strip()[:300]}"
        )
    notes = ["applied the recorded diff of the dirty tree (--apply-recorded-diff)"]
    if git.get("untracked"):
        notes.append(f"{len(git['untracked'])} untracked file(s) of that tree are recorded by hash only, not restored")
    return notes


def reproduce_command(
    path: Path, data_root: Optional[Path] = None, keep: bool = False, apply_diff: bool = False
) -> int:
    """The ``reproduce`` subcommand: 0 when exact or within the intervals, 1 otherwise,
    :data:`EXIT_MODIFIED_TREE` for a dirty tree's row not run, :data:`EXIT_REFUSED` for a refused submission."""
    try:
        result = reproduce(path, data_root=data_root, keep=keep, apply_diff=apply_diff)
    except SubmissionRefused as exc:
        print(f"refused: {path}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except NotFromCommit as exc:
        print("\n".join(exc.lines))
        return EXIT_MODIFIED_TREE
    for note in result.notes:
        print(f"note: {note}")
    for line in result.comparison.lines:
        print(f"  {line}")
    print(f"{path}: {result.comparison.verdict} (re-run took {result.seconds:.1f} s)")
    if result.submission is not None:
        print(f"reproduced submission kept at {result.submission}")
    return 0 if result.comparison.verdict != "NOT reproduced" else EXIT_NOT_REPRODUCED
