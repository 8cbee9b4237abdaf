"""The method contract: what every retrieval method implements.

A method is an ``nn.Module`` registered with ``@METHODS.register(name)``. The protocol
(training engine, evaluator) only ever calls the members below; nothing else is assumed.

Batches are dicts (built by ``datasets.torch_data``). The DataLoader hands over ``frames`` and
``image`` as uint8 pixels (a quarter of the bytes through shared memory and the host-to-device
copy); the harness normalises them on the device right after the copy
(``benchmark.training.engine.to_device`` -> ``datasets.pixels.normalise_pixels``), so a method
always receives the float fields below:

query / clip side
    ``frames``      float [B, T, 3, H, W], normalised with CLIP mean/std; padding frames are 0.0
    ``frame_mask``  bool  [B, T], True where a real frame is (False = padding)
    ``boxes``       float [B, T, 4], intent-product box per frame, xyxy in [0, 1] of the
                    transformed frame (zeros where unknown)
    ``box_mask``    bool  [B, T], True where ``boxes`` holds a ground-truth box
    ``asr``         list[str], ASR transcript per clip ("" if none)
gallery / image side
    ``image``       float [B, 3, H, W]
    ``title``       list[str]
training batches hold both sides of each pair plus
    ``product``     long [B], product identity index in ``range(info.num_products)``
    ``category``    long [B], category index in ``range(info.num_categories)`` (-1 unknown)
every batch
    ``index``       long [B], position of the item in its split
and whatever the method's :meth:`Method.batch_preparer` adds in the DataLoader's workers (e.g.
``asr_tokens``: :mod:`methods.text_tokens`).

Hyperparameters live in one config dataclass per method with one instance per profile
(``paper`` and ``tiny``), returned by :meth:`Method.default_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import torch
from torch import Tensor, nn

from benchmark.core.config import method_profile


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about the data before training."""

    num_products: int
    num_categories: int
    num_frames: int
    image_size: int
    grouped: bool = True


@dataclass
class Encoded:
    """Embeddings of a batch; ``extras`` holds per-item tensors a ``rerank`` needs.

    ``embedding`` [B, D] is compared by cosine similarity (the evaluator L2-normalises it).
    Every tensor in ``extras`` has leading dimension B.
    """

    embedding: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Encoded":
        return Encoded(
            self.embedding.to(device, non_blocking=non_blocking),
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()},
        )

    def select(self, index: Tensor) -> "Encoded":
        return Encoded(self.embedding[index], {k: v[index] for k, v in self.extras.items()})


