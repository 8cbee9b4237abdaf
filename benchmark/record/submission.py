"""Submissions: build, validate (JSON schema v3; v1 and v2 still read), write atomically, load safely, re-score.

A submission (``benchmark/record/schemas/submission-v3.json``; v2 adds the optional
``provenance.identity`` of :mod:`benchmark.record.run_identity` and the diff of a dirty tree,
``provenance.git.diff*``, to v1; v3 adds ``source: "external"``, a model's outputs made outside
the harness (:mod:`benchmark.record.external`), and ``provenance.weights_files``) records one evaluated run: the
method (name, variant, config, parameter count), the dataset (name, split, annotation
checksum, layout), the profile and protocol, the claimed metrics (with CIs and per-attribute
breakdowns), the per-query top-k ranked gallery ids (``EvalConfig.topk_saved`` of them) and
provenance (git commit, package versions, device, seed, wall times, date).

What re-scoring verifies (:func:`rescore`), against the dataset's ground truth:

* exactly (to ``METRIC_TOLERANCE`` = 1e-4 percentage points, so claims must be written
  unrounded, as :func:`build_submission` does): every claimed ``R@k`` with
  ``k <= topk_saved``, ``mAP@topk_saved``, their bootstrap CIs (recomputed with the claimed
  seed and resample count) and the same numbers in every per-attribute breakdown bucket;
* by bounds: the claimed full-ranking ``mAP`` must lie in
  ``[mAP@K, benchmark.evaluation.metrics.map_upper_bound(...)]`` (ground truths below rank K cannot be
  seen in a top-K list, so full mAP is recorded but only bounded);
* claimed ``R@k`` with ``k > topk_saved`` cannot be checked and are reported as such.

The leaderboard only ever shows re-scored numbers (R@k, mAP@K) for verified rows.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jsonschema

from benchmark.core import safe_json
from benchmark.core.atomic import atomic_write_bytes
from benchmark.core.config import Profile
from benchmark.core.jsonable import to_jsonable
from benchmark.record.record import Submission
from datasets.records import DatasetSplits

SCHEMA_VERSION = 3  # written; v2 = v1 + provenance.identity and git's diff record; v3 = v2 + source "external"
READABLE_VERSIONS = (1, 2, 3)  # older submissions still load, each against its own schema
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
METRIC_TOLERANCE = 1e-4  # percentage points
GZIP_OVER_BYTES = 1 << 20  # written gzip-compressed above this size
MAX_FAULTS_SHOWN = 20
SUBMISSIONS_SUBDIR = "submissions"


class SubmissionError(ValueError):
    """A submission is malformed or its claims do not re-score; ``str()`` names the file."""


# --- schema --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def load_schema(name: str = "submission", version: Optional[int] = None) -> dict[str, Any]:
    """The JSON schema ``benchmark/record/schemas/<name>-v<N>.json``: ``submission`` (``version``,
    default :data:`SCHEMA_VERSION`) or ``reported`` (v1)."""
    if version is None:
        version = SCHEMA_VERSION if name == "submission" else 1
    path = SCHEMA_DIR / f"{name}-v{version}.json"
    with open(path, encoding="utf-8") as fh:
        schema = json.load(fh)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def schema_errors(obj: Any, name: str = "submission") -> list[str]:
    """Human-readable schema violations (``path: message``), deterministic order.

    A submission's ``rankings`` (up to millions of ids) are checked against the schema's
    rule for them by a direct loop (:func:`_ranking_errors`): jsonschema would take seconds.
    """
    rankings = None
    version = None
    if name == "submission" and isinstance(obj, dict) and obj.get("schema_version") in READABLE_VERSIONS:
        version = obj["schema_version"]
    if name == "submission" and isinstance(obj, dict) and isinstance(obj.get("rankings"), list) and obj["rankings"]:
        rankings = obj["rankings"]
        obj = {**obj, "rankings": rankings[:1]}
    validator = jsonschema.Draft202012Validator(load_schema(name, version))
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        msg = err.message if len(err.message) <= 300 else err.message[:300] + "..."
        out.append(f"{where}: {msg}")
    if rankings is not None:
        out += _ranking_errors(rankings)
    return out


def _ranking_errors(rankings: list) -> list[str]:
    """The schema's ``rankings`` rule, as a loop: ``[query_id, [gallery ids]]`` pairs of
    strings of 1..500 characters, at most 1000 ids a query."""
    rule = load_schema()["properties"]["rankings"]["items"]["prefixItems"]
    max_str, max_ids = rule[0]["maxLength"], rule[1]["maxItems"]
    errors = []
    for i, row in enumerate(rankings):
        if not (isinstance(row, list) and len(row) == 2):
            errors.append(f"rankings/{i}: must be a [query_id, [gallery ids]] pair")
        elif not (isinstance(row[0], str) and 0 < len(row[0]) <= max_str):
            errors.append(f"rankings/{i}/0: query id must be a string of 1..{max_str} characters")
        elif not isinstance(row[1], list) or len(row[1]) > max_ids:
            errors.append(f"rankings/{i}/1: must be a list of at most {max_ids} gallery ids")
        elif not all(isinstance(g, str) and 0 < len(g) <= max_str for g in row[1]):
            errors.append(f"rankings/{i}/1: gallery ids must be strings of 1..{max_str} characters")
        if len(errors) >= MAX_FAULTS_SHOWN * 5:
            break
    return errors


def _raise(source: str, faults: Sequence[str]) -> None:
    if faults:
        shown = list(faults[:MAX_FAULTS_SHOWN])
        more = len(faults) - len(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise SubmissionError(f"{source}: {len(faults)} problem(s):\n  " + "\n  ".join(shown) + tail)


# --- building and writing --------------------------------------------------------------------


def dataset_record(
    dataset: str, splits: DatasetSplits, size: Optional[str] = None, seed: Optional[int] = None
) -> dict[str, Any]:
    """A submission's ``dataset`` block: the registry name, the test split's annotation checksum,
    layout and counts, and (synthetic sets) the generator's ``size``/``seed``; the same block for
    every source (reproduced or external), so that the leaderboard reads and re-scores both alike."""
    return {
        "name": dataset,
        "split": "test",
        "annotation_checksum": splits.annotation_checksum,
        "layout": splits.layout,
        "grouped": bool(splits.grouped),
        "num_queries": len(splits.queries),
        "num_gallery": len(splits.gallery),
        "num_queries_without_frames": sum(1 for q in splits.queries if q.missing),
        "size": size,
        "seed": seed,
    }


def build_submission(
    *,
    method: str,
    variant: str,
    method_config: Any,
    num_parameters: int,
    dataset: str,
    splits: DatasetSplits,
    profile: Profile,
    metrics: Mapping[str, Any],
    rankings: Sequence[Sequence[Any]],
    provenance: Mapping[str, Any],
    seed: int,
    wall_time_s: Mapping[str, float],
    rerank: str = "none",
    pairs_scored: int = 0,
    score: str = "cosine similarity of L2-normalised embeddings",
    dataset_size: Optional[str] = None,
    dataset_seed: Optional[int] = None,
    date: Optional[str] = None,
) -> dict[str, Any]:
    """Assemble a submission dict (schema :data:`SCHEMA_VERSION`) (validated; raises :class:`SubmissionError`).

    ``dataset`` is the registry name the run used (e.g. ``lpr4m-synth``), ``metrics`` the
    output of :func:`benchmark.evaluation.scoring.metrics_for_ranking`, ``rankings`` the output of
    :func:`benchmark.evaluation.scoring.ranked_ids`, ``provenance`` that of
    :func:`benchmark.record.provenance.collect` (git, packages, device, ...), to which ``seed``,
    ``wall_time_s`` (e.g. ``{"train": ..., "eval": ...}``) and ``date`` (default: now, UTC)
    are added. ``dataset_size``/``dataset_seed``: the generator parameters of a synthetic
    dataset, so the leaderboard can regenerate it to re-score.
    """
    ev = profile.eval
    sub: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": "reproduced",
        "method": {
            "name": method,
            "variant": variant or "",
            "config": to_jsonable(method_config),
            "num_parameters": int(num_parameters),
        },
        "dataset": dataset_record(dataset, splits, dataset_size, dataset_seed),
        "profile": {
            "name": profile.name,
            **to_jsonable({"data": profile.data, "train": profile.train, "eval": ev}),
            **({"method_recipe": to_jsonable(profile.method_recipe)} if profile.method_recipe else {}),
        },
        "protocol": {
            "score": score,
            "tie_break": "gallery-order",
            "ks": [int(k) for k in ev.ks],
            "topk_saved": int(ev.topk_saved),
            "rerank": rerank,
            "rerank_topk": int(ev.rerank_topk),
            "pairs_scored": int(pairs_scored),
        },
        "metrics": to_jsonable(metrics),
        "rankings": [[str(q), [str(g) for g in ids]] for q, ids in rankings],
        "provenance": {
            **to_jsonable(provenance),
            "seed": int(seed),
            "wall_time_s": {k: float(v) for k, v in wall_time_s.items() if v is not None},
            "date": date
            or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        },
    }
    _raise(f"submission for {method} on {dataset}", _all_faults(sub))
    return sub


def _all_faults(sub: Submission) -> list[str]:
    return schema_errors(sub) or consistency_faults(sub)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def rerank_stage(protocol: Mapping[str, Any]) -> Optional[str]:
    """A submission's second stage: ``"all"`` (every pair of the group), ``"top<K>"`` (the
    first-stage top K) or None (first-stage embeddings only)."""
    mode = protocol.get("rerank", "none")
    if mode == "all":
        return "all"
    if mode == "topk":
        return f"top{protocol.get('rerank_topk')}"
    return None


def uses_pretrained(method_config: Any) -> bool:
    """Whether a method config names pretrained weights anywhere (a ``pretrained`` field that
    is set, at any depth: ``encoder.pretrained``, ``backbone.pretrained``, ...)."""
    if isinstance(method_config, Mapping):
        return any((k == "pretrained" and bool(v)) or uses_pretrained(v) for k, v in method_config.items())
    return False


def starting_point(trained: bool, weights: bool, method_config: Any, files: bool = False) -> Optional[str]:
    """What an evaluation-only run evaluated: ``"external-weights"`` (weights read from files its
    config names, ``files``: trained outside the harness, whatever the field is called),
    ``"zero-shot"`` (published pretrained weights named by a hub tag, no training) or
    ``"untrained"`` (randomly initialised weights: the control a trained row must beat); None for
    a run that trained, or that loaded another run's weights (``--weights``)."""
    if trained or weights:
        return None
    if files:
        return "external-weights"
    return "zero-shot" if uses_pretrained(method_config) else "untrained"


