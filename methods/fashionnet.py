"""``fashionnet``: FashionNet (DeepFashion) adapted to video-to-shop retrieval.

Paper: Z. Liu, P. Luo, S. Qiu, X. Wang, X. Tang, "DeepFashion: Powering Robust Clothes
Recognition and Retrieval with Rich Annotations", CVPR 2016. No official training code was
released (only the DeepFashion data, http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion.html).

FashionNet is VGG-16 whose last convolution stage splits into three branches: a global branch
(conv5_global -> pool5 -> fc6_global), a local branch (conv5_pose -> landmark pooling ->
fc6_local) and a pose branch regressing landmark positions and visibility; fc7_fusion joins
fc6_global and fc6_local and feeds an attribute head (1,000 binary attributes), a category
head (softmax) and, for consumer-to-shop retrieval, a triplet loss (anchor: consumer photo,
positive: the same item's shop photo, negative: another item's shop photo).

Kept: VGG-16 (ImageNet init, torchvision weights through timm ``vgg16.tv_in1k``); the global
branch, whose conv5 / pool5 / fc6 / fc7 are VGG-16's own (fc6/fc7 ImageNet-initialised, dropout
0.5 between them), so fc7_fusion is fc7 fed by fc6_global alone; the 4096-d fc7 output is the
retrieval embedding; the category softmax head; the cross-domain triplet loss with a
consumer-side anchor, the hardest shop-side positive and negative of the batch (``tiny``: a
semi-hard negative, below).

Dropped, because LPR data has no landmark or attribute labels: the pose branch (landmark
regression and visibility), the landmark-pooled local branch (it needs landmark positions)
and the attribute head; what remains is FashionNet's global branch, and its rows are labelled
``fashionnet (global-branch)`` (``variant``; rows submitted before the label keep the bare
name until rerun). Added: a product-identity cross-entropy head on fc7 (``DataInfo
.num_products`` classes), the usual identity supervision of the re-id style baselines here.

Adaptations to video-to-shop retrieval:
  * The consumer side is a clip: every frame goes through the same network as the shop
    images (shared weights: FashionNet is one network for consumer and shop photos) and the
    clip embedding is the mean of its real frames' fc7 features (padding excluded).
  * Triplets are mined in the batch of B (clip, shop image) pairs on L2-normalised features
    (cosine geometry, as the evaluator ranks), margin 0.3; the paper's margin and sampling
    are not published. Unknown categories (-1) are ignored by the category loss.
  * Learning rates (not published): 1e-4 for the pretrained VGG, 1e-3 for the new heads,
    weight decay 5e-4 in the ``paper`` profile; the engine's AdamW + warmup/cosine schedule.

``tiny`` profile (2-core CPU): VGG-16's 13 convolutions at a quarter of the width
(``TINY_VGG_LAYERS``, random init) with BatchNorm after each convolution (the vgg16_bn layout:
a plain VGG learns poorly from scratch in a few epochs) at 112 px, a 3x3-kernel fc6 to 256
channels (the 112 px input leaves a 3x3 map) and fc7 of 256 without dropout, 4 frames per clip
in training and at test.

Triplet mining (``triplet_mining``; the paper does not publish its sampling): ``paper`` keeps
the hardest negative, ``tiny`` uses FaceNet's semi-hard negatives (Schroff et al., CVPR 2015:
the closest negative farther than the positive, else the farthest), because from random weights
the hardest-negative triplet collapsed the embedding in ``tiny``, as FaceNet reports it can ("a collapsed model, f(x) = 0"); the runs are in ``docs/baselines.md``.

BatchNorm statistics (tiny; the paper's VGG-16 has no BN): the clip's frames and the shop
images pass through the VGG in one call in training (``methods.frames.frames_and_images``), so
both are normalised alike in training and at test (two calls cost retrieval: ``docs/baselines.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from timm.models.vgg import ConvMlp
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_VGG_LAYERS,
    BackboneConfig,
    create_backbone,
    vgg_out_channels,
)
from methods.base import DataInfo, Encoded, Method
from methods.encoders import masked_mean
from methods.frames import frames_and_images, select_frames


@dataclass(frozen=True)
class FashionNetConfig:
    encoder: BackboneConfig = field(
        default_factory=lambda: BackboneConfig(
            name="vgg16", pretrained="tv_in1k", input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD
        )
    )
    fc_dim: int = 4096  # fc6 / fc7 width (VGG-16's: then fc6/fc7 keep their ImageNet weights)
    fc_kernel: int = 7  # fc6 as a convolution over the pool5 map (7x7 at 224 px)
    dropout: float = 0.5
    num_frames: Optional[int] = None  # frames per clip (chunk-sampled); None = all real frames
    triplet_margin: float = 0.3
    triplet_mining: str = "hardest"  # "hardest" | "semihard" (FaceNet; tiny): the negative of each triplet
    triplet_weight: float = 1.0
    category_weight: float = 1.0
    id_weight: float = 1.0


PAPER = FashionNetConfig()
TINY = FashionNetConfig(
    encoder=BackboneConfig(name="vgg16", pretrained=None, vgg_layers=TINY_VGG_LAYERS, vgg_batchnorm=True),
    dropout=0.0,
    fc_dim=256,
    fc_kernel=3,
    num_frames=4,
    triplet_mining="semihard",
)


TRIPLET_MINING = ("hardest", "semihard")


def cross_domain_triplet(
    anchor: Tensor, other: Tensor, labels: Tensor, margin: float, mining: str = "hardest"
) -> Tensor:
    """Triplets (anchor_i, hardest same-label ``other``, a negative ``other``) on L2-normalised
    features; anchors lacking a positive or a negative are skipped. The negative is the hardest
    (``hardest``) or, as FaceNet's semi-hard mining (Schroff et al., CVPR 2015), the closest one
    farther than the positive, else the farthest (``semihard``, TensorFlow's
    ``triplet_semihard_loss`` rule)."""
    if mining not in TRIPLET_MINING:
        raise ValueError(f"fashionnet: triplet mining {mining!r} is not one of {', '.join(TRIPLET_MINING)}")
    d = torch.cdist(F.normalize(anchor, dim=-1), F.normalize(other, dim=-1))
    same = labels[:, None] == labels[None, :]
    valid = same.any(1) & (~same).any(1)
    if not bool(valid.any()):
        return anchor.sum() * 0.0
    d_ap = d.masked_fill(~same, float("-inf")).amax(1)
    if mining == "hardest":
        d_an = d.masked_fill(same, float("inf")).amin(1)
    else:
        beyond = ~same & (d > d_ap[:, None])
        d_an = torch.where(
            beyond.any(1), d.masked_fill(~beyond, float("inf")).amin(1), d.masked_fill(same, float("-inf")).amax(1)
        )
    return F.relu(d_ap - d_an + margin)[valid].mean()


@METHODS.register(
    "fashionnet",
    description="FashionNet (DeepFashion, CVPR 2016), global branch only (no landmark or attribute branch): VGG-16, category + ID heads, triplet",
)
class FashionNet(Method):
    """VGG-16 global branch (conv5 -> fc6 -> fc7 embedding), category/ID heads, triplet loss."""

    MAIN_VARIANT = ("global-branch",)  # every run is the global branch (see variant())

    Config = FashionNetConfig
    # the paper profile's optimiser settings from the paper (see above); --lr-encoder etc. override them
    TRAIN_RECIPE = {"paper": {"lr_encoder": 1e-4, "lr_new": 1e-3, "weight_decay": 5e-4}}
    PROFILES = {"paper": PAPER, "tiny": TINY}

    def variant(self) -> str:
        """Every run is FashionNet's global branch only (no landmark-pooled local branch, no
        attribute head): the label says so, e.g. ``fashionnet (global-branch)``."""
        return "global-branch"

    def __init__(self, cfg: FashionNetConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.encoder = create_backbone(cfg.encoder, drop_rate=cfg.dropout)
        fc = self.encoder.pre_logits
        if fc.fc2.out_channels != cfg.fc_dim or fc.input_kernel_size != cfg.fc_kernel:
            self.encoder.pre_logits = ConvMlp(
                vgg_out_channels(self.encoder), cfg.fc_dim, cfg.fc_kernel, drop_rate=cfg.dropout
            )
        self.embed_dim = cfg.fc_dim
        self.category_head = nn.Linear(cfg.fc_dim, info.num_categories) if info.num_categories > 0 else None
        self.id_head = nn.Linear(cfg.fc_dim, info.num_products)

    def image_features(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] -> fc7 features [N, fc_dim] (after ReLU, averaged over the fc map)."""
        x = self.encoder.pre_logits(self.encoder.features(images))
        return x.mean(dim=(2, 3))

    def clip_features(self, batch: dict[str, Any]) -> Tensor:
        frames, mask = select_frames(batch["frames"], batch["frame_mask"], self.cfg.num_frames, self.training)
        return masked_mean(self.image_features(frames.flatten(0, 1)).unflatten(0, frames.shape[:2]), mask)

    def clip_and_image_features(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Training: clip and shop-image features from one VGG call (shared BatchNorm statistics,
        :func:`methods.frames.frames_and_images`)."""
        frames, mask = select_frames(batch["frames"], batch["frame_mask"], self.cfg.num_frames, self.training)
        feats, image = frames_and_images(self.image_features, frames, batch["image"])
        return masked_mean(feats, mask), image

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.clip_features(batch))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.image_features(batch["image"]))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        clip, image = self.clip_and_image_features(batch)
        product = batch["product"]
        both = torch.cat([clip, image])
        triplet = cross_domain_triplet(clip, image, product, self.cfg.triplet_margin, self.cfg.triplet_mining)
        losses = {
            "triplet": self.cfg.triplet_weight * triplet,
            "id": self.cfg.id_weight * F.cross_entropy(self.id_head(both), torch.cat([product, product])),
        }
        if self.category_head is not None:
            category = torch.cat([batch["category"], batch["category"]])
            known = category >= 0
            if bool(known.any()):
                cat_loss = F.cross_entropy(self.category_head(both[known]), category[known])
            else:
                cat_loss = both.sum() * 0.0
            losses["category"] = self.cfg.category_weight * cat_loss
        return losses