class Method(nn.Module):
    """Base class of every method. Subclasses set ``Config`` and ``PROFILES``."""

    Config: ClassVar[type] = type(None)
    PROFILES: ClassVar[Mapping[str, Any]] = {}
    # parameter-name prefixes trained at the encoder learning rate (pretrained parts)
    encoder_prefixes: ClassVar[tuple[str, ...]] = ("encoder.",)
    # set by methods whose rerank() re-scores (query, gallery) pairs
    supports_rerank: ClassVar[bool] = False
    # per profile, training-recipe values (TrainConfig fields) that replace the profile's for this
    # method: its own official command where it trained differently from the profile's recipe
    # (e.g. SGMN's batch 256, 10 epochs); command-line options still override them
    TRAIN_RECIPE: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # True when every trainable parameter takes part in every training step's loss (on every
    # process): DDP then skips its per-step search for unused parameters
    every_parameter_used: ClassVar[bool] = False
    # The configuration the leaderboard ranks as this method, its "main row": the full model as its
    # authors ran it (every other configuration of the method, ablation, variant, second stage or
    # recipe change, is listed in the method's own table and compared with that row; see
    # :meth:`main_config`). MAIN_VARIANT: its variant labels (:meth:`variant`; "" the unlabelled
    # default) in order of preference, the first one a table holds being the main row: more than
    # one only where a dataset cannot feed a part of the model (RICE's text tower on MovingFashion,
    # which has no ASR or titles). MAIN_RERANK: the ranking it is scored by, "none" (the first-stage
    # cosine), "all" or "top<K>" (its second stage over every pair / the first stage's top K).
    MAIN_VARIANT: ClassVar[tuple[str, ...]] = ("",)
    MAIN_RERANK: ClassVar[str] = "none"

    def __init__(self, cfg: Any, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info
        self.epoch: Optional[int] = None  # set by set_epoch(); None until the engine calls it

    # --- configuration -------------------------------------------------------------
    @classmethod
    def default_config(cls, profile: str) -> Any:
        """A fresh copy of the config of ``profile`` (``paper`` or ``tiny``), or of the profile whose
        models it reuses (a protocol revision such as ``tiny-v2``:
        :func:`benchmark.core.config.method_profile`)."""
        if profile not in cls.PROFILES:
            profile = method_profile(profile)
        try:
            return dataclasses.replace(cls.PROFILES[profile])
        except KeyError:
            raise KeyError(f"method {cls.__name__} has no profile {profile!r}; it has {sorted(cls.PROFILES)}") from None

    @classmethod
    def main_config(cls) -> dict[str, Any]:
        """The declared main configuration: ``{"variants": (...), "rerank": "none" | "all" | "top<K>"}``."""
        return {"variants": tuple(cls.MAIN_VARIANT), "rerank": cls.MAIN_RERANK}

    def set_epoch(self, epoch: int) -> None:
        """Called by the training engine before the first step of every epoch (0-based, resumed
        runs included). Methods whose losses follow an epoch schedule read ``self.epoch``
        (e.g. SEAM's aggregation loss, off in epoch 0); the default only records it."""
        self.epoch = int(epoch)

    def variant(self) -> str:
        """A short label for the configuration (e.g. an ablation ``icl+pmd``); '' if none."""
        return ""

    # --- the contract ---------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        """Embed a batch of clips (the query side); checked by ``benchmark.evaluation.method_contract``."""
        raise NotImplementedError

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        """Embed a batch of shop images (the gallery side), in the query side's space."""
        raise NotImplementedError

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named, already weighted scalar losses; the engine minimises their sum."""
        raise NotImplementedError

    def batch_preparer(self) -> Optional[Callable[[dict[str, Any]], dict[str, Any]]]:
        """Work on a collated batch that belongs in the DataLoader's worker processes, not in
        the forward on the critical path (e.g. tokenizing its text: :mod:`methods.text_tokens`).

        The training engine and the evaluator apply the returned function to every collated
        batch (training and evaluation, both sides) in the workers, before pinning; it returns
        the batch with fields added, on the CPU, and must pickle without the model (hold
        settings, not modules). The forward must give the same values with or without those
        fields (batches built by hand skip it). Default: None, nothing to prepare."""
        return None

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called by the training engine before each epoch (``epoch`` counts from 0).

        For methods whose training changes along the schedule (e.g. AsymNet's phases:
        leaves, then fusion nodes, then both); the default does nothing.
        """

    def rerank(self, query: Encoded, gallery: Encoded) -> Tensor:
        """Scores of P aligned (query[i], gallery[i]) pairs, shape [P]; higher is better."""
        raise NotImplementedError(f"{type(self).__name__} has no second stage")

    @property
    def needs_rerank_validation(self) -> bool:
        """True when :meth:`rerank` fuses its score with the first stage's at a weight not yet
        chosen. The harness then holds out training groups before training, scans fusion weights
        on them after training (``benchmark.evaluation.rerank_fusion``) and calls
        :meth:`set_rerank_fuse_weight` with the best. Default: no such weight."""
        return False

    def second_stage_scores(self, query: Encoded, gallery: Encoded) -> Tensor:
        """The second stage's own score of P aligned pairs [P], on the scale that a fused
        :meth:`rerank` adds to the first stage's cosine (the fusion-weight scan reads it)."""
        raise NotImplementedError(f"{type(self).__name__} has no fused second stage")

    def set_rerank_fuse_weight(self, weight: float) -> None:
        """Record the fusion weight chosen on held-out pairs (in ``self.cfg``, so the submission
        records it); called only when :attr:`needs_rerank_validation` was true."""
        raise NotImplementedError(f"{type(self).__name__} has no fused second stage")

    # --- optional analysis hooks (``visualize``) ----------------------------------------
    def cross_attention_maps(self, query_batch: dict[str, Any], gallery_batch: dict[str, Any]) -> Optional[Tensor]:
        """Per-frame maps [B, T, h, w] of where the shop image attends in the clip, for
        ``run_benchmark.py visualize``; the default, None, means the method has none (visualize
        refuses such a method before loading anything)."""
        return None

    def intent_boxes(self, batch: dict[str, Any]) -> Optional[tuple[Tensor, Tensor]]:
        """(boxes [B, T, 4] xyxy in [0, 1], found [B, T] bool) the method predicts for the
        product being presented, drawn by ``visualize``; None when it predicts none."""
        return None

    def parameter_groups(self, lr_encoder: float, lr_new: float, weight_decay: float) -> list[dict]:
        """AdamW groups: pretrained encoder vs new modules; no decay on norms, biases, scales."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_enc = name.startswith(self.encoder_prefixes)
            no_decay = p.ndim < 2 or "logit_scale" in name or "positional_embedding" in name
            groups.setdefault((is_enc, no_decay), []).append(p)
        out = []
        for (is_enc, no_decay), params in sorted(groups.items()):
            out.append(
                {
                    "params": params,
                    "lr": lr_encoder if is_enc else lr_new,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "name": f"{'encoder' if is_enc else 'new'}{'-nodecay' if no_decay else ''}",
                }
            )
        return out

    def num_parameters(self) -> int:
        """Every parameter, trainable or not (the submission's parameter count)."""
        return sum(p.numel() for p in self.parameters())


def overrides_hook(cls: type[Method], name: str) -> bool:
    """Whether method class ``cls`` replaces the base class's default for hook ``name``."""
    return getattr(cls, name) is not getattr(Method, name)


def check_image_size(method: str, built_for: int, info: DataInfo) -> None:
    """Refuse an encoder built for another input size than the data profile crops."""
    if built_for != info.image_size:
        raise ValueError(
            f"{method}: the encoder is built for {built_for} px but the data profile crops "
            f"{info.image_size} px; use the matching --profile"
        )


def build_method(
    cls: type[Method], profile: str, info: DataInfo, overrides: Optional[Mapping[str, Any]] = None
) -> Method:
    """Instantiate ``cls`` with its profile config, applying ``key=value`` overrides."""
    cfg = cls.default_config(profile)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cls(cfg, info)


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """Return a copy of dataclass ``cfg`` with dotted ``overrides`` applied, type-checked."""
    for key, value in overrides.items():
        cfg = _set_path(cfg, key.split("."), value, key)
    return cfg


def _set_path(obj: Any, parts: list[str], value: Any, full: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise KeyError(f"override {full!r}: {type(obj).__name__} has no fields")
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        close = difflib.get_close_matches(head, list(names), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"fields are {sorted(names)}"
        raise KeyError(f"override {full!r}: unknown field {head!r}; {hint}")
    current = getattr(obj, head)
    if len(parts) > 1:
        new = _set_path(current, parts[1:], value, full)
    else:
        hint = _field_hint(type(obj), head)
        if isinstance(value, str) and _optional(hint) and value.strip().lower() in ("none", "null"):
            return dataclasses.replace(obj, **{head: None})  # "none" is None for an Optional field
        if current is None and isinstance(value, str):  # left at None: convert to the declared type
            current = _prototype(hint)
        new = _coerce(value, current, full)
        _check_choice(hint, new, full)
    return dataclasses.replace(obj, **{head: new})


def _check_choice(hint: Any, value: Any, full: str) -> None:
    """A field typed ``Literal[...]`` (or ``Optional[Literal[...]]``) takes only its choices."""
    lits = [a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal]
    if not lits or value is None:
        return
    choices = typing.get_args(lits[0])
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
        hint_text = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"override {full}={value!r}: expected one of {', '.join(map(str, choices))}{hint_text}")


def _field_hint(cls: type, name: str) -> Any:
    try:
        return typing.get_type_hints(cls).get(name)
    except Exception:  # an annotation that does not resolve (a plugin's): no declared type
        return None


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _prototype(hint: Any) -> Any:
    """A value of ``Optional[X]``'s X for :func:`_coerce` to convert text to (None: keep the text)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = typing.get_origin(args[0]) or args[0]
    if base is tuple:
        inner = [a for a in typing.get_args(args[0]) if a is not Ellipsis]
        return (inner[0](),) if inner and inner[0] in (int, float, bool) else ()
    return base() if base in (int, float, bool) else None


def _coerce(value: Any, current: Any, full: str) -> Any:
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            return tuple(type(current[0])(v) if current else v for v in value.split(","))
    except ValueError:
        raise ValueError(f"override {full}={value!r}: expected {type(current).__name__}") from None
    return value