def submission_start(sub: Submission) -> Optional[str]:
    """:func:`starting_point` of a submission (no ``provenance.training`` = it trained nothing);
    None for an external submission (its training happened outside, see ``provenance.external``)."""
    if sub.get("source") == "external":
        return None
    prov = sub["provenance"]
    return starting_point(
        prov.get("training") is not None,
        bool(prov.get("initial_weights")),
        sub["method"].get("config"),
        files=bool(prov.get("weights_files")),
    )


def submission_filename(sub: Submission) -> str:
    """``<dataset>__<profile>__<method>[-<variant>][__rerank-<mode>][__weights-<sha8>][__untrained|__zero-shot|__external-weights][__external]__seed<N>.json``
    (``.gz`` when large; ``__external``: a model's outputs made outside the harness).

    A re-ranked evaluation (``--rerank all|topk``) gets its own file, so that it stands beside
    the same checkpoint's first-stage submission instead of replacing it.
    """
    m = sub["method"]
    label = m["name"] + (f"-{m['variant']}" if m.get("variant") else "")
    parts = [sub["dataset"]["name"], sub["profile"]["name"], label]
    stage = rerank_stage(sub.get("protocol", {}))
    if stage:
        parts.append(f"rerank-{stage}")
    weights = sub["provenance"].get("initial_weights")
    if weights:  # evaluated (or fine-tuned) from another run's weights: beside that run, not over it
        parts.append(f"weights-{weights['sha256'][:8]}")
    start = submission_start(sub)
    if start:  # an evaluation of initial weights (--epochs 0) never replaces the trained row
        parts.append(start)
    if sub.get("source") == "external":  # never in the place of a harness run of the same name
        parts.append("external")
    parts.append(f"seed{sub['provenance']['seed']}")
    return "__".join(_safe_name(p) for p in parts) + ".json"


