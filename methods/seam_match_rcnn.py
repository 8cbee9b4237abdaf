"""``seam-match-rcnn``: SEAM Match-RCNN, detector + weakly supervised match head + temporal aggregation.

Paper: D. Godi, C. Joppi, G. Skenderi, M. Cristani, "MovingFashion: a Benchmark for the
Video-to-Shop Challenge", WACV 2022 (arXiv 2110.02627). Official code:
HumaticsLAB/SEAM-Match-RCNN (``models/match_head.py``, ``models/nlb.py``,
``models/video_matchrcnn.py``, ``stuffs/engine.py``, ``evaluate_movingfashion.py``). The heads
(match head, non-local block, aggregator, weak labels) live in ``methods/seam_parts.py``.

Kept from the paper and the official code:
  * detector: torchvision Mask R-CNN, ResNet-50-FPN (``paper``: COCO weights by torchvision
    name ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, or a local state dict through
    ``--pretrained PATH``; as torchvision's builder: FrozenBatchNorm (eps 0 for these weights)
    and 3 trainable backbone stages when pretrained, BatchNorm and all 5 stages from scratch;
    resize to 800/1333 as torchvision's and SEAM's
    default transform does); the match features are the mask branch's 14 x 14 RoI-Align
    features (``mask_roi_pool``, 256 channels);
  * match head (``MatchPredictor``): four unpadded 3 x 3 convs (256, 256, 256 -> 1024; 14 -> 6),
    ReLU after each, 6 x 6 average pool, ReLU, Linear(1024, 256) + BatchNorm1d; the match
    logit is Linear(256, 2) on ``(f_street - f_shop) ** 2``;
  * temporal aggregator (``TemporalAggregationNLB``): its own copy of the match head
    (initialised from it, as ``load_saved_matchrcnn`` does), a 1D non-local block over the
    frames (concatenation form: ReLU(w . [theta_i, phi_j]) / N, inner width 128, no
    sub-sampling, no BN, output conv zero-initialised; skipped for one-frame sequences), an
    attention score Linear(256, 1) with a softmax over frames, weighted sum of the non-local
    outputs; its own Linear(256, 2) on the squared difference to the shop descriptor;
  * losses (``MatchLossWeak``, ``NEWBalancedAggregationMatchLossWeak``): per frame, among its
    detections (score >= 0.1) the box scoring highest against its own shop image is the
    positive, every other (box, shop) pair in the batch a negative, cross-entropy with equal
    class weights; the aggregation loss takes each frame's best box as a candidate when its
    match logit against its own shop exceeds -10 (``aggregation_candidates_above_threshold``),
    and scores every clip with at least ``min_frames_aggregation`` = 1 candidate (SEAM checks
    the aggregator's ``n_frames``, which its code leaves at -1, not the video model's 3)
    against every valid shop with class weights 1.0 (non-match) / 0.3 (match) and weight
    ``min(epoch / 1, 1)``, i.e. off in epoch 0 (the epoch comes from ``Method.set_epoch``);
  * detections kept: score >= 0.1 in training (``train_movingfashion.py``), every detection
    at test (``evaluate_movingfashion.py``'s ``score_threshold=0.0``, above torchvision's
    ``box_score_thresh`` of 0.05: ``test_score_thresh``); the shop's box is its largest kept
    detection (``paper``); when nothing is detected the whole image is the box (SEAM's
    ``TemporalRoIHeads`` fallback), also for frames. Encoding runs the detector on 11 images at
    a time, as SEAM's evaluation does (``detect_chunk``; tiny: the whole batch at once). In training SEAM drops a frame whose
    detections all score in [0.05, 0.1); here it gets the whole-image box too;
  * query side at test time: SEAM's greedy tracker (start at the most confident detection,
    repeatedly add the box of an unvisited frame with the highest match probability to the
    tracklet, stop below 0.3), then the aggregator over the tracked boxes; the retrieval
    score is the aggregator's match logit (``rerank``), SEAM's "aggregated descriptor" row.

Adaptations to video-to-shop retrieval in this benchmark (one training protocol, AdamW):
  * SEAM trains in two phases (Match-RCNN on DeepFashion2 with strong pair labels, then the
    detector frozen and SEAM's heads trained on MovingFashion, SGD lr 0.04, 16 products x
    (1 shop + 10 frames)). There is no DeepFashion2 here, so both phases are merged into the
    protocol's single loop: the detector (2 classes: background, product) is trained on the
    intent-product boxes (``boxes``/``box_mask``; frames without a box give no detection loss)
    while the match head and the aggregator train on its detections, their gradients reaching
    the backbone as Match-RCNN's match loss does in its phase. Epoch 0 (aggregation off) is
    then the Match-RCNN phase, later epochs the SEAM phase. ``freeze_detector=True`` instead
    reproduces SEAM's second phase on top of a trained detector (``--pretrained PATH``).
  * The mask branch is built (it is Mask R-CNN) but frozen and never run: the data has no
    masks, and SEAM's match features come from the mask RoI pooler, not the mask head.
  * The batch's product ids define positives, so two clips of one product in a batch are
    both positives of its shop image (SEAM's sampler never puts a product twice in a batch).
  * SEAM's evaluation chooses, among the tracklets, the one that overlaps the ground-truth
    tracklet most (an oracle); here the first tracklet, seeded at the most confident
    detection, is used, which needs no ground truth.
  * First stage: ``encode_query``/``encode_gallery`` return the aggregated clip descriptor and
    the shop descriptor (compared by cosine); the faithful SEAM score is the second stage
    (``rerank``: aggregator match logit, the log-odds of SEAM's match probability, which
    ranks identically without saturating). Leaderboard rows of this method should use
    ``--rerank all``; they follow RICE's MovingFashion protocol (1 fps, <= 10 frames,
    global gallery, R1/R5/R10), not SEAM's script (noise on test frames, top-20).
  * Detector input: the protocol's normalised crops are mapped back to pixels and handed to
    torchvision's transform (ImageNet normalisation, resize); boxes come in [0, 1] of the crop.
  * On training data without boxes (e.g. MovingFashion videos without tracklets) the detector
    gets no detection loss and relies on its initial weights (COCO on ``paper``).
  * Batch: the protocol's batch applies (``paper``: 256 pairs of 10 frames + 1 image at 800 px);
    SEAM's own was 16 products x (1 + 10) images, i.e. ``--batch-size 16``.

``tiny`` (2-core CPU, from scratch since no weights can be had offline): ResNet-10 (ResNet-18
with one BasicBlock per stage, about a third of its CPU time at 112 px) FPN with 64 channels
and trainable BatchNorm, no upscaling (112 px), anchors 8..128 px (the paper's 32..512 scaled
with the image), the batch padded to a multiple of 16 px instead of 32, the detection loss on 2
boxed frames per clip drawn at random (``paper``: every boxed frame), 32 sampled RoIs per
image, fewer proposals (100 / 32 after NMS in training / inference), at most 4 detections per frame
(``paper``: every detection, up to torchvision's 100), box head 256 wide, match head
64 -> 256 -> 128-d (the paper's 256 -> 1024 -> 256 at a quarter of the width), shop box =
whole image (a detector trained for minutes on frames is unreliable on shop images, which
show the product alone). The aggregation's candidate rule (best logit above -10), its minimum
of one candidate frame and the test-time score threshold 0.0 are SEAM's, as in ``paper``.

Measurements that shaped the tiny profile (the aggregator's restart, strong pairs, the heads'
learning rate) are in ``docs/baselines.md``: from random weights these weakly supervised pair
losses end near a constant predictor of the class prior, since SEAM's heads start from a
Match-RCNN trained with strong pairs on DeepFashion2, which is not available here.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.config import DataConfig
from benchmark.core.registry import METHODS
from methods.backbones import is_local_weights
from methods.base import DataInfo, Encoded, Method
from methods.encoders import EncoderLoadError as WeightsError
from methods.encoders import read_state_dict
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ROI = 14  # torchvision's mask RoI-Align output, the input of SEAM's match head


@dataclass(frozen=True)
class SeamConfig:
    # detector ------------------------------------------------------------------------
    backbone: str = "resnet50"  # a torchvision ResNet
    fpn_channels: int = 256
    # torchvision's rule: "auto" = FrozenBatchNorm with pretrained weights, BatchNorm from scratch
    norm: str = "auto"  # "auto" | "frozen_bn" | "bn"
    frozen_bn_eps: float = 0.0  # torchvision's COCO_V1 weights are used with eps 0
    trainable_backbone_layers: Optional[int] = None  # None = torchvision's: 3 pretrained, 5 from scratch
    # a MaskRCNN_ResNet50_FPN_Weights name, or a local file (torchvision Mask R-CNN state dict or
    # this method's own); None / "none" = random init, asked for explicitly (never a silent fallback)
    pretrained: Optional[str] = "COCO_V1"
    freeze_detector: bool = False  # SEAM's phase 2: detector fixed, heads only
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 32  # the transform pads the batch to a multiple of this
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    box_head_dim: int = 1024
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100
    detector_loss_weight: float = 1.0
    detector_frames_per_clip: int = 0  # boxed frames per clip in the detection loss (0 = all)
    # SEAM ------------------------------------------------------------------------------
    score_thresh: float = 0.1  # detections kept for matching (SEAM's training filter)
    max_boxes_per_frame: int = 100
    shop_box: str = "detect"  # "detect" (largest detection, SEAM) | "whole" (the whole image)
    head_hidden: int = 1024
    embed: int = 256
    match_threshold: float = -10.0  # a best box is a positive only above this logit (SEAM)
    aggregation_weights: tuple[float, float] = (1.0, 0.3)  # CE class weights non-match / match
    aggregation_warmup_epochs: int = 1  # weight min(epoch / this, 1): off in epoch 0
    # SEAM's phase 2 starts the aggregator from the trained match head (load_saved_matchrcnn):
    # copy it when the aggregation loss turns on (epoch 1); False = the construction-time copy only
    aggregator_from_trained_head: bool = True
    # a clip enters the aggregation loss with at least this many candidate frames: SEAM's check
    # compares with the aggregator's ``n_frames``, which stays -1 (any clip with a candidate);
    # the tiny rows were trained with 3 (the video model's ``n_frames=3``)
    min_frames_aggregation: int = 1
    # a frame is an aggregation candidate only if its best box's match logit against its own shop
    # exceeds ``match_threshold`` (SEAM's NEWBalancedAggregationMatchLossWeak); False: every frame
    aggregation_candidates_above_threshold: bool = True
    # detections kept at test time (SEAM's evaluate_movingfashion.py: score_threshold=0.0, i.e.
    # everything the detector outputs above torchvision's box_score_thresh); None: ``score_thresh``
    test_score_thresh: Optional[float] = 0.0
    # encoding runs the detector on at most this many images at once (SEAM's evaluation: 11, one
    # product's shop image + 10 frames); 0 = the whole batch at once (the tiny rows' encoding).
    # At 800 px an evaluation batch of 128 clips x 10 frames in one call would need hundreds of GB
    detect_chunk: int = 11
    tracking_threshold: float = 0.3
    # epochs (from 0) whose match loss takes the intent-product box of every boxed frame as the
    # positive RoI (Match-RCNN's strong pairs) instead of SEAM's best detection; 0 = SEAM only
    strong_pair_epochs: int = 0


PAPER = SeamConfig()
TINY = SeamConfig(
    backbone="resnet10", fpn_channels=64, norm="bn", trainable_backbone_layers=5, pretrained=None,
    min_size=112, max_size=112, size_divisible=16, anchor_sizes=(8, 16, 32, 64, 128), box_head_dim=256,
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=32, rpn_batch_size_per_image=128, box_batch_size_per_image=32,
    box_detections_per_img=10, detector_frames_per_clip=2, max_boxes_per_frame=4, shop_box="whole",
    head_hidden=256, embed=128,
    detect_chunk=0,
)


# --- detector ------------------------------------------------------------------------------

# ResNets with BasicBlocks beyond torchvision's named ones: "resnet10" is ResNet-18 with one
# block per stage (tiny profile: about a third of ResNet-18's CPU time at 112 px).
SMALL_RESNETS = {"resnet10": (1, 1, 1, 1)}


def build_detector(cfg: SeamConfig) -> nn.Module:
    """torchvision ``MaskRCNN`` (2 classes) on a ResNet-FPN, with COCO or local weights."""
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops.misc import FrozenBatchNorm2d

    if cfg.norm not in ("auto", "frozen_bn", "bn"):
        raise ValueError(f"seam-match-rcnn: norm must be 'auto', 'frozen_bn' or 'bn', got {cfg.norm!r}")
    if cfg.shop_box not in ("detect", "whole"):
        raise ValueError(f"seam-match-rcnn: shop_box must be 'detect' or 'whole', got {cfg.shop_box!r}")
    spec = cfg.pretrained
    random_init = spec is None or spec.strip().lower() in ("", "none", "random")
    frozen_bn = cfg.norm == "frozen_bn" or (cfg.norm == "auto" and not random_init)
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    trainable = cfg.trainable_backbone_layers
    trainable = (5 if random_init else 3) if trainable is None else int(trainable)
    if cfg.backbone in SMALL_RESNETS:
        from torchvision.models.resnet import BasicBlock, ResNet

        resnet = ResNet(BasicBlock, list(SMALL_RESNETS[cfg.backbone]), norm_layer=norm)
    else:
        resnet = torchvision.models.get_model(cfg.backbone, weights=None, norm_layer=norm)
    _freeze_resnet_layers(resnet, trainable)
    stage2 = resnet.inplanes // 8
    backbone = BackboneWithFPN(
        resnet, {f"layer{i}": str(i - 1) for i in range(1, 5)},
        [stage2 * 2 ** (i - 1) for i in range(1, 5)], cfg.fpn_channels,
    )
    c = cfg.fpn_channels
    model = MaskRCNN(
        backbone, num_classes=None,
        min_size=cfg.min_size, max_size=cfg.max_size, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        size_divisible=cfg.size_divisible,
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes)),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_head=TwoMLPHead(c * 7 * 7, cfg.box_head_dim), box_predictor=FastRCNNPredictor(cfg.box_head_dim, 2),
        box_batch_size_per_image=cfg.box_batch_size_per_image, box_score_thresh=cfg.box_score_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        mask_head=MaskRCNNHeads(c, (c, c, c, c), 1), mask_predictor=MaskRCNNPredictor(c, c, 2),
    )
    if random_init:
        pass
    elif is_local_weights(spec):
        _load_detector(model, _read_local(Path(spec)), spec)
    else:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        if cfg.backbone != "resnet50" or c != 256 or not frozen_bn:
            raise WeightsError("seam-match-rcnn: torchvision's COCO Mask R-CNN weights fit the ResNet-50-FPN (256, FrozenBN) only")
        try:
            state = MaskRCNN_ResNet50_FPN_Weights[cfg.pretrained].get_state_dict(progress=False, check_hash=True)
        except KeyError:
            raise WeightsError(f"seam-match-rcnn: unknown MaskRCNN_ResNet50_FPN_Weights {cfg.pretrained!r}") from None
        except Exception as exc:
            raise WeightsError(
                f"seam-match-rcnn: cannot load torchvision Mask R-CNN weights {cfg.pretrained!r}: {exc}. Pass "
                "--pretrained PATH (a saved maskrcnn_resnet50_fpn state dict), run where download.pytorch.org is "
                "reachable, or ask for random init explicitly with --set pretrained=none"
            ) from exc
        _load_detector(model, state, f"torchvision:{cfg.pretrained}")
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = cfg.frozen_bn_eps
    for p in list(model.roi_heads.mask_head.parameters()) + list(model.roi_heads.mask_predictor.parameters()):
        p.requires_grad_(False)  # no mask annotations; SEAM's features come from the mask RoI pooler
    return model


def _freeze_resnet_layers(resnet: nn.Module, trainable: int) -> None:
    """torchvision's rule: train the last ``trainable`` of (layer4, layer3, layer2, layer1, conv1)."""
    if not 0 <= trainable <= 5:
        raise ValueError(f"seam-match-rcnn: trainable_backbone_layers must be in [0, 5], got {trainable}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
    for name, p in resnet.named_parameters():
        if not any(name.startswith(t) for t in train):
            p.requires_grad_(False)


def _read_local(path: Path) -> dict:
    return read_state_dict(path, "seam-match-rcnn", ("model_state_dict", "state_dict"), strip_prefix="encoder.")


def _load_detector(model: nn.Module, state: dict, source: str) -> None:
    """Load a Mask R-CNN state dict; class-specific predictor layers of another class count are skipped."""
    own = model.state_dict()
    keep, skipped = {}, []
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            if k.startswith(("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")):
                skipped.append(k)
                continue
            raise WeightsError(f"seam-match-rcnn weights {source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        keep[k] = v
    missing, unexpected = model.load_state_dict(keep, strict=False)
    missing = [k for k in missing if k not in skipped and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"seam-match-rcnn weights {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")


# --- the method ----------------------------------------------------------------------------


@dataclass
class _Detections:
    features: dict[str, Tensor]  # FPN maps of all images
    sizes: list[tuple[int, int]]  # (h, w) of each image after the detector's transform
    boxes: list[Tensor]  # chosen boxes per image [k_i, 4] (transformed pixel coordinates)
    scores: list[Tensor]  # their detector scores [k_i]
    losses: dict[str, Tensor]


@METHODS.register("seam-match-rcnn", description="SEAM Match-RCNN: Mask R-CNN + weakly supervised match head + non-local temporal aggregation (MovingFashion, WACV 2022)")
class SeamMatchRCNN(Method):
    """Mask R-CNN detector, SEAM match head on mask-RoI features, temporal aggregation, pair scoring."""

    Config = SeamConfig
    PROFILES = {"paper": PAPER, "tiny": TINY}
    # pretrained detector parts; the 2-class predictors and SEAM's heads are new modules
    encoder_prefixes = ("encoder.backbone.", "encoder.rpn.", "encoder.roi_heads.box_head.")
    supports_rerank = True

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
    def _detect(
        self, images: Tensor, n_frames: int, gt: Optional[tuple[Tensor, Tensor, Tensor]] = None
    ) -> _Detections:
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
        from torchvision.models.detection.image_list import ImageList

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
            boxes, scores, _ = rh.postprocess_detections(class_logits.float(), box_regression.float(), proposals, sub_sizes)
        return {i: (b, s) for i, b, s in zip(index, boxes, scores)}

    def _detection_losses(
        self, image_list, features, sizes, boxes01: Tensor, valid: Tensor, clip_of: Tensor
    ) -> dict[str, Tensor]:
        """Faster R-CNN losses (RPN + box head) on the frames with an intent-product box
        (``detector_frames_per_clip`` > 0: that many of them per clip, drawn at random)."""
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.roi_heads import fastrcnn_loss

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
                    "(SEAM turns it on after epoch 0)", RuntimeWarning, stacklevel=3,
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

    def _strong_match_loss(self, d: _Detections, boxes01: Tensor, valid: Tensor, shop: Tensor, same: Tensor,
                           weak_logits: Tensor, weak_target: Tensor, frame_of: Tensor) -> Tensor:
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
            match = self._strong_match_loss(d, batch["boxes"][fmask], batch["box_mask"][fmask], shop, same,
                                            logits, target[frame_of, k_of], frame_of)
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
