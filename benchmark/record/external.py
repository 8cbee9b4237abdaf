"""Submissions of a model's outputs made outside the harness (``source: "external"``, schema v3).

The harness did not run the model, so the submission records what it was given and what it
did with it: ``provenance.external`` holds the declared method name, a link to its paper or
code, the free-text recipe, the kind of input (``embeddings`` or ``run``) and the name, size and
SHA-256 of every input file; no commit of this repository is claimed (``provenance.git`` is
absent: the repository's code ranked and scored the outputs, it did not make them). The
rankings, metrics and bootstrap intervals are the harness's own (:mod:`benchmark.evaluation.external`),
so the leaderboard re-scores the row like every other.

:func:`write_external` never replaces a submission: the file name
(:func:`benchmark.record.submission.submission_filename`) ends in ``__external__seed<N>``; an
existing file there made from the same input files is left as it is (the same outputs score the
same), any other one refuses the write with one line.
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.core.config import EvalConfig
from benchmark.core.digest import sha256_file
from benchmark.core.jsonable import to_jsonable
from benchmark.record import provenance as prov_mod
from benchmark.record.run_identity import IdentityError
from benchmark.record.submission import (
    SCHEMA_VERSION,
    SUBMISSIONS_SUBDIR,
    SubmissionError,
    _all_faults,
    _raise,
    dataset_record,
    load_submission,
    submission_filename,
    write_submission,
)
from datasets.records import DatasetSplits

KINDS = {
    "embeddings": "external embeddings: cosine similarity of L2-normalised embeddings",
    "run": "external run file: the run's scores, equal scores in gallery order",
}


def input_record(path: Path) -> dict[str, Any]:
    """``{"file": name, "sha256", "bytes"}`` of one input file (its name only: no folders)."""
    return {"file": Path(path).name, "sha256": sha256_file(Path(path)), "bytes": Path(path).stat().st_size}


def build_external_submission(
    *,
    method: str,
    paper: str,
    recipe: str,
    kind: str,
    inputs: Mapping[str, Path],
    dataset: str,
    splits: DatasetSplits,
    eval_cfg: EvalConfig,
    profile: str,
    metrics: Mapping[str, Any],
    rankings: list[list[Any]],
    seed: int,
    wall_time_s: Mapping[str, float],
    num_parameters: Optional[int] = None,
    dataset_size: Optional[str] = None,
    dataset_seed: Optional[int] = None,
    date: Optional[str] = None,
) -> dict[str, Any]:
    """A validated external submission (raises :class:`SubmissionError` with every fault).

    ``profile`` names the leaderboard table the row joins (its evaluation settings, ``eval_cfg``,
    are the ones applied); ``inputs`` maps a role (``query_embeddings``, ``query_ids``,
    ``gallery_embeddings``, ``gallery_ids``, ``run``) to the file that was read."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    sub: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": "external",
        "method": {
            "name": method,
            "variant": "",
            "config": None,
            "num_parameters": None if num_parameters is None else int(num_parameters),
        },
        "dataset": dataset_record(dataset, splits, dataset_size, dataset_seed),
        "profile": {"name": profile, "eval": to_jsonable(eval_cfg)},
        "protocol": {
            "score": KINDS[kind],
            "tie_break": "gallery-order",
            "ks": [int(k) for k in eval_cfg.ks],
            "topk_saved": int(eval_cfg.topk_saved),
            "rerank": "none",
            "rerank_topk": int(eval_cfg.rerank_topk),
            "pairs_scored": 0,
        },
        "metrics": to_jsonable(metrics),
        "rankings": [[str(q), [str(g) for g in ids]] for q, ids in rankings],
        "provenance": {
            "external": {
                "kind": kind,
                "method": method,
                "paper": paper,
                "recipe": recipe,
                "inputs": {role: input_record(p) for role, p in inputs.items()},
            },
            "packages": prov_mod.package_versions(),
            "python": platform.python_version(),
            "device": "not recorded: the model ran outside the harness",
            "seed": int(seed),
            "wall_time_s": {k: float(v) for k, v in wall_time_s.items()},
            "date": date
            or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "command": prov_mod.command_line(),
        },
    }
    _raise(f"external submission for {method} on {dataset}", _all_faults(sub))
    return sub


def target(sub: Mapping[str, Any], results_dir: Path) -> Path:
    return Path(results_dir) / SUBMISSIONS_SUBDIR / submission_filename(sub)


def existing_same_inputs(sub: Mapping[str, Any], results_dir: Path) -> Optional[Path]:
    """The file already holding this submission (same name, same input files), or None when
    there is none; :class:`IdentityError` when another submission holds the name."""
    path = target(sub, results_dir)
    for candidate in (path, path.with_name(path.name + ".gz")):
        if not (candidate.exists() or candidate.is_symlink()):
            continue
        try:
            old = load_submission(candidate)
        except SubmissionError as exc:
            why = f"it cannot be read ({str(exc).splitlines()[0][:200]})"
        else:
            old_ext = old["provenance"].get("external") or {}
            new_ext = sub["provenance"]["external"]
            if (
                old.get("source") == "external"
                and old_ext.get("inputs") == new_ext["inputs"]
                and old["dataset"]["annotation_checksum"] == sub["dataset"]["annotation_checksum"]
            ):
                return candidate
            why = "it was made from other input files" if old.get("source") == "external" else "it is not external"
        raise IdentityError(
            f"{candidate}: not written over, {why}; pick another --method-name or --seed, "
            "or --results-dir DIR to write elsewhere"
        )
    return None


def write_external(sub: Mapping[str, Any], results_dir: Path) -> tuple[Path, bool]:
    """Write ``sub`` unless the same submission is there already; ``(path, written)``."""
    same = existing_same_inputs(sub, results_dir)
    if same is not None:
        return same, False
    return write_submission(sub, results_dir), True