def dumps_submission(sub: Submission) -> str:
    """Deterministic text: the header indented, then one ranking per line (diff-friendly)."""
    head = {k: v for k, v in sub.items() if k != "rankings"}
    text = json.dumps(head, indent=1, ensure_ascii=False, allow_nan=False)
    rows = ",\n".join("  " + json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in sub["rankings"])
    return text[:-2] + ',\n "rankings": [\n' + rows + "\n ]\n}\n"


def write_submission(sub: Submission, results_dir: Path | str = "results", *, gzip_over: int = GZIP_OVER_BYTES) -> Path:
    """Validate and atomically write ``sub`` to ``<results_dir>/submissions/``; return the path.

    Written gzip-compressed (``.json.gz``, mtime 0: deterministic bytes) when larger than
    ``gzip_over``; a stale copy under the other extension is removed afterwards.
    """
    _raise("submission to write", _all_faults(sub))
    data = dumps_submission(sub).encode("utf-8")
    path = Path(results_dir) / SUBMISSIONS_SUBDIR / submission_filename(sub)
    other = path.with_name(path.name + ".gz")
    if len(data) > gzip_over:
        data = gzip.compress(data, compresslevel=6, mtime=0)
        path, other = other, path
    atomic_write_bytes(path, data)
    if other.exists():
        other.unlink()
    return path


