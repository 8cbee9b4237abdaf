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
PFR's gradients out of the shared encoder; ``--set pmd_anchor=clip|both`` (``pmd-clip`` /
``pmd-both``) trains PMD per clip against images (``methods.rice_pmd``).

Inference. The official evaluation (``lpr_eval.py``) ranks by the ICL cosine of the global
embeddings alone, for every rung of the ablation: PMD and PFR are training losses there, and the
official pairwise script (``lpr_pairwise_eval.py``) has its PMD scoring step commented out. That
is this method's inference (``--rerank none``, the default). ``--rerank topk|all`` is this
harness's analysis of PMD as a second stage, not RICE's inference: ``rerank_score=pmd`` ranks a
clip's candidates by PMD's score alone, ``rerank_score=fused`` by cosine + ``rerank_fuse_weight`` x
PMD's cosine, the weight chosen on training livestreams held out before training
(``benchmark.evaluation.rerank_fusion``) and recorded in the submission's config.

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
    videos under the ICL similarity (videos from every process; each process projects its own
    clips' keys and values and gathers those), 4-way softmax CE (``pmd_anchor=image``, the
    official ``_forward_vim``);
  * PFR: cross-attention maps of the positive pairs -> 1x1 convs (heads -> heads/2 -> 1, ReLU)
    -> softmax over keys -> weights x detached video tokens vs detached image tokens, MSE;
  * loss weights 1 / 1 / 1 (the official model sums ``vic_loss + vim_loss + rec_loss``);
    PMD, PFR and detector parameters take the new-module learning rate (the official
    ``lr_multiplier`` of 100 over the base 1e-6 applies to the cross model and heads).

Differences, and why
  * The (disabled) official pairwise script scores pairs with the raw ``Linear`` output while
    training uses the scaled cosine; :meth:`Rice.rerank` uses the training-time form.
  * PFR's softmax excludes masked keys (padding frames, IPD-dropped patches); the official one
    spreads weight over padding tokens that it zeroes afterwards.
  * PFR target (tiny profile only, variant label ``pfr-ln``): the official MSE compares the raw
    residual-stream tokens, whose scale pretrained CLIP fixes and an encoder at lr 1e-6 keeps.
    From random weights the tokens grow, and PFR's loss and gradient with their square, until
    PFR's share of the shared encoder's gradient dominates ICL's and the first stage collapses.
    ``pfr_target="layernorm"`` layer-normalises (no affine) both token sets before the
    reconstruction and the MSE; ``paper`` keeps "raw". ``docs/rice.md`` gives the measurements
    (with and without the tiny profile's gradient clip).
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
the same 7x7 grid, width 192, 4 layers, random init, a convolutional stem: ``methods.encoders``),
a 64-wide detector, PFR on layer-normalised tokens, and the tiny profile's recipe (global
gradient clip 1.0, as for every method there; the official run does not clip: ``--grad-clip 0``);
everything else as above. ``docs/rice.md`` gives the ladder's rows, the oracle-box
probe and the second-stage analysis. The paper profile requires
pretrained weights (hub tag ``openai`` or ``--pretrained PATH``) and fails rather than start at random.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, masked_mean, refuse_random_text
from methods.gather import gather_packed
from methods.ipd import SetDetector, boxes_to_patch_keep, predict_boxes
from methods.losses import info_nce
from methods.pmd import PFR_TARGETS, PairwiseMatchingDecoder, PatchFeatureReconstruction, consecutive_runs
from methods.rice_analysis import RiceAnalysisMixin
from methods.rice_frames import detect, detector_losses, encode_frames
from methods.rice_pmd import PMD_ANCHORS, pmd_local, pmd_losses, pmd_sides
from methods.text_tokens import TextTokens, batch_tokens, has_text

IPD_MODES = ("none", "single", "multi", "oracle")
RERANK_SCORES = ("pmd", "fused")
_IPD_LABEL = {"single": "ipd", "multi": "ipd-mf", "oracle": "ipd-oracle"}


