"""The part of a run's method config that its variant label does not name.

A method's ``variant()`` names its ablations (RICE's ``icl+pmd``); any other ``--set`` change
(``--set depths=2,2,2,2``) would otherwise give a run the default's label, run directory,
submission file and leaderboard row, overwriting it. :func:`variant_with_settings` appends
those changes to the variant (``depths-2_2_2_2``, or ``set-<sha8>`` when long), so such a
run stands beside the default instead of replacing it, and reads as what it is. The same holds
for the protocol's training recipe: a run trained with ``--epochs``, ``--batch-size``,
``--lr-encoder``, ``--lr-new`` or ``--weight-decay`` changed from its profile's carries them as
``train.<field>-<value>`` (:func:`recipe_changes`), since its row is no longer one trained under
the table's protocol. Operational fields (``--max-steps``, which a resumed run may lift,
``--grad-accum`` at the same global batch, ``--checkpoint-every``, AMP) leave the label alone.
Labels keep to the submission schema's variant characters (``[A-Za-z0-9._+-]``): a setting
reads ``key-value`` (a tuple's items joined by ``_``); other values are named by the hash.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from typing import Any, Mapping, Optional

from benchmark.core.config import PROFILES
from methods.base import apply_overrides

NO_WEIGHTS = ("", "none", "random")  # ``pretrained`` values that ask for a random start
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "lr_encoder",
    "lr_new",
    "weight_decay",
    "warmup_ratio",
    "grad_clip",
    "group_batches",
    "group_size",
)
RECIPE_PREFIX = "train."  # recipe settings in a label: ``train.epochs-8``
MAX_READABLE = 40  # longer settings are named by a hash (the submission keeps the whole config)
READABLE = re.compile(r"^[A-Za-z0-9._+-]*$")  # the schema's variant characters


def changed_fields(default: Any, current: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted field names whose values differ between two configs of one dataclass type."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(default):
        a, b = getattr(default, f.name), getattr(current, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            out.update(changed_fields(a, b, key + "."))
        elif a != b:
            out[key] = b
    return out


def _variant_of(method: Any, cfg: Any) -> str:
    """``method.variant()`` as it would read with ``cfg`` (a shallow copy: no weights copied)."""
    probe = copy.copy(method)
    object.__setattr__(probe, "cfg", cfg)
    return probe.variant()


def _no_weights(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NO_WEIGHTS)


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "_".join(_text(v) for v in value)
    return "none" if value is None else str(value)


def unnamed_settings(method: Any, default: Any, ignore_weights: bool) -> dict[str, Any]:
    """Fields of ``method.cfg`` changed from ``default`` whose change alone leaves the variant
    label as the default's. ``ignore_weights``: leave out where the weights come from (a
    ``--pretrained`` file, or a ``--weights`` run, whose loader clears ``pretrained``)."""
    cfg = method.cfg
    if not (dataclasses.is_dataclass(default) and dataclasses.is_dataclass(cfg)) or type(default) is not type(cfg):
        return {}
    base = _variant_of(method, default)
    out: dict[str, Any] = {}
    for key, value in changed_fields(default, cfg).items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "require_pretrained":  # a guard, not the model
            continue
        if leaf == "pretrained" and (ignore_weights or not _no_weights(value)):  # a file for a hub name: same model
            continue
        if _variant_of(method, apply_overrides(default, {key: value})) == base:
            out[key] = value
    return out


def recipe_changes(profile: str, train: Any, method_recipe: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``train.<field>``: value for the recipe fields (``RECIPE_FIELDS``) of ``train`` (a
    ``TrainConfig``, or its JSON form in a submission) that differ from those of the profile
    named ``profile`` with the method's own recipe for it (``method_recipe``, the profile's
    ``method_recipe``) applied; ``{}`` for a profile this checkout does not define."""
    base = PROFILES.get(profile)
    if base is None:
        return {}
    expected = {f: getattr(base.train, f) for f in RECIPE_FIELDS} | dict(method_recipe or {})
    values = train if isinstance(train, Mapping) else {f: getattr(train, f) for f in RECIPE_FIELDS}
    return {RECIPE_PREFIX + f: values[f] for f in RECIPE_FIELDS if f in values and values[f] != expected[f]}


def settings_label(settings: dict[str, Any], hashed: str = "set") -> str:
    """``k-v+k2-v2`` in key order, or ``<hashed>-<sha8>`` of it when longer than
    ``MAX_READABLE`` or not in the schema's characters (``''`` for no settings)."""
    if not settings:
        return ""
    text = "+".join(f"{k}-{_text(v)}" for k, v in sorted(settings.items()))
    if len(text) <= MAX_READABLE and READABLE.match(text):
        return text
    digest = hashlib.sha256(json.dumps(sorted((k, _text(v)) for k, v in settings.items())).encode()).hexdigest()
    return f"{hashed}-{digest[:8]}"


def join_label(*parts: str) -> str:
    return "+".join(p for p in parts if p)


def variant_with_settings(
    method: Any, default: Any, ignore_weights: bool = False, recipe: Optional[dict[str, Any]] = None
) -> str:
    """The method's variant, followed by the settings it does not name and the training
    recipe's changes (``recipe``, from :func:`recipe_changes`); ``''`` for none."""
    settings = settings_label(unnamed_settings(method, default, ignore_weights))
    return join_label(method.variant(), settings, settings_label(recipe or {}, hashed="train"))


def strip_recipe(variant: str, recipe: dict[str, Any]) -> str:
    """``variant`` without its recipe label: the variant of the same model trained under the
    profile's recipe (the key an untrained control, which trains nothing, is filed under)."""
    label = settings_label(recipe, hashed="train")
    if not label:
        return variant
    if variant == label:
        return ""
    return variant[: -len(label) - 1] if variant.endswith("+" + label) else variant
