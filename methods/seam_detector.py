"""SEAM Match-RCNN's detector: torchvision's Mask R-CNN on a ResNet-FPN (2 classes), built from a
:class:`methods.seam_config.SeamConfig`, with torchvision's COCO weights by name or a local state dict.

torchvision's own rules are kept: FrozenBatchNorm (eps 0 for the COCO weights) and 3 trainable
backbone stages when pretrained, BatchNorm and all 5 stages from scratch. The mask branch is built
(it is Mask R-CNN) but frozen: the data has no masks, and SEAM's match features come from the mask
RoI pooler, not the mask head. torchvision is imported inside :func:`build_detector` (heavy, and
needed only by this method).
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from methods.backbones import is_local_weights
from methods.encoders import EncoderLoadError as WeightsError
from methods.encoders import read_state_dict
from methods.seam_config import SeamConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ResNets with BasicBlocks beyond torchvision's named ones: "resnet10" is ResNet-18 with one
# block per stage (tiny profile: about a third of ResNet-18's CPU time at 112 px).
SMALL_RESNETS = {"resnet10": (1, 1, 1, 1)}


def build_detector(cfg: SeamConfig) -> nn.Module:
    """torchvision ``MaskRCNN`` (2 classes) on a ResNet-FPN, with COCO or local weights."""

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
        resnet = ResNet(BasicBlock, list(SMALL_RESNETS[cfg.backbone]), norm_layer=norm)
    else:
        resnet = torchvision.models.get_model(cfg.backbone, weights=None, norm_layer=norm)
    _freeze_resnet_layers(resnet, trainable)
    stage2 = resnet.inplanes // 8
    backbone = BackboneWithFPN(
        resnet,
        {f"layer{i}": str(i - 1) for i in range(1, 5)},
        [stage2 * 2 ** (i - 1) for i in range(1, 5)],
        cfg.fpn_channels,
    )
    c = cfg.fpn_channels
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        size_divisible=cfg.size_divisible,
        rpn_anchor_generator=AnchorGenerator(
            tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes)
        ),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_head=TwoMLPHead(c * 7 * 7, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, 2),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        mask_head=MaskRCNNHeads(c, (c, c, c, c), 1),
        mask_predictor=MaskRCNNPredictor(c, c, 2),
    )
    if random_init:
        pass
    elif is_local_weights(spec):
        _load_detector(model, _read_local(Path(spec)), spec)
    else:
        if cfg.backbone != "resnet50" or c != 256 or not frozen_bn:
            raise WeightsError(
                "seam-match-rcnn: torchvision's COCO Mask R-CNN weights fit the ResNet-50-FPN (256, FrozenBN) only"
            )
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
            raise WeightsError(
                f"seam-match-rcnn weights {source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
        keep[k] = v
    missing, unexpected = model.load_state_dict(keep, strict=False)
    missing = [k for k in missing if k not in skipped and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"seam-match-rcnn weights {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")
