"""RICE's PMD and PFR training losses: which pairs PMD learns to rank, anchored on what.

``pmd_anchor`` (a :class:`methods.rice.RiceConfig` field) says what one softmax ranks:

``image`` (the official code's ``_forward_vim``, the default): per shop image, its own clip
    and the ``num_negatives`` hardest clips of the (gathered) batch under the ICL similarity;
    4-way cross-entropy, loss ``pmd``.
``clip``: per clip, its own shop image and the hardest images; loss ``pmd_clip``. This is how
    :meth:`methods.rice.Rice.rerank` uses PMD (one clip against the images of its livestream),
    and what the official code's unused ``_forward_vim_v2i`` computes. Image-anchored training
    never compares two images for one clip, so nothing makes PMD's scores comparable across
    images.
``both``: the two losses, each at ``w_pmd``.

Negatives exclude videos / images of the same product (``exclude_same_product``). Where a
batch carries ``live`` (a livestream index per pair), negatives from the clip's own livestream
come first (hardest first within it), as a livestream's gallery is what a clip is ranked in.
The data pipeline provides ``live`` only with ``--group-batches livestream``
(``benchmark.training.grouped_sampler``), which also fills each batch with chunks of one livestream;
otherwise, as in the official code, negatives are the hardest of the shuffled batch.

PFR reads the cross-attention of the positive pairs of whichever softmax is computed (the
image-anchored one for ``both``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.losses import hardest_negatives, local_offset
from methods.pmd import pfr_loss

PMD_ANCHORS = ("image", "clip", "both")
SAME_LIVE_BONUS = 4.0  # added to a same-livestream candidate's similarity (cosines lie in [-1, 1])


def pmd_sides(model: Any, video: Any, image: Any) -> tuple[Any, Any]:
    """The sides PMD and PFR see: their tokens detached under the ``pmd_stop_grad`` switch."""
    if model.cfg.pmd_anchor not in PMD_ANCHORS:
        raise ValueError(f"rice: pmd_anchor must be one of {PMD_ANCHORS}, got {model.cfg.pmd_anchor!r}")
    if model.cfg.pmd_stop_grad:  # analysis switch: nothing from PMD/PFR reaches the encoder
        video = dataclasses.replace(video, tokens=video.tokens.detach())
        image = dataclasses.replace(image, tokens=image.tokens.detach())
    return video, image


def pmd_local(
    model: Any, video: Any, image: Any, product: Optional[Tensor], live: Optional[Tensor]
) -> dict[str, Tensor]:
    """This rank's tensors that PMD needs from every rank, by name (the caller gathers them in
    one collective with ICL's embeddings, ``video`` / ``image``, and passes the result to
    :func:`pmd_losses`). The image-anchored softmax needs every rank's clips as keys and
    values: each rank projects its own clips here and gathers the projections, rather than
    gathering the tokens and projecting every rank's clips again."""
    cfg = model.cfg
    local: dict[str, Tensor] = {}
    if cfg.exclude_same_product and product is not None:
        local["product"] = product
    if live is not None:
        local["live"] = live
    if cfg.pmd_anchor in ("image", "both"):
        local["video_k"], local["video_v"] = model.pmd.cross_layer.project_kv(video.tokens)
        local["video_keep"] = video.keep
    if cfg.pmd_anchor in ("clip", "both"):
        local["image_tokens"], local["image_keep"] = image.tokens, image.keep
    return local


