"""``rice``: cross-view semantic alignment (RICE) with its ablations as config switches.

Paper: Wenjie Yang, Yiyi Chen, Yan Li, Yanhua Cheng, Xudong Liu, Quan Chen, Han Li,
"Cross-view Semantic Alignment for Livestreaming Product Recognition", ICCV 2023
(arXiv 2308.04912). Official code: https://github.com/deepalchemist/crossview-semantic-alignment
(MMF project; ``mmf/models/rice``, config ``projects/videotoshop/configs/e2e_pretraining_vic_vim_rec.yaml``).

Components (``--set`` switches; the variant label reads like the paper's ablation table):

========  ===========================================================  ===================
switch    what                                                         label
========  ===========================================================  ===================
(always)  ICL: symmetric InfoNCE, video vs image embeddings            ``icl``
pmd       pairwise matching decoder, 4-way CE over hardest negatives   ``+pmd``
pfr       patch feature reconstruction from PMD's cross-attention      ``+pfr``
ipd       intent-product patch masks: none | single | multi | oracle   ``+ipd`` / ``+ipd-mf`` / ``+ipd-oracle``
text      ASR (clip) and title (image) from the CLIP text tower        ``+text``
========  ===========================================================  ===================

``--method rice`` is the full model: ``icl+pmd+pfr+ipd+text`` (single-frame detector). Pick an
ablation with e.g. ``--set text=false --set ipd=none`` (-> ``icl+pmd+pfr``), ``--set pfr=false``
(needs ``pmd``), ``--set pmd=false --set pfr=false --set ipd=none --set text=false`` (-> ``icl``,
the same model as ``clip-meanpool`` apart from the logit-scale initialisation),
``--set ipd=multi`` for the multi-frame detector, ``--set ipd=oracle`` for ground-truth boxes.
Not in the paper, for analysis: ``--set pmd_stop_grad=true`` (label ``pmd-sg``) keeps PMD's and
PFR's gradients out of the shared encoder.

Kept from the paper and the official code
  * one shared CLIP ViT (paper: ViT-B/32, OpenAI weights) for frames and shop images; global
    embedding = CLS -> ln_post -> proj; tokens = last layer before ln_post (1 + 7x7 per frame);
    video embedding = masked mean of the (unnormalised) frame embeddings over real frames,
    L2-normalised, as ``TaskBaseModel.get_feature`` does;
  * ICL: symmetric InfoNCE, negatives gathered from every process; the learnable scale starts at
    16 (the official ``logit_scale`` = 4.0 multiplies both embeddings) and, as there, is trained
    at the encoder (base) learning rate; the encoder's own CLIP scale is frozen (unused);
  * PMD (``methods/pmd.py``): the image's tokens query all tokens of all frames through one
    self- and one cross-attention layer initialised from the encoder's last two blocks, 8 heads
    in the paper profile (the official ``CrossConfig`` default; the tiny profile uses the
    encoder's heads), pooler LN -> token 0 -> Linear -> ReLU, matching logit = 10 x cosine with a
    bias-free ``Linear(width, 1)``; per image its positive video + the 3 hardest in-batch
    videos under the ICL similarity (videos and tokens gathered from every process), 4-way
    softmax CE. At test time :meth:`Rice.rerank` scores (query, gallery) pairs with the same head;
  * PFR: cross-attention maps of the positive pairs -> 1x1 convs (heads -> heads/2 -> 1, ReLU)
    -> softmax over keys -> weights x detached video tokens vs detached image tokens, MSE;
  * loss weights 1 / 1 / 1 (the official model sums ``vic_loss + vim_loss + rec_loss``);
    PMD, PFR and detector parameters take the new-module learning rate (the official
    ``lr_multiplier`` of 100 over the base 1e-6 applies to the cross model and heads).

Differences, and why
  * The official test script scores pairs with the raw ``Linear`` output while training uses the
    scaled cosine; :meth:`Rice.rerank` uses the training-time form so train and test agree.
  * PFR's softmax excludes masked keys (padding frames, IPD-dropped patches); the official one
    spreads weight over padding tokens that it zeroes afterwards.
  * PFR target (tiny profile only, variant label ``pfr-ln``): the official MSE compares the raw
    residual-stream tokens, whose scale pretrained CLIP fixes and an encoder at lr 1e-6 keeps.
    From random weights at the tiny profile's single learning rate the tokens grow, PFR's loss
    and gradient grow with their square, and the global gradient clip then hands PFR the
    step: lpr4m-synth v7, ``--set ipd=none --set text=false --set pfr_target=raw``, PFR's loss
    rose 1.62 -> 6.14 over the 4 epochs (epoch means), the trained encoder's image-token RMS
    was 4.75 (1.22 at init), gradient norms on one batch PFR 43.8 vs ICL 2.9, ICL stayed at
    3.25 -> 3.20 (ICL alone: 3.17 -> 2.06) and R1 was 9.71 (ICL alone 36.81).
    ``pfr_target="layernorm"`` layer-normalises (no affine) both token sets before the
    reconstruction and the MSE, which removes the scale and nothing else; ``paper`` keeps "raw".
  * Hardest negatives exclude videos of the same product (``exclude_same_product``); the
    official code only excludes the pair itself, which turns a duplicate product into a
    "negative".
  * IPD and text are described in the paper but absent from the official code. IPD: each
    frame's box becomes a 7x7 patch keep-mask (IoU(cell, box) >= 0.02; none kept -> all kept;
    CLS always kept) used as a key-padding mask in every encoder layer (frames only) and for
    PMD's keys. The detectors (``methods/ipd.py``) are built here: a DETR-style single-frame set
    predictor on the shared encoder's tokens (4 queries, 2 decoder layers, Hungarian matching,
    CE + L1 + GIoU) and a multi-frame one that adds a temporal transformer over the frames.
    In training the mask comes from the ground-truth boxes (teacher forcing; a frame without
    one keeps every patch) and the detector learns on its own unmasked encoder pass over a
    random window of ``det_train_frames`` consecutive frames per clip (tiny: 3 of 8, so that
    IPD adds well under a second full pass; paper: all frames); its loss reaches the shared
    encoder (multi-task). At test time the detector runs on an unmasked pass over every frame
    and its confident boxes (object probability >= 0.5) build the mask.
  * Text (our reading of "ASR and title as one extra token each"): the CLIP text tower of the
    same model embeds the clip's ASR and the image's title; a new ``Linear(embed_dim, width)``
    turns each into one token appended to PMD's keys (ASR) and queries (title); the global
    embeddings become ``normalize([normalize(visual), text_weight * normalize(text)])``, so the
    retrieval cosine is the mean of the visual and the ASR-title cosines; empty text counts as
    absent (zero half, masked token).

Scaled down (tiny profile, for the 2-core CPU): the ``TINY_ENCODER`` ViT (112 px, patch 16 ->
the same 7x7 grid, width 192, 4 layers, random init, a convolutional stem in place of the
patchify conv: see ``methods.encoders``), a 64-wide detector, PFR on layer-normalised tokens
(``pfr_target``, above); everything else as above. What that scale-down costs (lpr4m-synth v7,
4 epochs, seed 0, first-stage R1; see the leaderboard): icl 36.81, icl+pmd 29.35,
icl+pmd+pfr-ln 26.07 (raw-token PFR: 9.71), icl+pmd+pfr-ln+ipd 33.54, full (+text) 56.65, the
full weights with ground-truth boxes for IPD (``--set ipd=oracle``) 64.31, the icl+pmd+pfr-ln+ipd
weights with them 52.04: the masks work, the 64-wide detector trained for minutes is what
keeps that rung below ICL alone. PMD hardly learns from random weights (its loss 1.37 -> 1.13
over 4 epochs of the full model, ln 4 = 1.39), so re-ranking the full model's top 10 with it
(``--rerank topk --rerank-topk 10``) drops R1 to 21.37, and it costs ICL points through the
shared encoder (icl+pmd below icl). With the
patchify stem, stopping PMD's and PFR's gradients at the encoder (``pmd_stop_grad``) brought
ICL back (5.41 -> 9.59, icl 9.90): from random weights they compete with ICL for the encoder;
in the paper the encoder is pretrained CLIP and PMD refines it. The ASR/title tokens are worth
+23 points here, as the synthetic ASR and titles name colour and pattern. The
paper profile requires pretrained weights (``encoder.pretrained``: hub tag
``openai`` or a local file via ``--pretrained PATH``) and fails rather than start at random.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.registry import METHODS
from methods.base import DataInfo, Encoded, Method
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, masked_mean
from methods.ipd import SetDetector, boxes_to_patch_keep, detection_loss, predict_boxes
from methods.losses import gather_with_grad, info_nce, local_offset
from methods.pmd import (
    PFR_TARGETS, PairwiseMatchingDecoder, PatchFeatureReconstruction, consecutive_runs, hardest_negatives, pfr_loss,
)

IPD_MODES = ("none", "single", "multi", "oracle")
_IPD_LABEL = {"single": "ipd", "multi": "ipd-mf", "oracle": "ipd-oracle"}


@dataclass(frozen=True)
class RiceConfig:
    encoder: EncoderConfig = PAPER_ENCODER
    require_pretrained: bool = True  # paper: refuse a randomly initialised encoder
    # ablation switches
    pmd: bool = True
    pfr: bool = True
    ipd: str = "single"  # none | single | multi | oracle
    text: bool = True
    # ICL
    logit_scale_init: float = 16.0  # official: 4.0 on both embeddings
    max_logit_scale: float = 100.0
    # PMD / PFR
    pmd_heads: int = 8  # 0 = as many as the encoder
    pmd_attn_dropout: float = 0.1
    match_scale: float = 10.0
    num_negatives: int = 3
    exclude_same_product: bool = True
    rerank_chunk: int = 64  # pairs per PMD forward in rerank()
    # analysis, not the paper: PMD and PFR read detached encoder tokens, so their gradients never
    # reach the shared encoder (tests whether they hurt ICL through it); variant "pmd-sg"
    pmd_stop_grad: bool = False
    # PFR's MSE on the raw tokens (official) or on layer-normalised ones (tiny: from random
    # weights the raw tokens grow, and PFR's gradient with them; see the module docstring)
    pfr_target: str = "raw"
    # text
    text_weight: float = 1.0
    # IPD
    iou_threshold: float = 0.02
    det_dim: int = 256
    det_queries: int = 4
    det_layers: int = 2
    det_heads: int = 8
    det_temporal_layers: int = 1  # used by ipd=multi
    det_score_threshold: float = 0.5
    det_eos_coef: float = 0.1
    det_train_frames: int = 0  # frames per clip the detector trains on (a random window); 0 = all
    # loss weights
    w_icl: float = 1.0
    w_pmd: float = 1.0
    w_pfr: float = 1.0
    w_det: float = 1.0


@dataclass
class _Side:
    """One side's encodings: fused global embedding and PMD tokens with their keep-mask."""

    embedding: Tensor
    tokens: Tensor
    keep: Tensor
    extra_losses: dict[str, Tensor]


