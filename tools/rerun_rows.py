"""Rerun the leaderboard's rows: every registered method's main configuration on the synthetic
sets at the given training seeds, each with its untrained control, N runs at a time, one thread
each, from a clean tree.

A row is one ``run_benchmark.py run`` command; a command already recorded by a submission in the
results folder (its ``provenance.command``, the ``--results-dir`` left out) is skipped, so the
plan can be run piece by piece (a session at a time) and resumed after a stop. Each run logs to
``<log-dir>/<dataset>__<method>__seed<N>[__untrained].log``. Refuses a tree with uncommitted
changes (a row from a dirty tree cannot be reproduced).

    python tools/rerun_rows.py --profile tiny-v2 --seeds 0 1 2 --jobs 2 --dry-run
    python tools/rerun_rows.py --profile tiny-v2 --datasets lpr4m-synth --seeds 0 --results-dir results
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.core import safe_json  # noqa: E402
from benchmark.core.registry import METHODS, load_builtin_methods  # noqa: E402

DATASETS = ("lpr4m-synth", "movingfashion-synth")
# longest first, so two slots finish together (v1 one-thread training seconds on lpr4m-synth)
COST = {
    "fashionnet": 2760,
    "seam-match-rcnn": 2449,
    "sgmn": 2128,
    "mgh": 1533,
    "asymnet": 1892,
    "rice": 1715,
    "nvan": 1531,
    "timesformer": 1140,
    "clip-meanpool": 812,
    "video-swin": 635,
}


# ablation rows that docs/ draw conclusions from (docs/rice.md, docs/sgmn.md, docs/baselines.md):
# with --ablations they are planned at the same seeds as the main rows
ABLATIONS: dict[str, list[tuple[str, ...]]] = {
    "rice": [
        ("text=false",),
        ("ipd=none", "text=false"),
        ("pfr=false", "ipd=none", "text=false"),
        ("pmd=false", "pfr=false", "ipd=none", "text=false"),
    ],
    "sgmn": [("text=false",), ("graph=false",), ("mining=false",)],
    "mgh": [("windows=1,2,3",), ("mi_weight=0.0", "pooling=mean")],
}


@dataclass(frozen=True)
class Job:
    dataset: str
    method: str
    seed: int
    untrained: bool
    args: tuple[str, ...]
    sets: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        sets = "".join(f"+{s}" for s in self.sets)
        return f"{self.dataset}__{self.method}{sets}__seed{self.seed}" + ("__untrained" if self.untrained else "")


def plan(
    profile: str, datasets: list[str], seeds: list[int], methods: list[str], controls: bool, ablations: bool = False
) -> list[Job]:
    """Main rows first (longest first within a seed), then the ablations, then the untrained controls."""
    load_builtin_methods()
    jobs: list[Job] = []
    ordered = sorted(methods, key=lambda m: -COST.get(m, 0))
    configs = [(m, ()) for m in ordered] + (
        [(m, a) for m in ordered for a in ABLATIONS.get(m, [])] if ablations else []
    )
    for untrained in (False, True) if controls else (False,):
        for seed in seeds:
            for dataset in datasets:
                for method, sets in configs:
                    args = ["--method", method, "--dataset", dataset, "--profile", profile, "--seed", str(seed)]
                    for kv in sets:
                        args += ["--set", kv]
                    rerank = METHODS.get(method).main_config()["rerank"]
                    if rerank == "all":
                        args += ["--rerank", "all"]
                    elif rerank != "none":
                        args += ["--rerank", "topk", "--rerank-topk", rerank[3:]]
                    if untrained:
                        args += ["--epochs", "0"]
                    jobs.append(Job(dataset, method, seed, untrained, tuple(args), sets))
    return jobs


class RecordError(ValueError):
    """A submission in the results folder cannot be read (the message names the file)."""


def _recorded(results_dir: Path) -> set[frozenset[str]]:
    """The argument sets of the runs already in ``results_dir/submissions``."""
    done: set[frozenset[str]] = set()
    for f in sorted((results_dir / "submissions").glob("*.json*")):
        try:  # the record's guarded reader: size and depth limits, gzip checked (files may come from anyone)
            record = safe_json.load(f)
        except (OSError, ValueError) as exc:
            raise RecordError(f"{f}: not a readable submission ({type(exc).__name__}: {exc})") from None
        provenance = record.get("provenance") if isinstance(record, dict) else None
        command = provenance.get("command") if isinstance(provenance, dict) else None
        if isinstance(command, str) and command:  # rows made before commands were recorded match no plan
            done.add(_key(shlex.split(command)))
    return done


def _key(argv: list[str]) -> frozenset[str]:
    """Option/value pairs of a command, without the ones that do not change the row."""
    pairs, skip = set(), {"--results-dir", "--num-workers", "--output-dir"}
    i = 1 if argv and argv[0].endswith("run_benchmark.py") else 0
    if i < len(argv) and argv[i] == "run":
        i += 1
    while i < len(argv):
        opt = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
        i += 2 if val else 1
        if opt not in skip and opt != "--no-leaderboard":
            pairs.add(f"{opt}={val}")
    return frozenset(pairs)


def _head(tree: Path) -> Optional[str]:
    """The commit ``tree`` has checked out, or None when it has uncommitted changes to tracked files."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree, capture_output=True, text=True
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True)
    if status.returncode or head.returncode or status.stdout.strip():
        return None
    return head.stdout.strip()


