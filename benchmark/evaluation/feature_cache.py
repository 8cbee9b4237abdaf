"""On-disk cache of test-set embeddings, so that re-evaluating or re-ranking never re-encodes.

Encoding the queries and the gallery is most of an evaluation's cost; ranking, re-ranking
(``--rerank``) and the metrics are cheap next to it. :class:`FeatureCache` stores what
:func:`benchmark.evaluation.evaluate.extract` returns (L2-normalised embeddings, plus the method's
``Encoded.extras`` when a second stage needed them) under a key made of

* the weights: a SHA-256 over every ``state_dict`` entry (name, dtype, shape, bytes), so any
  change to any parameter or buffer, by training or by ``--pretrained``, is a miss;
* the dataset: its annotation checksum (``DatasetSplits.annotation_checksum``), the split and
  side, and a hash of the item ids in order (a query whose clip is missing is not encoded);
* the configuration: the profile's data config (frames, sizes, normalisation; plus a profile
  name where the caller gives one), the method's class and config, and the autocast dtype;
* the method's code: :func:`benchmark.record.run_identity.code_hash` over the source files of the
  method's classes and its submodules' (plugin files included), so that a plugin edited
  between two runs with the same weights (e.g. ``--epochs 0`` from a seeded random start)
  never reads the embeddings of its previous code.
  Deliberately not: the re-ranking mode and depth (re-ranking reuses the features) and the
  evaluation batch size (it changes embeddings by float rounding at most).

An entry that holds extras also serves a request without them; one without extras is a miss
for a request that needs them (and is replaced). Entries are written atomically
(:func:`benchmark.core.atomic.atomic_torch_save`) by rank 0 and read with
``torch.load(weights_only=True)``; the stored key is compared field by field, the tensors
against the entry's ``content_sha256`` (:func:`content_hash`: the key's digest and every
tensor's name, dtype, shape and bytes, written with them), and an unreadable, altered or
inconsistent entry is reported and recomputed, never trusted. Entries larger
than ``max_entry_bytes`` are not written. Not covered by the key: the image and frame files
themselves (the annotation checksum covers the annotations only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from benchmark.core.atomic import WriteError, atomic_torch_save
from benchmark.core.code_hash import code_hash
from benchmark.core.safe_load import UnsafeOrCorruptFile, safe_torch_load
from benchmark.training.distributed import DistEnv, broadcast_object
from methods.base import Encoded, Method

CACHE_VERSION = 3  # 2: the method's code is in the key; 3: entries carry a content hash
DEFAULT_MAX_ENTRY_BYTES = 4 << 30
FEATURE_CACHE_DIR = "feature-cache"  # under the run output directory (runner)


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 over ``module.state_dict()``: names, dtypes, shapes and raw bytes, in key order."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode("utf-8") + b"\0")
        if not isinstance(value, Tensor):
            h.update(repr(value).encode("utf-8") + b"\0")
            continue
        t = value.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode("ascii") + b"\0")
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def content_hash(key: "FeatureKey", embedding: Tensor, extras: dict[str, Tensor]) -> str:
    """SHA-256 binding an entry's tensors to its key: the key digest, then each tensor's name,
    dtype, shape and bytes (embedding first, extras by name)."""
    h = hashlib.sha256(key.digest().encode("ascii") + b"\0")
    for name, t in [("embedding", embedding), *sorted(extras.items())]:
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}{tuple(t.shape)}\0".encode("utf-8"))
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ids_hash(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\n")
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """A stable hash of a (nested) dataclass / JSON-like configuration."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FeatureKey:
    """Everything an entry depends on; its digest names the file."""

    model: str
    annotations: str
    config: str
    split: str
    side: str
    items: str
    amp: str
    version: int = CACHE_VERSION

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


