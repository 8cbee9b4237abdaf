"""What a run measures, as a comparable record: its identity, and the guard that keeps a run
from writing over a submission of another identity.

A submission's file name (:func:`benchmark.record.submission.submission_filename`) says which row it
is (dataset, profile, method and variant, stage, seed), but not everything that changes what
the row measures. The identity adds: the dataset instance (its annotation checksum: a
``--data-root`` pointing at another set of annotations is another dataset), truncation (a run
stopped by ``--max-steps`` before its recipe's last step is *partial*: its leaderboard row says
so and is never ranked), the method's code (:func:`code_hash`: the source files of the method's
classes and of every submodule's class that live outside the Python installation, plugin
files included), the profile and the ``--set`` overrides.

:func:`check_target` refuses (:class:`IdentityError`, one line) to write over an existing
submission whose identity differs, unless the user asked for it (``--overwrite``). Submissions
written before identities were recorded ("legacy") are compared on what they do record
(dataset, checksum, profile, method config, seed, truncation); their code is unknown and is
not held against them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.core.code_hash import code_files, code_hash  # noqa: F401  (re-exported: the record's API)
from benchmark.record.record import Submission
from benchmark.record.submission import SubmissionError, load_submission

# profile fields that change how a run executes, not what it measures
OPERATIONAL = {("data", "num_workers"), ("train", "grad_accum"), ("train", "checkpoint_every"), ("train", "amp")}


class IdentityError(ValueError):
    """A run would write over a submission of another identity; the message says how to proceed."""


# --- the identity --------------------------------------------------------------------------


def planned_steps(epochs: int, num_pairs: int, batch_size: int, world_size: int = 1, grad_accum: int = 1) -> int:
    """Optimizer steps the recipe plans (the engine's count without ``max_steps``)."""
    denom = world_size * grad_accum
    if batch_size <= 0 or batch_size % denom:
        return 0
    micro = batch_size // denom
    return int(epochs) * (((num_pairs // world_size) // micro) // grad_accum)


def build_identity(
    *,
    dataset: str,
    annotation_checksum: str,
    custom_root: bool,
    profile: Mapping[str, Any],
    method: str,
    overrides: Mapping[str, Any],
    code: Mapping[str, Any],
    seed: int,
    max_steps: Optional[int],
    planned: Optional[int],
) -> dict[str, Any]:
    """The ``provenance.identity`` block of a submission (JSON-ready)."""
    partial = bool(max_steps is not None and planned is not None and max_steps < planned)
    return {
        "dataset": dataset,
        "annotation_checksum": annotation_checksum,
        "custom_data_root": bool(custom_root),
        "profile": str(profile.get("name", "")),
        "method": method,
        "overrides": {str(k): str(v) for k, v in sorted(overrides.items())},
        "code": dict(code),
        "seed": int(seed),
        "max_steps": max_steps,
        "planned_steps": planned,
        "partial": partial,
    }


def is_partial(sub: Submission) -> bool:
    """Whether a submission's training stopped before its recipe's end (``--max-steps``): the
    recorded identity says so, else (legacy) it had a ``max_steps`` and completed fewer epochs
    than its profile's."""
    identity = sub.get("provenance", {}).get("identity")
    if isinstance(identity, Mapping) and "partial" in identity:
        return bool(identity["partial"])
    training = sub.get("provenance", {}).get("training")
    train = sub.get("profile", {}).get("train") or {}
    if not isinstance(training, Mapping) or train.get("max_steps") is None:
        return False
    epochs = train.get("epochs")
    done = training.get("epochs_completed")
    return isinstance(epochs, int) and isinstance(done, int) and done < epochs


def _profile_measure(profile: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, block in profile.items():
        if isinstance(block, Mapping):
            out[part] = {k: v for k, v in block.items() if (part, k) not in OPERATIONAL}
        else:
            out[part] = block
    return out


def comparable(sub: Submission) -> dict[str, Any]:
    """The parts of a submission's identity that can be compared, legacy or not; the code is
    None when the submission did not record it."""
    ds, prov = sub["dataset"], sub["provenance"]
    identity = prov.get("identity") if isinstance(prov.get("identity"), Mapping) else {}
    code = identity.get("code") if isinstance(identity.get("code"), Mapping) else {}
    return {
        "dataset": ds.get("name"),
        "annotation checksum": ds.get("annotation_checksum"),
        "dataset size": ds.get("size"),
        "dataset seed": ds.get("seed"),
        "profile": _profile_measure(sub.get("profile") or {}),
        "method": sub["method"].get("name"),
        "variant": sub["method"].get("variant"),
        "method config": sub["method"].get("config"),
        "seed": prov.get("seed"),
        "partial": is_partial(sub),
        "method code": code.get("sha256"),
        "weights files": {k: v.get("sha256") for k, v in prov["weights_files"].items()}
        if isinstance(prov.get("weights_files"), Mapping) and prov["weights_files"]
        else None,
    }


def differences(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`comparable` records. What the older record
    does not say is not a difference: its ``method code`` (a legacy submission) and config or
    profile fields added to the code after it was written."""
    out = []
    for key in new:
        a, b = new[key], old.get(key)
        if key == "method code" and (a is None or b is None):
            continue
        if a != b:
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                keys = _changed_keys(b, a)
                if not keys:
                    continue
                shown = ", ".join(f"{k} {_short(v0)} -> {_short(v1)}" for k, v0, v1 in keys[:3])
                out.append(f"{key}: {shown}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""))
            else:
                out.append(f"{key} {_short(b)} -> {_short(a)}")
    return out


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two nested mappings. A key the old record lacks
    is a setting added to the code since it was written: unknown, not a difference."""
    out: list[tuple[str, Any, Any]] = []
    for k in sorted(old, key=str):
        a, b = old[k], new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 32 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else hashlib.sha256(text.encode()).hexdigest()[:12]


def check_target(path: Path, new: Mapping[str, Any], *, overwrite: bool) -> None:
    """Raise :class:`IdentityError` when ``path`` holds a readable submission of another
    identity than ``new`` (a :func:`comparable` record) and ``overwrite`` is off. An
    unreadable file at ``path`` is another identity too (it cannot be shown to be the same)."""

    candidates = [p for p in (path, _other_extension(path)) if p.exists() or p.is_symlink()]
    if overwrite or not candidates:
        return
    existing = candidates[0]
    try:
        old = comparable(load_submission(existing))
    except SubmissionError as exc:
        why = f"it cannot be read ({str(exc).splitlines()[0][:200]})"
    else:
        diff = differences(new, old)
        if not diff:
            return
        why = "it records another run: " + "; ".join(diff)
    raise IdentityError(
        f"{existing}: not written over, {why}; pass --overwrite to replace it on purpose, "
        f"or --results-dir DIR to write this run's submission elsewhere"
    )


def _other_extension(path: Path) -> Path:
    return path.with_name(path.name[:-3]) if path.name.endswith(".gz") else path.with_name(path.name + ".gz")