@METHODS.register("rice", description="RICE (ICCV 2023): ICL + pairwise matching decoder + PFR + intent-product masks + text")
class Rice(Method):
    """RICE: shared CLIP ViT, ICL, PMD re-ranking, PFR, IPD masks, ASR/title tokens."""

    Config = RiceConfig
    PROFILES = {
        "paper": RiceConfig(encoder=PAPER_ENCODER),
        "tiny": RiceConfig(
            encoder=TINY_ENCODER, require_pretrained=False, pmd_heads=0, det_dim=64, det_heads=4,
            det_train_frames=3, pfr_target="layernorm",
        ),
    }
    encoder_prefixes = ("encoder.", "logit_scale")
    supports_rerank = True

    def __init__(self, cfg: RiceConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self._check(cfg, info)
        self.encoder = ClipEncoder(cfg.encoder, with_text=cfg.text)
        self.encoder.logit_scale.requires_grad_(False)  # RICE's own scale below is the one used
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        width, grid = self.encoder.width, self.encoder.grid
        self.pmd: Optional[PairwiseMatchingDecoder] = None
        self.pfr: Optional[PatchFeatureReconstruction] = None
        self.detector: Optional[SetDetector] = None
        self.text_token: Optional[nn.Linear] = None
        self.supports_rerank = cfg.pmd  # per instance; the class says a RICE may re-rank
        if cfg.pmd:
            blocks = self.encoder.visual.transformer.resblocks
            if len(blocks) < 2:
                raise ValueError("rice: PMD is initialised from the encoder's last two blocks; it has fewer")
            heads = cfg.pmd_heads or self.encoder.heads
            self.pmd = PairwiseMatchingDecoder(blocks[-2], blocks[-1], heads, cfg.pmd_attn_dropout, cfg.match_scale)
            if cfg.pfr:
                self.pfr = PatchFeatureReconstruction(heads)
            if cfg.text:
                self.text_token = nn.Linear(self.encoder.embed_dim, width)
        if cfg.ipd in ("single", "multi"):
            self.detector = SetDetector(
                width, 1 + grid * grid, info.num_frames, cfg.det_dim, cfg.det_queries, cfg.det_layers,
                cfg.det_heads, cfg.det_temporal_layers if cfg.ipd == "multi" else 0,
            )

    @staticmethod
    def _check(cfg: RiceConfig, info: DataInfo) -> None:
        if cfg.ipd not in IPD_MODES:
            raise ValueError(f"rice: ipd must be one of {IPD_MODES}, got {cfg.ipd!r}")
        if cfg.pfr and not cfg.pmd:
            raise ValueError("rice: pfr=true needs pmd=true (PFR reads PMD's cross-attention); add --set pfr=false")
        if cfg.pfr_target not in PFR_TARGETS:
            raise ValueError(f"rice: pfr_target must be one of {PFR_TARGETS}, got {cfg.pfr_target!r}")
        if cfg.encoder.image_size != info.image_size:
            raise ValueError(
                f"rice: the encoder is built for {cfg.encoder.image_size} px but the data profile crops "
                f"{info.image_size} px; use the matching --profile"
            )
        if cfg.require_pretrained and not cfg.encoder.pretrained:
            raise ValueError(
                "rice (paper profile): the encoder needs pretrained CLIP weights; set encoder.pretrained "
                "to a hub tag (openai) or pass --pretrained PATH (a local open_clip checkpoint)"
            )

    def variant(self) -> str:
        parts = ["icl"]
        if self.cfg.pmd:
            parts.append("pmd-sg" if self.cfg.pmd_stop_grad else "pmd")
        if self.cfg.pfr:
            parts.append("pfr-ln" if self.cfg.pfr_target == "layernorm" else "pfr")
        if self.cfg.ipd != "none":
            parts.append(_IPD_LABEL[self.cfg.ipd])
        if self.cfg.text:
            parts.append("text")
        return "+".join(parts)

    # --- the contract ---------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        side = self._video_side(batch, train=False)
        return self._encoded(side)

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return self._encoded(self._image_side(batch))

    def rerank(self, query: Encoded, gallery: Encoded) -> Tensor:
        """PMD matching scores of aligned (clip, image) pairs, in chunks of ``rerank_chunk``.

        Without PMD there is no second stage: the first-stage cosine is returned unchanged.
        """
        if self.pmd is None:
            return (F.normalize(query.embedding.float(), dim=-1) * F.normalize(gallery.embedding.float(), dim=-1)).sum(-1)
        out = []
        n = query.embedding.shape[0]
        for s in range(0, n, self.cfg.rerank_chunk):
            e = s + self.cfg.rerank_chunk
            q_tok, q_keep = query.extras["pmd_tokens"][s:e], query.extras["pmd_keep"][s:e].bool()
            first, run = consecutive_runs(q_tok, q_keep)  # a query's pairs arrive together
            scores, _ = self.pmd(
                self._cast(gallery.extras["pmd_tokens"][s:e]), gallery.extras["pmd_keep"][s:e].bool(),
                self._cast(q_tok[first]), q_keep[first], key_index=run,
            )
            out.append(scores)
        return torch.cat(out) if out else query.embedding.new_zeros(0)

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self._video_side(batch, train=True)
        image = self._image_side(batch)
        cfg = self.cfg
        losses = {"icl": cfg.w_icl * info_nce(video.embedding, image.embedding, self.logit_scale, cfg.max_logit_scale)}
        losses.update(video.extra_losses)
        if self.pmd is not None:
            losses.update(self._pmd_losses(video, image, batch.get("product")))
        return losses

    # --- sides ------------------------------------------------------------------------
    def _video_side(self, batch: dict[str, Any], train: bool) -> _Side:
        frames, frame_mask = batch["frames"], batch["frame_mask"].bool()
        b, t = frames.shape[:2]
        keep, extra = self._frame_keep(batch, train)
        frame_emb, tokens = self.encoder.encode_frames(frames, keep)
        visual = masked_mean(frame_emb, frame_mask)
        tok_keep = frame_mask[:, :, None].expand(b, t, tokens.shape[2])
        if keep is not None:
            tok_keep = tok_keep & keep
        tokens, tok_keep = tokens.flatten(1, 2), tok_keep.flatten(1, 2)
        emb, tokens, tok_keep = self._with_text(visual, tokens, tok_keep, batch.get("asr"), b)
        return _Side(emb, tokens, tok_keep, extra)

    def _image_side(self, batch: dict[str, Any]) -> _Side:
        emb, tokens = self.encoder.encode_images(batch["image"])
        keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        emb, tokens, keep = self._with_text(emb, tokens, keep, batch.get("title"), tokens.shape[0])
        return _Side(emb, tokens, keep, {})

    def _with_text(
        self, visual: Tensor, tokens: Tensor, keep: Tensor, texts: Optional[Sequence[str]], n: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Fuse the text embedding into the global one and append its token (``text=true``)."""
        v = F.normalize(visual.float(), dim=-1)
        if not self.cfg.text:
            return v, tokens, keep
        texts = list(texts) if texts is not None else [""] * n
        has = torch.tensor([bool(s and s.strip()) for s in texts], dtype=torch.bool, device=v.device)
        text = self.encoder.encode_text(texts)
        t = F.normalize(text.float(), dim=-1) * has[:, None] * self.cfg.text_weight
        emb = F.normalize(torch.cat([v, t], dim=-1), dim=-1)
        if self.text_token is not None:
            tok = self.text_token(text.to(self.text_token.weight.dtype)).to(tokens.dtype)
            tokens = torch.cat([tokens, tok[:, None]], dim=1)
            keep = torch.cat([keep, has[:, None]], dim=1)
        return emb, tokens, keep

    def _frame_keep(self, batch: dict[str, Any], train: bool) -> tuple[Optional[Tensor], dict[str, Tensor]]:
        """IPD patch keep-mask [B, T, 1 + grid**2] (None without IPD) and the detector losses.

        Training masks with the ground-truth boxes (frames without one keep every patch) and
        trains the detector on its own unmasked pass; evaluation masks with the detector's
        confident predictions.
        """
        mode = self.cfg.ipd
        if mode == "none":
            return None, {}
        frame_mask = batch["frame_mask"].bool()
        gt_boxes, gt_has = batch["boxes"], batch["box_mask"].bool() & frame_mask
        if mode == "oracle" or train:
            keep = boxes_to_patch_keep(gt_boxes, gt_has, self.encoder.grid, self.cfg.iou_threshold)
            return keep, (self._detector_losses(batch) if train and self.detector is not None else {})
        pred, found = predict_boxes(*self._detect(batch), self.cfg.det_score_threshold)
        return boxes_to_patch_keep(pred, found & frame_mask, self.encoder.grid, self.cfg.iou_threshold), {}

    def _detector_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """DETR losses on a window of ``det_train_frames`` consecutive frames per clip (0: all)."""
        frame_mask = batch["frame_mask"].bool()
        b, t = frame_mask.shape
        w = self.cfg.det_train_frames
        if w <= 0 or w >= t:
            idx = torch.arange(t, device=frame_mask.device).expand(b, t)
        else:
            n_real = frame_mask.sum(1)
            span = (n_real - w).clamp_min(0) + 1
            start = (torch.rand(b, device=frame_mask.device) * span).long()
            idx = start[:, None] + torch.arange(w, device=frame_mask.device)
        rows = torch.arange(b, device=frame_mask.device)[:, None]
        window = {k: batch[k][rows, idx] for k in ("frames", "frame_mask", "boxes", "box_mask")}
        logits, boxes = self._detect(window, first_frame=idx[:, 0])
        gt_has = window["box_mask"].bool() & window["frame_mask"].bool()
        det = detection_loss(logits, boxes, window["boxes"], gt_has, eos_coef=self.cfg.det_eos_coef)
        return {f"det_{k}": self.cfg.w_det * v for k, v in det.items()}

    def _detect(self, batch: dict[str, Any], first_frame: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        assert self.detector is not None
        frames = batch["frames"]
        b, t = frames.shape[:2]
        tokens = self.encoder.image_tokens(frames.flatten(0, 1))
        return self.detector(tokens.view(b, t, *tokens.shape[1:]), batch["frame_mask"].bool(), first_frame)

    def _encoded(self, side: _Side) -> Encoded:
        if self.pmd is None:
            return Encoded(side.embedding)
        return Encoded(side.embedding, {"pmd_tokens": side.tokens, "pmd_keep": side.keep})

    def _cast(self, x: Tensor) -> Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return x
        return x.to(self.pmd.pool_dense.weight.dtype)

    # --- PMD + PFR training ----------------------------------------------------------
    def _pmd_losses(self, video: _Side, image: _Side, product: Optional[Tensor]) -> dict[str, Tensor]:
        assert self.pmd is not None
        cfg, b = self.cfg, image.embedding.shape[0]
        if cfg.pmd_stop_grad:  # analysis switch: nothing from PMD/PFR reaches the encoder
            video = dataclasses.replace(video, tokens=video.tokens.detach())
            image = dataclasses.replace(image, tokens=image.tokens.detach())
        all_emb = _gather_nograd(video.embedding.detach())
        all_tokens = gather_with_grad(video.tokens)
        all_keep = _gather_nograd(video.keep)
        positive = torch.arange(b, device=all_emb.device) + local_offset(b)
        exclude = None
        if cfg.exclude_same_product and product is not None:
            all_product = _gather_nograd(product)
            exclude = product[:, None] == all_product[None, :]
        sim = image.embedding.detach() @ all_emb.t()
        neg, neg_valid = hardest_negatives(sim, positive, cfg.num_negatives, exclude)
        cand = torch.cat([positive[:, None], neg], dim=1)  # [B, 1 + k], column 0 = positive
        valid = torch.cat([torch.ones_like(neg_valid[:, :1]), neg_valid], dim=1)
        k1 = cand.shape[1]
        image_of_pair = torch.arange(b, device=cand.device).repeat_interleave(k1)
        scores, attn = self.pmd(image.tokens, image.keep, all_tokens, all_keep, need_weights=self.pfr is not None,
                                key_index=cand.flatten(), query_index=image_of_pair)
        logits = scores.view(b, k1).masked_fill(~valid, float("-inf"))
        target = torch.zeros(b, dtype=torch.long, device=logits.device)
        losses = {"pmd": cfg.w_pmd * F.cross_entropy(logits, target)}
        if self.pfr is not None:
            n_img = 1 + self.encoder.grid**2
            n_vid = video.tokens.shape[1] - (1 if cfg.text else 0)
            pos = torch.arange(b, device=logits.device) * k1
            maps = attn[pos][:, :, :n_img, :n_vid]
            own = cand[:, 0]  # each image's own clip
            weights = self.pfr(maps, all_keep[own][:, :n_vid], self.pmd.cross_layer.head_dim)
            losses["pfr"] = cfg.w_pfr * pfr_loss(weights, all_tokens[own][:, :n_vid], image.tokens[:, :n_img],
                                                 cfg.pfr_target)
        return losses

    # --- analysis ---------------------------------------------------------------------
    @torch.no_grad()
    def cross_attention_maps(self, query_batch: dict[str, Any], gallery_batch: dict[str, Any]) -> Tensor:
        """PMD's cross-attention from the image's token 0 (the pooled one) over the first clip's
        frames, averaged over heads: [T, grid, grid] (zeros on padding frames and dropped patches)."""
        if self.pmd is None:
            raise RuntimeError("rice: cross-attention maps need pmd=true")
        was_training = self.training
        self.eval()
        try:
            q = self._video_side(query_batch, train=False)
            g = self._image_side(gallery_batch)
            _, attn = self.pmd(g.tokens[:1], g.keep[:1], q.tokens[:1], q.keep[:1], need_weights=True)
        finally:
            self.train(was_training)
        t = query_batch["frames"].shape[1]
        n = self.encoder.num_tokens
        maps = attn[0, :, 0, : t * n].float().mean(0).view(t, n)[:, 1:]
        return maps.reshape(t, self.encoder.grid, self.encoder.grid)

    @torch.no_grad()
    def intent_boxes(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The boxes IPD masks with at test time: [B, T, 4] xyxy in [0, 1] and found [B, T]."""
        frame_mask = batch["frame_mask"].bool()
        if self.cfg.ipd == "oracle":
            return batch["boxes"].float(), batch["box_mask"].bool() & frame_mask
        if self.detector is None:
            return torch.zeros(*frame_mask.shape, 4, device=frame_mask.device), torch.zeros_like(frame_mask)
        was_training = self.training
        self.eval()
        try:
            pred, found = predict_boxes(*self._detect(batch), self.cfg.det_score_threshold)
        finally:
            self.train(was_training)
        return pred, found & frame_mask


def _gather_nograd(x: Tensor) -> Tensor:
    """``x`` from every process concatenated along dim 0 (no gradient; any dtype)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
