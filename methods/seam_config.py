"""SEAM Match-RCNN's configuration (``methods/seam_match_rcnn.py``): the detector's and SEAM's
settings, with the ``paper`` values (SEAM's and torchvision's) and the ``tiny`` profile's.
What each tiny choice is and why: the method's docstring and ``docs/seam.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class SeamConfig:
    # detector ------------------------------------------------------------------------
    backbone: str = "resnet50"  # a torchvision ResNet
    fpn_channels: int = 256
    # torchvision's rule: "auto" = FrozenBatchNorm with pretrained weights, BatchNorm from scratch
    norm: Literal["auto", "frozen_bn", "bn"] = "auto"
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
    shop_box: Literal["detect", "whole"] = "detect"  # largest detection (SEAM) | the whole image
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
    backbone="resnet10",
    fpn_channels=64,
    norm="bn",
    trainable_backbone_layers=5,
    pretrained=None,
    min_size=112,
    max_size=112,
    size_divisible=16,
    anchor_sizes=(8, 16, 32, 64, 128),
    box_head_dim=256,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=32,
    rpn_batch_size_per_image=128,
    box_batch_size_per_image=32,
    box_detections_per_img=10,
    detector_frames_per_clip=2,
    max_boxes_per_frame=4,
    shop_box="whole",
    head_hidden=256,
    embed=128,
    detect_chunk=0,
)