@dataclass
class FeatureCache:
    """A folder of cached embeddings; ``stats`` counts hits, misses and writes."""

    root: Path
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    stats: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0, "writes": 0})

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, key: FeatureKey) -> Path:
        return self.root / f"{key.side}-{key.digest()[:40]}.pt"

    def context(
        self,
        method: Method,
        *,
        annotation_checksum: str,
        profile: str,
        data_cfg: Any,
        amp_dtype: Optional[torch.dtype],
        split: str = "test",
    ) -> "CacheContext":
        """Bind the parts of the key shared by both sides (the weights are hashed once, here)."""
        cfg = {
            "profile": profile,
            "data": data_cfg,
            "method": f"{type(method).__module__}.{type(method).__qualname__}",
            "method_config": method.cfg,
            "method_code": code_hash(method)["sha256"],
        }
        return CacheContext(
            self,
            model=state_dict_hash(method),
            annotations=str(annotation_checksum),
            config=config_hash(cfg),
            split=split,
            amp=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "fp32",
        )

    # --- entries -------------------------------------------------------------------------

    def load(self, key: FeatureKey, *, num_items: int, need_extras: bool) -> Optional[Encoded]:
        """The cached :class:`Encoded` for ``key``, or ``None`` (absent, unusable or lacking extras)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = safe_torch_load(path)
            problem = _entry_problem(entry, key, num_items)
        except UnsafeOrCorruptFile as exc:  # truncated, not a torch file, unsafe pickle
            problem = f"unreadable: {exc.reason}"
        if problem:
            print(f"warning: feature cache entry {path} ignored: {problem}; re-encoding", file=sys.stderr)
            return None
        if need_extras and not entry["has_extras"]:
            return None
        extras = dict(entry["extras"]) if need_extras else {}
        return Encoded(entry["embedding"], extras)

    def save(self, key: FeatureKey, enc: Encoded, *, has_extras: bool) -> Optional[Path]:
        """Write ``enc`` atomically; ``None`` (with a note) when larger than ``max_entry_bytes``."""
        tensors = [enc.embedding, *(enc.extras.values() if has_extras else ())]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        path = self.path(key)
        if nbytes > self.max_entry_bytes:
            print(
                f"note: {key.side} features ({nbytes / 2**20:.0f} MiB) exceed the feature cache's "
                f"{self.max_entry_bytes / 2**20:.0f} MiB limit; not cached",
                file=sys.stderr,
            )
            return None
        entry = {
            "key": key.as_dict(),
            "embedding": enc.embedding.detach().cpu().contiguous(),
            "extras": {k: v.detach().cpu().contiguous() for k, v in enc.extras.items()} if has_extras else {},
            "has_extras": bool(has_extras),
        }
        entry["content_sha256"] = content_hash(key, entry["embedding"], entry["extras"])
        try:
            atomic_torch_save(path, entry)
        except WriteError as exc:  # a cache that cannot be written must not fail the evaluation
            print(f"warning: feature cache not written: {exc}", file=sys.stderr)
            return None
        self.stats["writes"] += 1
        return path


@dataclass
class CacheContext:
    """A :class:`FeatureCache` bound to one model, dataset and configuration."""

    cache: FeatureCache
    model: str
    annotations: str
    config: str
    split: str
    amp: str

    def key(self, side: str, ids: Sequence[str]) -> FeatureKey:
        return FeatureKey(self.model, self.annotations, self.config, self.split, side, ids_hash(ids), self.amp)

    def get_or_compute(
        self, side: str, ids: Sequence[str], *, need_extras: bool, env: DistEnv, compute: Callable[[], Encoded]
    ) -> Encoded:
        """The cached features of ``ids`` (``side``), else ``compute()`` them and cache them.

        Under ``torchrun`` rank 0 decides hit or miss for every rank; on a hit the other ranks
        get a zero placeholder of the right shape (only rank 0 ranks), on a miss every rank
        takes part in ``compute()`` (sharded extraction) and rank 0 writes the entry.
        """
        key = self.key(side, ids)
        found = self.cache.load(key, num_items=len(ids), need_extras=need_extras) if env.is_main else None
        dim = broadcast_object(None if found is None else int(found.embedding.shape[1]), env)
        if dim is not None:
            self.cache.stats["hits"] += 1
            return found if found is not None else Encoded(torch.zeros(len(ids), dim))
        self.cache.stats["misses"] += 1
        enc = compute()
        if env.is_main:
            self.cache.save(key, enc, has_extras=need_extras)
        return enc


def _entry_problem(entry: Any, key: FeatureKey, num_items: int) -> Optional[str]:
    """Why a loaded entry cannot be used for ``key`` (``None`` when it can)."""
    if not isinstance(entry, dict) or not {"key", "embedding", "extras", "has_extras"} <= set(entry):
        return "not a feature cache entry"
    if entry["key"] != key.as_dict():
        return "its key does not match (stale or colliding entry)"
    emb = entry["embedding"]
    if not isinstance(emb, Tensor) or emb.ndim != 2 or emb.shape[0] != num_items:
        return f"embedding shape {getattr(emb, 'shape', None)} does not fit {num_items} items"
    if not bool(torch.isfinite(emb).all()):
        return "non-finite embeddings"
    if not isinstance(entry["extras"], dict):
        return "not a feature cache entry"
    for name, t in entry["extras"].items():
        if not isinstance(t, Tensor) or t.shape[0] != num_items:
            return f"extra {name!r} does not fit {num_items} items"
    if entry.get("content_sha256") != content_hash(key, emb, entry["extras"]):
        return "its tensors do not match their content hash (altered after writing)"
    return None


def cached(
    ctx: Optional[CacheContext],
    side: str,
    ids: Sequence[str],
    *,
    need_extras: bool,
    env: DistEnv,
    compute: Callable[[], Encoded],
) -> Encoded:
    """``ctx.get_or_compute(...)``, or plain ``compute()`` when caching is off (``ctx`` None)."""
    if ctx is None:
        return compute()
    return ctx.get_or_compute(side, ids, need_extras=need_extras, env=env, compute=compute)