def select(a: argparse.Namespace) -> list[Job]:
    """The plan's jobs in the order asked for, less those already recorded in the results folder."""
    methods = a.methods or sorted(METHODS.names())
    jobs = plan(a.profile, a.datasets, a.seeds, methods, not a.no_controls, a.ablations)
    if a.controls_only:
        jobs = [j for j in jobs if j.untrained]
    if a.cheapest_first:
        jobs.sort(key=lambda j: (j.seed, j.dataset, COST.get(j.method, 0), j.method, j.sets, j.untrained))
    done = _recorded(a.results_dir)
    return [j for j in jobs if _key(list(j.args)) not in done]


def run_queue(todo: list[Job], a: argparse.Namespace, commit: str) -> int:
    """Run ``todo`` ``a.jobs`` at a time; no job starts once the tree has left ``commit``."""
    a.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: list[tuple[Job, subprocess.Popen, float, Any]] = []
    failed = 0
    while todo or running:
        while todo and len(running) < a.jobs:
            if _head(a.tree) != commit:
                print(f"{a.tree} is no longer a clean checkout of {commit[:12]}: no further job started", flush=True)
                todo, failed = [], failed + 1
                break
            j = todo.pop(0)
            cmd = [sys.executable, "run_benchmark.py", "run", *j.args, "--num-workers", "0", "--no-leaderboard"]
            cmd += ["--results-dir", str(a.results_dir.resolve())]
            log = open(a.log_dir / f"{j.name}.log", "w")  # noqa: SIM115  (closed when the process ends)
            proc = subprocess.Popen(cmd, cwd=a.tree, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((j, proc, time.time(), log))
            print(f"started {j.name}", flush=True)
        time.sleep(5)
        for item in list(running):
            j, proc, t0, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            failed += proc.returncode != 0
            verdict = "done" if proc.returncode == 0 else "FAILED"
            print(f"{verdict} {j.name} rc={proc.returncode} {time.time() - t0:.0f}s", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="tiny-v2")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    ap.add_argument("--ablations", action="store_true", help="also the ablation rows docs/ draw conclusions from")
    controls = ap.add_mutually_exclusive_group()
    controls.add_argument("--no-controls", action="store_true", help="leave out the untrained controls")
    controls.add_argument("--controls-only", action="store_true", help="only the untrained controls")
    ap.add_argument(
        "--cheapest-first",
        action="store_true",
        help="cheapest methods first, each followed by its control (the most rows done when time is short)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    ap.add_argument("--tree", type=Path, default=REPO, help="the clean checkout the runs execute in")
    ap.add_argument(
        "--results-dir",
        type=Path,
        default=REPO / "runs" / "rerun-results",
        help="where the submissions go (default runs/rerun-results; `results` remakes the committed record)",
    )
    ap.add_argument("--log-dir", type=Path, default=REPO / "runs" / "rerun-logs")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    load_builtin_methods()
    try:
        todo = select(a)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for j in todo:
        print(j.name, " ".join(j.args))
    if a.dry_run or not todo:
        return 0
    commit = _head(a.tree)
    if commit is None:
        print(f"error: {a.tree}: uncommitted changes; rows must come from a clean tree", file=sys.stderr)
        return 2
    return run_queue(todo, a, commit)


if __name__ == "__main__":
    sys.exit(main())
