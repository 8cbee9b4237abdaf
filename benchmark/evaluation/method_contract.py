"""The method contract, checked where the harness receives a method's output.

``encode_query`` / ``encode_gallery`` must return a :class:`methods.base.Encoded` whose
``embedding`` is a floating-point tensor of shape ``[items in the batch, D]`` (the same ``D``
for every batch and both sides) holding finite numbers, and whose ``extras`` each have one
row per item. A plugin that breaks this would otherwise crash deep in ranking with a stack
trace, or rank NaNs silently; :func:`encoded_problem` says what was wrong, naming the method,
for the caller to raise as one ``error:`` line.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from torch import Tensor

from benchmark.core.registry import METHODS
from methods.base import Encoded


def method_name(method: Any) -> str:
    """``registered-name (module file)``: how an error names the method (a plugin's file included)."""
    cls = type(method)
    try:
        where = inspect.getsourcefile(cls)
    except TypeError:
        where = None

    name = next((e.name for e in METHODS if e.obj is cls), cls.__name__)
    return f"{name} ({where.rsplit('/', 1)[-1]})" if where else str(name)


def encoded_problem(method: Any, fn: str, enc: Any, num_items: int, dim: Optional[int] = None) -> Optional[str]:
    """Why ``enc``, returned by ``method.<fn>`` for a batch of ``num_items`` items, breaks the
    contract (``dim``: the embedding width seen so far); None when it keeps it."""

    who = f"method {method_name(method)}: {fn}"
    if not isinstance(enc, Encoded):
        return f"{who} returned a {type(enc).__name__}, not an Encoded(embedding, extras)"
    emb = enc.embedding
    if not isinstance(emb, Tensor):
        return f"{who} returned an embedding of type {type(emb).__name__}, not a tensor"
    if emb.ndim != 2 or emb.shape[0] != num_items:
        return (
            f"{who} returned an embedding of shape {tuple(emb.shape)} for a batch of {num_items} items; "
            f"expected [{num_items}, D] (one row per item)"
        )
    if not emb.dtype.is_floating_point:
        return f"{who} returned an embedding of dtype {emb.dtype}; expected a floating-point tensor"
    if dim is not None and emb.shape[1] != dim:
        return f"{who} returned {emb.shape[1]}-dimensional embeddings after {dim}-dimensional ones"
    bad = int((~torch.isfinite(emb.detach())).any(dim=1).sum())
    if bad:
        return f"{who} returned non-finite values (NaN or inf) in the embeddings of {bad} of {num_items} items"
    for key, value in (enc.extras or {}).items():
        if isinstance(value, Tensor) and (value.ndim == 0 or value.shape[0] != num_items):
            return (
                f"{who} returned extras[{key!r}] of shape {tuple(value.shape)}; expected one row per item ({num_items})"
            )
    return None