@dataclass(frozen=True)
class RiceConfig:
    encoder: EncoderConfig = PAPER_ENCODER
    require_pretrained: bool = True  # paper: refuse a randomly initialised encoder
    # ablation switches
    pmd: bool = True
    pfr: bool = True
    ipd: Literal["none", "single", "multi", "oracle"] = "single"
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
    # what one PMD softmax ranks (methods.rice_pmd): "image" (official: an image's clip vs the hardest
    # clips), "clip" (a clip's image vs the hardest images, as rerank() uses PMD) or "both"
    pmd_anchor: Literal["image", "clip", "both"] = "image"
    rerank_chunk: int = 64  # pairs per PMD forward in rerank()
    # the second stage's score (analysis, not the official inference): "pmd" = PMD's score alone;
    # "fused" = first-stage cosine + rerank_fuse_weight x PMD's cosine (its score / match_scale),
    # the weight chosen on a validation split carved from the training data when None
    rerank_score: Literal["pmd", "fused"] = "pmd"
    rerank_fuse_weight: Optional[float] = None
    # analysis, not the paper: PMD and PFR read detached encoder tokens, so their gradients never
    # reach the shared encoder (tests whether they hurt ICL through it); variant "pmd-sg"
    pmd_stop_grad: bool = False
    # PFR's MSE on the raw tokens (official) or on layer-normalised ones (tiny: from random
    # weights the raw tokens grow, and PFR's gradient with them; see the module docstring)
    pfr_target: Literal["raw", "layernorm"] = "raw"
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


