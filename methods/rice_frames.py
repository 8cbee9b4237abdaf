"""RICE's frame side: encoding the real frames only, and the IPD detector's training pass.

With an encoder whose frames are independent of each other (no BatchNorm statistics across a
batch: the paper profile's patchify ViT, ``Rice._per_sample``), padding frames are never
encoded (the real ones are packed, encoded and scattered back, padding getting zeros that
every consumer masks out), and the detector's training pass runs only on what its loss counts:
the boxed frames (single-frame detector) or the clips with a boxed frame (multi-frame). Both
give the values of the padded, all-frames computation up to float rounding
(``tests/test_rice_packing.py``). The positions come from the batch (``frame_index``,
``boxed_index``, ``boxed_clips``: :mod:`benchmark.core.frame_index`, built in the DataLoader's
workers), so no step asks the device for them. The tiny profile's ConvStem has BatchNorm: its
training statistics would change without the padded frames, so it keeps the padded passes.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from methods.ipd import detection_loss


def encode_frames(model: Any, batch: dict[str, Any], keep: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-frame embeddings [B, T, E] and tokens [B, T, L, W] (packed when per-sample)."""
    frames = batch["frames"]
    if not model._per_sample:
        return model.encoder.encode_frames(frames, keep)
    b, t = frames.shape[:2]
    enc = model.encoder
    idx = flat_index(batch, "frame_index", batch["frame_mask"])
    flat_keep = keep.flatten(0, 1)[idx] if keep is not None else None
    emb, tokens = enc.encode_images(frames.flatten(0, 1)[idx], flat_keep) if idx.numel() else (None, None)
    dtype = emb.dtype if emb is not None else frames.dtype
    out_emb = frames.new_zeros(b * t, enc.embed_dim, dtype=dtype)
    out_tok = frames.new_zeros(b * t, enc.num_tokens, enc.width, dtype=dtype)
    if emb is not None:
        out_emb, out_tok = out_emb.index_copy(0, idx, emb), out_tok.index_copy(0, idx, tokens)
    return out_emb.view(b, t, -1), out_tok.view(b, t, *out_tok.shape[1:])


def detector_losses(model: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
    """DETR losses on a window of ``det_train_frames`` consecutive frames per clip (0: all;
    then, per-sample, on the boxed frames or clips alone)."""
    frame_mask = batch["frame_mask"].bool()
    b, t = frame_mask.shape
    w = model.cfg.det_train_frames
    if (w <= 0 or w >= t) and model._per_sample:
        return boxed_detector_losses(model, batch)
    if w <= 0 or w >= t:
        idx = torch.arange(t, device=frame_mask.device).expand(b, t)
    else:
        n_real = frame_mask.sum(1)
        span = (n_real - w).clamp_min(0) + 1
        start = (torch.rand(b, device=frame_mask.device) * span).long()
        idx = start[:, None] + torch.arange(w, device=frame_mask.device)
    rows = torch.arange(b, device=frame_mask.device)[:, None]
    window = {k: batch[k][rows, idx] for k in ("frames", "frame_mask", "boxes", "box_mask")}
    logits, boxes = detect(model, window, first_frame=idx[:, 0])
    gt_has = window["box_mask"].bool() & window["frame_mask"].bool()
    return _weighted(model, logits, boxes, window["boxes"], gt_has)


def boxed_detector_losses(model: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
    """The detector on the boxed frames (or clips) alone. Without any, it runs on one frame
    weighted zero, so every detector parameter is in every step's graph (DDP, no search)."""
    gt_has = batch["box_mask"].bool() & batch["frame_mask"].bool()
    multi = model.detector is not None and model.detector.multi_frame
    key = "boxed_clips" if multi else "boxed_index"
    idx = flat_index(batch, key, gt_has.any(1) if multi else gt_has)
    weight = torch.ones(idx.shape, dtype=torch.bool, device=gt_has.device)
    if idx.numel() == 0:  # nothing to learn from: one frame (clip), weighted out
        idx, weight = idx.new_zeros(1), weight.new_zeros(1)
    if multi:
        sub = {k: batch[k][idx] for k in ("frames", "frame_mask", "boxes")}
        has = gt_has[idx] & weight[:, None]
    else:  # each boxed frame as a one-frame clip
        sub = {k: batch[k].flatten(0, 1)[idx][:, None] for k in ("frames", "boxes")}
        sub["frame_mask"] = weight[:, None]
        has = weight[:, None]
    logits, boxes = detect(model, sub)
    return _weighted(model, logits, boxes, sub["boxes"], has)


def detect(model: Any, batch: dict[str, Any], first_frame: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The detector on an unmasked encoder pass over ``batch``'s frames [B, T, ...]."""
    assert model.detector is not None
    frames = batch["frames"]
    b, t = frames.shape[:2]
    tokens = model.encoder.image_tokens(frames.flatten(0, 1))
    return model.detector(tokens.view(b, t, *tokens.shape[1:]), batch["frame_mask"].bool(), first_frame)


def _weighted(model: Any, logits: Tensor, boxes: Tensor, gt: Tensor, gt_has: Tensor) -> dict[str, Tensor]:
    det = detection_loss(logits, boxes, gt, gt_has, eos_coef=model.cfg.det_eos_coef)
    return {f"det_{k}": model.cfg.w_det * v for k, v in det.items()}


def flat_index(batch: dict[str, Any], key: str, mask: Tensor) -> Tensor:
    """The batch's precomputed index ``key``, else the positions of ``mask`` (a host sync on a GPU)."""
    idx = batch.get(key)
    return idx if idx is not None else torch.nonzero(mask.flatten()).squeeze(1)
