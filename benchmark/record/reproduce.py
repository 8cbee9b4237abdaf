"""``run_benchmark.py reproduce SUBMISSION``: re-run a submission where it was made, compare.

:func:`reproduce` checks the submission's recorded commit out into a temporary ``git
worktree`` (detached; the current checkout, its index and ``results/`` are never touched),
applies the recorded diff when the run came from a dirty tree and recorded it whole
(:mod:`benchmark.record.provenance`), and runs, with this environment's Python, the command the
submission describes (:func:`command_for`): its method, dataset (a synthetic set regenerated
from its size and seed into the shared cache, or ``--data-root``), profile, seed, training
recipe and truncation, second stage, bootstrap and ``--set`` overrides, on one thread
(``OMP_NUM_THREADS=1``), no DataLoader workers, no feature cache, outputs in the temporary
folder. Overrides come from the recorded identity, or, for a submission written before
identities were recorded, from the fields of its method config that differ from the method's
default at that commit.

The report (:func:`compare`) says whether the rankings are identical, and for every overall
metric the recorded and reproduced values, their difference, and whether each lies in the
other's 95% interval. "exact": identical rankings (expected on one CPU thread where training
is deterministic); "within intervals": every metric inside the recorded CI; otherwise the
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

from benchmark.record.submission import SUBMISSIONS_SUBDIR, load_submission
from benchmark.core.paths import REPO_ROOT

EXACT = 1e-9  # percentage points


class ReproduceError(RuntimeError):
    """The submission cannot be re-run (no commit, commit unknown, unsupported settings, run failed)."""


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
    return {k: _text(v) for k, v in sorted(rec.items()) if k in base and base[k] != v
            and not (isinstance(v, list) and isinstance(base[k], (list, tuple)) and list(base[k]) == v)}


def default_config(worktree: Path, python: str, method: str, profile: str) -> dict[str, Any]:
    """The method's default config at the worktree's commit (JSON form)."""
    code = (
        "import dataclasses, json, sys\n"
        "from benchmark.core.registry import METHODS, load_all\n"
        "load_all(())\n"
        f"cfg = METHODS.get({method!r}).default_config({profile!r})\n"
        "print(json.dumps(dataclasses.asdict(cfg), default=str))\n"
    )
    proc = subprocess.run([python, "-c", code], cwd=worktree, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(worktree)})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReproduceError(f"cannot read {method}'s default config at that commit: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def command_for(sub: Mapping[str, Any], overrides: Mapping[str, str], *, output: Path,
                data_root: Optional[Path] = None) -> list[str]:
    """``run_benchmark.py`` arguments that redo ``sub`` (outputs under ``output``)."""
    ds, prof, prov = sub["dataset"], sub["profile"], sub["provenance"]
    if prov.get("initial_weights"):
        raise ReproduceError("a --weights run starts from another run's checkpoint, which a submission does not hold")
    args = ["--method", sub["method"]["name"], "--dataset", ds["name"], "--profile", prof["name"],
            "--seed", str(prov["seed"])]
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
    return args + ["--device", device, "--num-workers", "0", "--no-feature-cache", "--no-leaderboard",
                   "--output-dir", str(output / "runs"), "--results-dir", str(output / "results")]


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
        out.lines.append(f"{name}: recorded {a:.4f}, reproduced {b:.4f}, difference {diff:+.4f}"
                         + ("" if abs(diff) <= EXACT else
                            f" ({'inside' if inside else 'OUTSIDE'} the recorded 95% CI, recorded value "
                            f"{'inside' if _inside(a, other.get('ci95')) else 'outside'} the reproduced CI)"))
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


def reproduce(path: Path, *, data_root: Optional[Path] = None, python: str = sys.executable, keep: bool = False,
              timeout: Optional[float] = None, log=print) -> Reproduction:
    """Re-run submission ``path`` at its commit in a temporary worktree; compare (see above)."""
    sub = load_submission(path)
    git = sub["provenance"].get("git") or {}
    commit = git.get("commit")
    if not commit:
        raise ReproduceError(f"{path}: records no git commit")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise ReproduceError(f"{path}: commit {commit[:12]} is not in this repository")
    tmp = Path(tempfile.mkdtemp(prefix="lpr-reproduce-"))
    tree = tmp / "worktree"
    notes: list[str] = []
    added = _git("worktree", "add", "--detach", str(tree), commit)
    if added.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReproduceError(f"git worktree add failed: {added.stderr.decode(errors='replace').strip()[:300]}")
    try:
        notes += _apply_recorded_diff(git, tree)
        identity = sub["provenance"].get("identity")
        if isinstance(identity, Mapping) and isinstance(identity.get("overrides"), Mapping):
            overrides = {str(k): str(v) for k, v in identity["overrides"].items()}
        else:
            default = default_config(tree, python, sub["method"]["name"], sub["profile"]["name"])
            overrides = legacy_overrides(sub["method"].get("config") or {}, default)
        args = command_for(sub, overrides, output=tmp, data_root=data_root)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
        env.setdefault("LPR_BENCH_CACHE", str(REPO_ROOT / ".cache"))
        log(f"reproducing {path} at {commit[:12]} in {tree}:\n  run_benchmark.py {' '.join(args)}")
        t0 = time.perf_counter()
        with open(tmp / "run.log", "wb") as fh:
            try:
                proc = subprocess.run([python, "run_benchmark.py", *args], cwd=tree, env=env, stdout=fh,
                                      stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ReproduceError(f"the run took longer than {timeout} s; stopped") from None
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (tmp / "run.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ReproduceError(f"the re-run failed (exit {proc.returncode}): {tail[0][:300]}")
        made = sorted((tmp / "results" / SUBMISSIONS_SUBDIR).glob("*.json*"))
        if len(made) != 1:
            raise ReproduceError(f"the re-run wrote {len(made)} submissions, expected 1")
        again = load_submission(made[0])
        comparison = compare(sub, again)
        if again["method"].get("config") != sub["method"].get("config"):
            comparison.within = False
            comparison.lines.append("method config: the re-run's differs from the recorded one")
        kept = None
        if keep:
            kept = made[0]
        return Reproduction(comparison=comparison, command=args, seconds=seconds, notes=notes, submission=kept)
    finally:
        _git("worktree", "remove", "--force", str(tree))
        _git("worktree", "prune")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_recorded_diff(git: Mapping[str, Any], tree: Path) -> list[str]:
    """Apply a dirty run's recorded diff in ``tree``; notes on what could not be restored."""
    if not git.get("dirty"):
        return []
    diff = git.get("diff")
    if not isinstance(diff, str) or git.get("diff_truncated"):
        return ["the run came from a dirty tree and its diff was not recorded whole: the commit alone may "
                "not reproduce it"]
    if not diff:
        return []
    applied = _git("apply", "--binary", "--whitespace=nowarn", "-", cwd=tree, stdin=diff.encode("utf-8"))
    if applied.returncode != 0:
        raise ReproduceError(f"the recorded diff does not apply at its commit: "
                             f"{applied.stderr.decode(errors='replace').strip()[:300]}")
    notes = ["applied the recorded diff of the dirty tree"]
    if git.get("untracked"):
        notes.append(f"{len(git['untracked'])} untracked file(s) of that tree are recorded by hash only, "
                     f"not restored")
    return notes


def reproduce_command(path: Path, data_root: Optional[Path] = None, keep: bool = False) -> int:
    """The ``reproduce`` subcommand: 0 when exact or within the intervals, 1 otherwise."""
    result = reproduce(path, data_root=data_root, keep=keep)
    for note in result.notes:
        print(f"note: {note}")
    for line in result.comparison.lines:
        print(f"  {line}")
    print(f"{path}: {result.comparison.verdict} (re-run took {result.seconds:.1f} s)")
    if result.submission is not None:
        print(f"reproduced submission kept at {result.submission}")
    return 0 if result.comparison.verdict != "NOT reproduced" else 1