# --- loading --------------------------------------------------------------------------------


def consistency_faults(sub: Submission) -> list[str]:
    """Checks that need no dataset: duplicate ids, list lengths, metric sanity. Assumes the schema holds."""
    faults: list[str] = []
    topk = sub["protocol"]["topk_saved"]
    seen: set[str] = set()
    for i, (qid, ids) in enumerate(sub["rankings"]):
        if qid in seen:
            faults.append(f"rankings[{i}]: duplicate query id {qid!r}")
        seen.add(qid)
        if len(ids) > topk:
            faults.append(f"rankings[{i}] query {qid!r}: {len(ids)} ids, more than topk_saved={topk}")
        if len(set(ids)) != len(ids):
            dup = next(g for g in ids if ids.count(g) > 1)
            faults.append(f"rankings[{i}] query {qid!r}: gallery id {dup!r} listed twice")
    m = sub["metrics"]
    if len(sub["rankings"]) != sub["dataset"]["num_queries"]:
        faults.append(
            f"rankings: {len(sub['rankings'])} queries, dataset.num_queries says {sub['dataset']['num_queries']}"
        )
    if m["num_queries"] != sub["dataset"]["num_queries"]:
        faults.append(f"metrics.num_queries={m['num_queries']} but dataset.num_queries={sub['dataset']['num_queries']}")
    for k in m["ks"]:
        if f"R{k}" not in m["overall"]:
            faults.append(f"metrics.overall: R{k} missing although metrics.ks lists {k}")
    for where, entry in _metric_entries(m):
        if entry["ci95"] is not None:
            lo, hi = entry["ci95"]
            if not lo <= hi:
                faults.append(f"{where}: ci95 [{lo}, {hi}] is not an interval")
    return faults


def _metric_entries(metrics: Mapping[str, Any]):
    for name, entry in metrics["overall"].items():
        yield f"metrics.overall.{name}", entry
    for attr, buckets in metrics["breakdowns"].items():
        for value, bucket in buckets.items():
            for name, entry in bucket.items():
                if name != "n":
                    yield f"metrics.breakdowns.{attr}.{value}.{name}", entry


def load_submission(
    path: Path | str, *, max_bytes: int = safe_json.MAX_BYTES, max_depth: int = safe_json.MAX_DEPTH
) -> Submission:
    """Read a submission under size/depth limits, validate schema and internal consistency."""
    try:
        obj = safe_json.load(path, max_bytes=max_bytes, max_depth=max_depth)
    except safe_json.UntrustedJSONError as exc:
        raise SubmissionError(str(exc)) from None
    if not isinstance(obj, dict):
        raise SubmissionError(f"{path}: top level must be a JSON object, got {type(obj).__name__}")
    if obj.get("schema_version") not in READABLE_VERSIONS:
        raise SubmissionError(
            f"{path}: schema_version {obj.get('schema_version')!r} is not supported "
            f"(expected one of {', '.join(map(str, READABLE_VERSIONS))})"
        )
    errors = schema_errors(obj)
    _raise(f"{path} (schema violations)", errors)
    _raise(str(path), consistency_faults(obj))
    return obj
