"""``seam-match-rcnn``: SEAM Match-RCNN, detector + weakly supervised match head + temporal aggregation.

Paper: D. Godi, C. Joppi, G. Skenderi, M. Cristani, "MovingFashion: a Benchmark for the
Video-to-Shop Challenge", WACV 2022 (arXiv 2110.02627). Official code:
HumaticsLAB/SEAM-Match-RCNN (``models/match_head.py``, ``models/nlb.py``,
``models/video_matchrcnn.py``, ``stuffs/engine.py``, ``evaluate_movingfashion.py``). Parts:
the detector in ``methods/seam_detector.py``, the heads (match head, non-local block,
aggregator, weak labels) in ``methods/seam_parts.py``, the settings in ``methods/seam_config.py``.
What each kept part does, line by line against the official code, is in ``docs/seam.md``.

Kept: torchvision Mask R-CNN R50-FPN (COCO weights) and its mask-RoI 14 x 14 features; the
match head (4 convs to 1024, pool, Linear to 256 + BN; logit = Linear(256, 2) on the squared
difference); the aggregator (its own copy of the head, a 1D non-local block over frames,
attention softmax, weighted sum); the weak losses (the best box of a frame against its own shop
is the positive; aggregation candidates above logit -10, at least one a clip, class weights
1.0 / 0.3, off in epoch 0); detections >= 0.1 in training, all at test; the greedy tracker
(stop below 0.3); the retrieval score is the aggregator's match logit (``rerank``).

Departures (this benchmark's one protocol; each explained in ``docs/seam.md``):
  * SEAM's two phases (Match-RCNN on DeepFashion2, then the heads on MovingFashion with SGD) are
    one loop here: the detector trains on the intent-product boxes while the heads train on its
    detections; ``freeze_detector=True`` reproduces phase 2 on a trained detector.
  * The batch's product ids define positives (SEAM's sampler never repeats a product).
  * At test the first tracklet (most confident seed) is used, not SEAM's ground-truth-overlap
    oracle; rows follow RICE's MovingFashion protocol (``--rerank all``), not SEAM's script.
  * The protocol's normalised crops are mapped back to pixels for torchvision's transform;
    training data without boxes gives no detection loss; the protocol's batch applies.

``tiny`` (2-core CPU, from scratch: no weights offline): ResNet-10 FPN (64 channels, BatchNorm),
112 px, anchors scaled with the image, 2 boxed frames a clip in the detection loss, fewer RoIs
and proposals, at most 4 detections a frame, heads at a quarter of the width, shop box = whole
image. The aggregation rules and the test threshold are SEAM's, as in ``paper``. Why these
losses end near the class prior from random weights: ``docs/baselines.md``.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss

from benchmark.core.config import DataConfig
from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method
from methods.seam_config import PAPER, TINY, SeamConfig
from methods.seam_detector import build_detector
from methods.seam_parts import (  # noqa: F401  (re-exported: the heads are part of this method's API)
    MatchHead,
    NonLocal1D,
    TemporalAggregator,
    inference_mode_of,
    pixel_boxes,
    weak_match_targets,
)

BATCH_MEAN = DataConfig.mean  # the batch format's CLIP normalisation (methods/base.py)
BATCH_STD = DataConfig.std
ROI = 14  # torchvision's mask RoI-Align output, the input of SEAM's match head


# --- the method ----------------------------------------------------------------------------


@dataclass
class _Detections:
    features: dict[str, Tensor]  # FPN maps of all images
    sizes: list[tuple[int, int]]  # (h, w) of each image after the detector's transform
    boxes: list[Tensor]  # chosen boxes per image [k_i, 4] (transformed pixel coordinates)
    scores: list[Tensor]  # their detector scores [k_i]
    losses: dict[str, Tensor]


@METHODS.register(
    "seam-match-rcnn",
    description="SEAM Match-RCNN: Mask R-CNN + weakly supervised match head + non-local temporal aggregation (MovingFashion, WACV 2022)",
)
class SeamMatchRCNN(Method):
    """Mask R-CNN detector, SEAM match head on mask-RoI features, temporal aggregation, pair scoring."""

    Config = SeamConfig
    PROFILES = {"paper": PAPER, "tiny": TINY}
    # pretrained detector parts; the 2-class predictors and SEAM's heads are new modules
    encoder_prefixes = ("encoder.backbone.", "encoder.rpn.", "encoder.roi_heads.box_head.")
    supports_rerank = True
    MAIN_RERANK = "all"  # ranked by the aggregator's match score over every pair (SEAM's row)

    def __init__(self, cfg: SeamConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.encoder = build_detector(cfg)
        c = cfg.fpn_channels
        self.match_head = MatchHead(c, cfg.head_hidden, cfg.embed)
        self.aggregator = TemporalAggregator(c, cfg.head_hidden, cfg.embed)
        # SEAM initialises the aggregator's match-head part from the match head
        self.aggregator.load_state_dict(copy.deepcopy(self.match_head.state_dict()), strict=False)
        # whether the aggregator has been re-initialised from the trained match head (saved in
        # checkpoints, so a resumed run does not copy again)
        self.register_buffer("aggregator_from_head", torch.tensor(False))
        if cfg.freeze_detector:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        self._warned_epoch = False

    def train(self, mode: bool = True) -> "SeamMatchRCNN":
        super().train(mode)
        if self.cfg.freeze_detector:
            self.encoder.eval()
        return self

    # --- detection ----------------------------------------------------------------------
    def _detect(self, images: Tensor, n_frames: int, gt: Optional[tuple[Tensor, Tensor, Tensor]] = None) -> _Detections:
        """Run the detector on ``images`` [N, 3, H, W] (batch normalisation): the first
        ``n_frames`` are frames (their detections kept, at most ``max_boxes_per_frame``), the
        rest shop images (largest detection, or the whole image). ``gt`` = (boxes [n_frames, 4]
        in [0, 1], valid [n_frames], clip of each frame [n_frames]) adds the detection losses on
        the frames that have a box. Detections scoring under ``score_thresh`` (training, i.e.
        ``gt`` given) or ``test_score_thresh`` (encoding) are dropped.
        """
        cfg, det = self.cfg, self.encoder
        thresh = cfg.score_thresh if gt is not None or cfg.test_score_thresh is None else cfg.test_score_thresh
        pixels = images * images.new_tensor(BATCH_STD).view(3, 1, 1) + images.new_tensor(BATCH_MEAN).view(3, 1, 1)
        frozen = cfg.freeze_detector
        with torch.no_grad() if frozen else contextlib.nullcontext():
            image_list, _ = det.transform(list(pixels.clamp(0, 1).unbind(0)))
            features = self._backbone(image_list.tensors, chunked=frozen or not torch.is_grad_enabled())
        sizes = [tuple(s) for s in image_list.image_sizes]
        losses: dict[str, Tensor] = {}
        if gt is not None and not frozen:
            losses = self._detection_losses(image_list, features, sizes, *gt)
        n_total = images.shape[0]
        need = list(range(n_frames)) + (list(range(n_frames, n_total)) if cfg.shop_box == "detect" else [])
        det_boxes: dict[int, tuple[Tensor, Tensor]] = {}
        if need:
            det_boxes = self._inference(image_list, features, sizes, need)
        boxes, scores = [], []
        for i in range(n_total):
            h, w = sizes[i]
            whole = images.new_tensor([[0.0, 0.0, float(w), float(h)]])
            fallback = images.new_tensor([cfg.score_thresh])
            if i not in det_boxes:
                boxes.append(whole)
                scores.append(fallback)
                continue
            b, s = det_boxes[i]
            keep = s >= thresh
            b, s = b[keep], s[keep]
            if b.shape[0] == 0:
                b, s = whole, fallback
            elif i < n_frames:
                b, s = b[: cfg.max_boxes_per_frame], s[: cfg.max_boxes_per_frame]
            else:  # shop image: the largest detection (SEAM)
                j = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).argmax()
                b, s = b[j : j + 1], s[j : j + 1]
            boxes.append(b)
            scores.append(s)
        return _Detections(features, sizes, boxes, scores, losses)

    def _backbone(self, tensors: Tensor, chunked: bool) -> dict[str, Tensor]:
        """FPN maps of ``tensors``; without gradient (``chunked``), ``detect_chunk`` images at a
        time, as SEAM runs its frozen detector (15 images a call in training, 11 at test)."""
        step = self.cfg.detect_chunk
        if not chunked or step <= 0 or tensors.shape[0] <= step:
            return self.encoder.backbone(tensors)
        parts = [self.encoder.backbone(tensors[lo : lo + step]) for lo in range(0, tensors.shape[0], step)]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    def _inference(self, image_list, features, sizes, index: list[int]) -> dict[int, tuple[Tensor, Tensor]]:
        """Detections (boxes, scores sorted by score) of the images in ``index``, no gradient."""

        det = self.encoder
        rh = det.roi_heads
        idx = torch.tensor(index, device=image_list.tensors.device)
        sub_sizes = [sizes[i] for i in index]
        with torch.no_grad(), inference_mode_of(det.rpn, rh):
            feats = {k: v.detach()[idx] for k, v in features.items()}
            sub = ImageList(image_list.tensors[idx], sub_sizes)
            proposals, _ = det.rpn(sub, feats)
            x = rh.box_head(rh.box_roi_pool(feats, proposals, sub_sizes))
            class_logits, box_regression = rh.box_predictor(x)
            boxes, scores, _ = rh.postprocess_detections(
                class_logits.float(), box_regression.float(), proposals, sub_sizes
            )
        return {i: (b, s) for i, b, s in zip(index, boxes, scores)}

    def _detection_losses(
        self, image_list, features, sizes, boxes01: Tensor, valid: Tensor, clip_of: Tensor
    ) -> dict[str, Tensor]:
        """Faster R-CNN losses (RPN + box head) on the frames with an intent-product box
        (``detector_frames_per_clip`` > 0: that many of them per clip, drawn at random)."""

        det = self.encoder
        rh = det.roi_heads
        n = boxes01.shape[0]
        px, valid = pixel_boxes(boxes01, valid, sizes)
        per_clip = self.cfg.detector_frames_per_clip
        if per_clip > 0 and bool(valid.any()):
            draw = torch.rand(n, device=valid.device)
            keep = torch.zeros_like(valid)
            for c in clip_of[valid].unique().tolist():
                idx = (valid & (clip_of == c)).nonzero().flatten()
                keep[idx[draw[idx].argsort()[:per_clip]]] = True
            valid = keep
        if not bool(valid.any()):  # no box in this batch: zeros that keep the detector in the graph (DDP)
            zero = sum(p.sum() for p in det.parameters() if p.requires_grad) * 0.0
            return {k: zero for k in ("det_objectness", "det_rpn_box", "det_classifier", "det_box")}
        index = valid.nonzero().flatten()
        sub_sizes = [sizes[i] for i in index.tolist()]
        feats = {k: v[index] for k, v in features.items()}
        sub = ImageList(image_list.tensors[index], sub_sizes)
        gt_boxes = [px[i : i + 1] for i in index.tolist()]
        gt_labels = [torch.ones(1, dtype=torch.int64, device=px.device) for _ in gt_boxes]
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(gt_boxes, gt_labels)]
        proposals, rpn_losses = det.rpn(sub, feats, targets)
        # RoIHeads.select_training_samples without its mask-annotation check
        proposals = rh.add_gt_proposals([p.detach() for p in proposals], gt_boxes)
        matched, labels = rh.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled = rh.subsample(labels)
        matched_gt = []
        for i, s in enumerate(sampled):
            proposals[i], labels[i] = proposals[i][s], labels[i][s]
            matched_gt.append(gt_boxes[i][matched[i][s]])
        targets_reg = rh.box_coder.encode(matched_gt, proposals)
        x = rh.box_head(rh.box_roi_pool(feats, proposals, sub_sizes))
        class_logits, box_regression = rh.box_predictor(x)
        loss_cls, loss_box = fastrcnn_loss(class_logits.float(), box_regression.float(), labels, targets_reg)
        wgt = self.cfg.detector_loss_weight
        return {
            "det_objectness": wgt * rpn_losses["loss_objectness"],
            "det_rpn_box": wgt * rpn_losses["loss_rpn_box_reg"],
            "det_classifier": wgt * loss_cls,
            "det_box": wgt * loss_box,
        }

    def _roi(self, d: _Detections) -> Tensor:
        return self.encoder.roi_heads.mask_roi_pool(d.features, d.boxes, d.sizes)

    # --- training -------------------------------------------------------------------------
    def aggregation_weight(self) -> float:
        if self.epoch is None:
            if not self._warned_epoch:
                warnings.warn(
                    "seam-match-rcnn: set_epoch() was never called; the aggregation loss stays off "
                    "(SEAM turns it on after epoch 0)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned_epoch = True
            return 0.0
        return min(self.epoch / max(self.cfg.aggregation_warmup_epochs, 1), 1.0)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """At the first epoch with the aggregation loss on (SEAM's phase 2), start the
        aggregator's match-head part from the match head trained so far, as SEAM's
        ``load_saved_matchrcnn`` starts it from the trained Match-RCNN; once per run."""
        if epoch >= 1 and self.cfg.aggregator_from_trained_head and not bool(self.aggregator_from_head):
            self.aggregator.load_state_dict(self.match_head.state_dict(), strict=False)
            self.aggregator_from_head.fill_(True)

    def strong_pairs(self) -> bool:
        """Whether this epoch's match loss uses the ground-truth boxes (``strong_pair_epochs``)."""
        return self.epoch is not None and self.epoch < self.cfg.strong_pair_epochs

    def _strong_match_loss(
        self,
        d: _Detections,
        boxes01: Tensor,
        valid: Tensor,
        shop: Tensor,
        same: Tensor,
        weak_logits: Tensor,
        weak_target: Tensor,
        frame_of: Tensor,
    ) -> Tensor:
        """Match-RCNN's strong pairs: the RoI at a frame's intent-product box against every shop
        of the batch (positive: its own product); frames without a box keep SEAM's weak pairs.
        One cross-entropy over all these pairs."""
        n_f = boxes01.shape[0]
        px, valid = pixel_boxes(boxes01, valid, d.sizes)
        empty = px.new_zeros(0, 4)
        gt_boxes = [px[i : i + 1] if bool(valid[i]) else empty for i in range(n_f)]
        gt_boxes += [empty] * (len(d.sizes) - n_f)
        logits, targets = [], []
        if bool(valid.any()):
            roi = self.encoder.roi_heads.mask_roi_pool(d.features, gt_boxes, d.sizes)
            logits.append(self.match_head.cross_logits(self.match_head.embed(roi), shop).reshape(-1, 2))
            targets.append(same[valid].long().reshape(-1))
        weak = ~valid[frame_of]  # detections of the frames without a box
        logits.append(weak_logits[weak].reshape(-1, 2))
        targets.append(weak_target[weak].reshape(-1))
        return F.cross_entropy(torch.cat(logits), torch.cat(targets))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        fmask = batch["frame_mask"]
        b, t = fmask.shape
        fidx = fmask.nonzero()  # [F, 2] (clip, position)
        n_f = fidx.shape[0]
        if n_f == 0:
            raise ValueError("seam-match-rcnn: a training batch has no real frame")
        images = torch.cat([batch["frames"][fmask], batch["image"]], dim=0)
        d = self._detect(images, n_f, gt=(batch["boxes"][fmask], batch["box_mask"][fmask], fidx[:, 0]))
        roi = self._roi(d)
        counts = torch.tensor([bx.shape[0] for bx in d.boxes[:n_f]], device=roi.device)
        s_rows = int(counts.sum())
        frame_of = torch.repeat_interleave(torch.arange(n_f, device=roi.device), counts)  # [S]
        start = torch.cumsum(counts, 0) - counts
        k_of = torch.arange(s_rows, device=roi.device) - start[frame_of]
        clip_of_frame = fidx[:, 0]
        product = batch["product"].to(roi.device)

        # weak per-frame match loss (MatchLossWeak)
        emb = self.match_head.embed(roi)
        street, shop = emb[:s_rows], emb[s_rows:]
        logits = self.match_head.cross_logits(street, shop)  # [S, B, 2]
        kmax = int(counts.max())
        pos = logits.new_full((n_f, kmax, b), float("-inf"))
        pos[frame_of, k_of] = logits[..., 1].detach()
        same = product[clip_of_frame][:, None] == product[None, :]  # [F, B]
        target, best = weak_match_targets(pos, same, cfg.match_threshold)
        if self.strong_pairs():
            match = self._strong_match_loss(
                d, batch["boxes"][fmask], batch["box_mask"][fmask], shop, same, logits, target[frame_of, k_of], frame_of
            )
        else:
            match = F.cross_entropy(logits.reshape(-1, 2), target[frame_of, k_of].reshape(-1))

        # aggregation loss (NEWBalancedAggregationMatchLossWeak) over each clip's best boxes
        frame_ids = torch.arange(n_f, device=roi.device)
        own_best = best[frame_ids, clip_of_frame]  # [F]
        rows = start + own_best
        agg = self.aggregator.embed(torch.cat([roi[rows], roi[s_rows:]], dim=0))
        seq = agg.new_zeros(b, t, agg.shape[1])
        seq[fidx[:, 0], fidx[:, 1]] = agg[:n_f]
        shop_agg = agg[n_f:]
        candidates = fmask
        if cfg.aggregation_candidates_above_threshold:  # SEAM: best logit against its own shop > threshold
            above = pos.amax(1)[frame_ids, clip_of_frame] > cfg.match_threshold
            candidates = torch.zeros_like(fmask)
            candidates[fidx[:, 0], fidx[:, 1]] = above
        valid = candidates.sum(1) >= max(cfg.min_frames_aggregation, 1)
        if bool(valid.any()):
            video = self.aggregator.aggregate(seq[valid], candidates[valid])
            agg_logits = self.aggregator.cross_logits(video, shop_agg[valid])
            agg_target = (product[valid][:, None] == product[valid][None, :]).long()
            weight = agg_logits.new_tensor(cfg.aggregation_weights)
            aggregation = F.cross_entropy(agg_logits.reshape(-1, 2), agg_target.reshape(-1), weight=weight)
        else:  # SEAM returns 0; keep the aggregator in the graph
            aggregation = (agg.sum() + sum(p.sum() for p in self.aggregator.parameters())) * 0.0
        losses = {"match": match, "aggregation": self.aggregation_weight() * aggregation}
        losses.update(d.losses)
        return losses

    # --- retrieval ------------------------------------------------------------------------
    def _detect_rois(self, images: Tensor, n_frames: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Encoding-time detection in chunks of ``detect_chunk`` images: (mask-RoI features of
        the chosen boxes, boxes per image, scores per image); see ``_detect`` for ``n_frames``."""
        step = self.cfg.detect_chunk if self.cfg.detect_chunk > 0 else max(images.shape[0], 1)
        rois, boxes, scores = [], [], []
        for lo in range(0, images.shape[0], step):
            chunk = images[lo : lo + step]
            d = self._detect(chunk, max(0, min(n_frames - lo, chunk.shape[0])))
            rois.append(self._roi(d))
            boxes += d.boxes
            scores += d.scores
        return torch.cat(rois), boxes, scores

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        roi, _, _ = self._detect_rois(batch["image"], 0)
        shop = self.aggregator.embed(roi)
        return Encoded(shop, {"seam": shop})

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        fmask = batch["frame_mask"]
        b, t = fmask.shape
        dim = self.cfg.embed
        fidx = fmask.nonzero()
        n_f = fidx.shape[0]
        if n_f == 0:
            zeros = batch["frames"].new_zeros(b, dim)
            return Encoded(zeros, {"seam": zeros})
        roi, boxes, scores = self._detect_rois(batch["frames"][fmask], n_f)
        counts = [bx.shape[0] for bx in boxes]
        match_emb = self.match_head.embed(roi).split(counts)
        agg_emb = self.aggregator.embed(roi).split(counts)
        seq = roi.new_zeros(b, t, dim)
        mask = torch.zeros(b, t, dtype=torch.bool, device=roi.device)
        for clip in range(b):
            frames = (fidx[:, 0] == clip).nonzero().flatten().tolist()
            if not frames:
                continue
            chosen = self.track([match_emb[f] for f in frames], [scores[f] for f in frames])
            for local, k in chosen.items():
                f = frames[local]
                seq[clip, fidx[f, 1]] = agg_emb[f][k]
                mask[clip, fidx[f, 1]] = True
        video = self.aggregator.aggregate(seq, mask)
        return Encoded(video, {"seam": video})

    def track(self, feats: list[Tensor], scores: list[Tensor]) -> dict[int, int]:
        """SEAM's greedy tracker over one clip: {frame position: chosen box index}.

        Starts at the most confident detection; repeatedly adds, from a frame not yet in the
        tracklet, the box with the highest match probability to any tracklet member, while
        that probability exceeds ``tracking_threshold``.
        """
        frame_of = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scores)])
        box_of = torch.cat([torch.arange(len(s)) for s in scores])
        all_feats = torch.cat(feats)
        prob = torch.softmax(self.match_head.cross_logits(all_feats, all_feats), dim=-1)[..., 1].cpu()
        start = int(torch.cat(scores).argmax())
        members = [start]
        chosen = {int(frame_of[start]): int(box_of[start])}
        while True:
            cand = torch.tensor([i for i in range(len(frame_of)) if int(frame_of[i]) not in chosen], dtype=torch.long)
            if cand.numel() == 0:
                break
            sub = prob[members][:, cand]
            best = int(sub.argmax())
            if float(sub.flatten()[best].detach()) <= self.cfg.tracking_threshold:
                break
            pick = int(cand[best % cand.numel()])
            members.append(pick)
            chosen[int(frame_of[pick])] = int(box_of[pick])
        return chosen

    def rerank(self, query: Encoded, gallery: Encoded) -> Tensor:
        """SEAM's aggregated match score of aligned pairs: the match log-odds (logit 1 - logit 0)."""
        logits = self.aggregator.pair_logits(query.extras["seam"], gallery.extras["seam"])
        return logits[:, 1] - logits[:, 0]