def pmd_losses(
    model: Any, video: Any, image: Any, product: Optional[Tensor], live: Optional[Tensor], everyone: dict[str, Tensor]
) -> dict[str, Tensor]:
    """PMD's (and PFR's) losses for one batch of ``video`` / ``image`` sides (``methods.rice._Side``,
    from :func:`pmd_sides`); ``everyone``: :func:`pmd_local`'s tensors and the ICL embeddings
    ``video`` / ``image`` from every rank (rank order, dim 0)."""
    cfg = model.cfg
    b = image.embedding.shape[0]
    positive = torch.arange(b, device=image.embedding.device) + local_offset(b)
    exclude = None
    if cfg.exclude_same_product and product is not None:
        exclude = product[:, None] == everyone["product"][None, :]
    same_live = live[:, None] == everyone["live"][None, :] if live is not None else None
    losses: dict[str, Tensor] = {}
    attn = None
    if cfg.pmd_anchor in ("clip", "both"):
        others = (everyone["image"].detach(), everyone["image_tokens"], everyone["image_keep"], None)
        loss, attn_clip = _anchored(model, video, others, True, positive, exclude, same_live)
        losses["pmd_clip"] = cfg.w_pmd * loss
        attn = attn_clip
    if cfg.pmd_anchor in ("image", "both"):
        kv = (everyone["video_k"], everyone["video_v"])
        others = (everyone["video"].detach(), None, everyone["video_keep"], kv)
        loss, attn = _anchored(model, image, others, False, positive, exclude, same_live)
        losses["pmd"] = cfg.w_pmd * loss
    if model.pfr is not None:
        losses["pfr"] = cfg.w_pfr * _pfr(model, video, image, attn)
    return losses


def _anchored(
    model: Any,
    anchor: Any,
    others: tuple[Tensor, Optional[Tensor], Tensor, Optional[tuple[Tensor, Tensor]]],
    anchor_is_clip: bool,
    positive: Tensor,
    exclude: Optional[Tensor],
    same_live: Optional[Tensor],
) -> tuple[Tensor, Optional[Tensor]]:
    """Cross-entropy of each local anchor's own partner against its hardest gathered others.

    ``others``: every rank's embeddings (detached), tokens (clip anchor), keep-masks and
    projected keys/values (image anchor). Returns the loss and, when PFR needs it, the
    cross-attention of the positive pairs [B, ...]."""
    cfg = model.cfg
    b = anchor.embedding.shape[0]
    all_emb, all_tokens, all_keep, all_kv = others
    sim = anchor.embedding.detach().float() @ all_emb.float().t()
    if same_live is not None:
        sim = sim + SAME_LIVE_BONUS * same_live.to(sim.dtype)
    neg, neg_valid = hardest_negatives(sim, positive, cfg.num_negatives, exclude)
    cand = torch.cat([positive[:, None], neg], dim=1)  # [B, 1 + k], column 0 = positive
    valid = torch.cat([torch.ones_like(neg_valid[:, :1]), neg_valid], dim=1)
    k1 = cand.shape[1]
    anchor_of_pair = torch.arange(b, device=cand.device).repeat_interleave(k1)
    need = model.pfr is not None
    if anchor_is_clip:  # queries: the candidate images; keys: the anchor clip
        scores, attn = model.pmd(
            all_tokens,
            all_keep,
            anchor.tokens,
            anchor.keep,
            need_weights=need,
            key_index=anchor_of_pair,
            query_index=cand.flatten(),
        )
    else:  # queries: the anchor image; keys: the candidate clips, projected by their own ranks
        scores, attn = model.pmd(
            anchor.tokens,
            anchor.keep,
            None,
            all_keep,
            need_weights=need,
            key_index=cand.flatten(),
            query_index=anchor_of_pair,
            kv_projected=all_kv,
        )
    logits = scores.view(b, k1).masked_fill(~valid, float("-inf"))
    target = torch.zeros(b, dtype=torch.long, device=logits.device)
    positive_attn = attn[torch.arange(b, device=cand.device) * k1] if attn is not None else None
    return F.cross_entropy(logits, target), positive_attn


def _pfr(model: Any, video: Any, image: Any, attn: Tensor) -> Tensor:
    """PFR on the positive pairs' cross-attention [B, heads, Lq, S] (each image with its own clip)."""
    cfg = model.cfg
    n_img = 1 + model.encoder.grid**2
    n_vid = video.tokens.shape[1] - (1 if cfg.text else 0)
    maps = attn[:, :, :n_img, :n_vid]
    weights = model.pfr(maps, video.keep[:, :n_vid], model.pmd.cross_layer.head_dim)
    return pfr_loss(weights, video.tokens[:, :n_vid], image.tokens[:, :n_img], cfg.pfr_target)