@METHODS.register(
    "rice", description="RICE (ICCV 2023): ICL + pairwise matching decoder + PFR + intent-product masks + text"
)
class Rice(RiceAnalysisMixin, Method):
    """RICE: shared CLIP ViT, ICL, PMD re-ranking, PFR, IPD masks, ASR/title tokens."""

    Config = RiceConfig
    PROFILES = {
        "paper": RiceConfig(encoder=PAPER_ENCODER),
        "tiny": RiceConfig(
            encoder=TINY_ENCODER,
            require_pretrained=False,
            pmd_heads=0,
            det_dim=64,
            det_heads=4,
            det_train_frames=3,
            pfr_target="layernorm",
        ),
    }
    encoder_prefixes = ("encoder.", "logit_scale")
    supports_rerank = True
    every_parameter_used = True  # the detector too, weighted zero without a boxed frame (tests/test_rice_ddp.py)
    # the full model (paper profile: PFR on raw tokens; tiny: on layer-normalised ones), without the
    # text tower where the dataset has no ASR or titles (MovingFashion); first stage (``--rerank none``)
    MAIN_VARIANT = ("icl+pmd+pfr+ipd+text", "icl+pmd+pfr-ln+ipd+text", "icl+pmd+pfr+ipd", "icl+pmd+pfr-ln+ipd")

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
        # frames are independent through the encoder (no BatchNorm statistics across them): only
        # real frames need encoding, only boxed ones a detector pass (the tiny profile's ConvStem
        # has BatchNorm, whose training statistics would change: it keeps the padded passes)
        self._per_sample = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.encoder.modules())
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
                width,
                1 + grid * grid,
                info.num_frames,
                cfg.det_dim,
                cfg.det_queries,
                cfg.det_layers,
                cfg.det_heads,
                cfg.det_temporal_layers if cfg.ipd == "multi" else 0,
            )

    @staticmethod
    def _check(cfg: RiceConfig, info: DataInfo) -> None:
        if cfg.ipd not in IPD_MODES:
            raise ValueError(f"rice: ipd must be one of {IPD_MODES}, got {cfg.ipd!r}")
        if cfg.pfr and not cfg.pmd:
            raise ValueError("rice: pfr=true needs pmd=true (PFR reads PMD's cross-attention); add --set pfr=false")
        if cfg.pmd_anchor not in PMD_ANCHORS:
            raise ValueError(f"rice: pmd_anchor must be one of {PMD_ANCHORS}, got {cfg.pmd_anchor!r}")
        if cfg.rerank_score not in RERANK_SCORES:
            raise ValueError(f"rice: rerank_score must be one of {RERANK_SCORES}, got {cfg.rerank_score!r}")
        if cfg.pfr_target not in PFR_TARGETS:
            raise ValueError(f"rice: pfr_target must be one of {PFR_TARGETS}, got {cfg.pfr_target!r}")
        check_image_size("rice", cfg.encoder.image_size, info)
        if cfg.require_pretrained and not cfg.encoder.pretrained:
            raise ValueError(
                "rice (paper profile): the encoder needs pretrained CLIP weights; set encoder.pretrained "
                "to a hub tag (openai) or pass --pretrained PATH (a local open_clip checkpoint)"
            )
        if cfg.require_pretrained and cfg.text:
            refuse_random_text(cfg.encoder, "rice")

    def variant(self) -> str:
        parts = ["icl"]
        if self.cfg.pmd:
            pmd = "pmd-sg" if self.cfg.pmd_stop_grad else "pmd"
            parts.append(pmd if self.cfg.pmd_anchor == "image" else f"{pmd}-{self.cfg.pmd_anchor}")
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

    @property
    def needs_rerank_validation(self) -> bool:
        """A fused second stage whose weight is still to be chosen on held-out training pairs
        (``benchmark.evaluation.rerank_fusion``, which carves them before training)."""
        return self.pmd is not None and self.cfg.rerank_score == "fused" and self.cfg.rerank_fuse_weight is None

    def second_stage_scores(self, query: Encoded, gallery: Encoded) -> Tensor:
        """PMD's cosine: its matching score / ``match_scale``, as the fused score adds it."""
        return self.pmd_scores(query, gallery).float() / self.cfg.match_scale

    def set_rerank_fuse_weight(self, weight: float) -> None:
        self.cfg = dataclasses.replace(self.cfg, rerank_fuse_weight=float(weight))

    def rerank(self, query: Encoded, gallery: Encoded) -> Tensor:
        """Second-stage scores of aligned (clip, image) pairs (this harness's analysis of PMD;
        the official evaluation ranks by the first-stage cosine alone).

        ``rerank_score="pmd"``: PMD's matching score; ``"fused"``: first-stage cosine +
        ``rerank_fuse_weight`` x PMD's cosine. Without PMD the first-stage cosine is returned.
        """
        cos = (F.normalize(query.embedding.float(), dim=-1) * F.normalize(gallery.embedding.float(), dim=-1)).sum(-1)
        if self.pmd is None:
            return cos
        pmd = self.pmd_scores(query, gallery)
        if self.cfg.rerank_score == "pmd":
            return pmd
        if self.cfg.rerank_fuse_weight is None:
            raise RuntimeError(
                "rice: rerank_score=fused needs rerank_fuse_weight (chosen on validation pairs "
                "by benchmark.evaluation.rerank_fusion, or set with --set rerank_fuse_weight=W)"
            )
        return cos + self.cfg.rerank_fuse_weight * pmd.float() / self.cfg.match_scale

    def pmd_scores(self, query: Encoded, gallery: Encoded) -> Tensor:
        """PMD's matching scores of aligned (clip, image) pairs, in chunks of ``rerank_chunk``."""
        assert self.pmd is not None
        out = []
        n = query.embedding.shape[0]
        for s in range(0, n, self.cfg.rerank_chunk):
            e = s + self.cfg.rerank_chunk
            q_tok, q_keep = query.extras["pmd_tokens"][s:e], query.extras["pmd_keep"][s:e].bool()
            first, run = consecutive_runs(q_tok, q_keep)  # a query's pairs arrive together
            scores, _ = self.pmd(
                self._cast(gallery.extras["pmd_tokens"][s:e]),
                gallery.extras["pmd_keep"][s:e].bool(),
                self._cast(q_tok[first]),
                q_keep[first],
                key_index=run,
            )
            out.append(scores)
        return torch.cat(out) if out else query.embedding.new_zeros(0)

    def batch_preparer(self) -> Optional[TextTokens]:
        """The text tower's ids and which texts are non-empty, built in the DataLoader's workers."""
        return self.encoder.text_preparer(present=True) if self.cfg.text else None

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self._video_side(batch, train=True)
        image = self._image_side(batch)
        cfg = self.cfg
        product, live = batch.get("product"), batch.get("live")
        local = {"video": video.embedding, "image": image.embedding}
        if self.pmd is not None:
            video, image = pmd_sides(self, video, image)
            local.update(pmd_local(self, video, image, product, live))
        everyone = dict(zip(local, gather_packed(*local.values())))  # one collective under DDP
        losses = {
            "icl": cfg.w_icl
            * info_nce(
                video.embedding,
                image.embedding,
                self.logit_scale,
                cfg.max_logit_scale,
                gathered=(everyone["video"], everyone["image"]),
            )
        }
        losses.update(video.extra_losses)
        if self.pmd is not None:
            losses.update(pmd_losses(self, video, image, product, live, everyone))
        return losses

    # --- sides ------------------------------------------------------------------------
    def _video_side(self, batch: dict[str, Any], train: bool) -> _Side:
        frames, frame_mask = batch["frames"], batch["frame_mask"].bool()
        b, t = frames.shape[:2]
        keep, extra = self._frame_keep(batch, train)
        frame_emb, tokens = self._encode_frames(batch, keep)
        visual = masked_mean(frame_emb, frame_mask)
        tok_keep = frame_mask[:, :, None].expand(b, t, tokens.shape[2])
        if keep is not None:
            tok_keep = tok_keep & keep
        tokens, tok_keep = tokens.flatten(1, 2), tok_keep.flatten(1, 2)
        emb, tokens, tok_keep = self._with_text(visual, tokens, tok_keep, batch, b, "asr")
        return _Side(emb, tokens, tok_keep, extra)

    def _image_side(self, batch: dict[str, Any]) -> _Side:
        emb, tokens = self.encoder.encode_images(batch["image"])
        keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        emb, tokens, keep = self._with_text(emb, tokens, keep, batch, tokens.shape[0], "title")
        return _Side(emb, tokens, keep, {})

    def _with_text(
        self, visual: Tensor, tokens: Tensor, keep: Tensor, batch: dict[str, Any], n: int, kind: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Fuse the text embedding of ``batch[kind]`` ("asr" | "title") into the global one and
        append its token (``text=true``); its ids and presence come from the DataLoader's
        workers when the batch went through them (:meth:`batch_preparer`)."""
        v = F.normalize(visual.float(), dim=-1)
        if not self.cfg.text:
            return v, tokens, keep
        texts = list(batch[kind]) if batch.get(kind) is not None else [""] * n
        present = batch.get(f"{kind}_present")
        has = present.to(v.device, torch.bool) if isinstance(present, Tensor) else has_text(texts).to(v.device)
        ids = batch.get("clip_id" if kind == "asr" else "image_id")
        text = self.encoder.encode_text(texts, ids, kind, batch_tokens(batch, kind))
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

    def _encode_frames(self, batch: dict[str, Any], keep: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return encode_frames(self, batch, keep)

    def _detector_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return detector_losses(self, batch)

    def _detect(self, batch: dict[str, Any], first_frame: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return detect(self, batch, first_frame)

    def _encoded(self, side: _Side) -> Encoded:
        if self.pmd is None:
            return Encoded(side.embedding)
        return Encoded(side.embedding, {"pmd_tokens": side.tokens, "pmd_keep": side.keep})

    def _cast(self, x: Tensor) -> Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return x
        return x.to(self.pmd.pool_dense.weight.dtype)
