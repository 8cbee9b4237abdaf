"""``mgh``: Multi-Granular Hypergraph learning for video-to-shop retrieval.

Paper: Y. Yan, J. Qin, J. Chen, L. Liu, F. Zhu, Y. Tai, L. Shao, "Learning Multi-Granular
Hypergraphs for Video-Based Person Re-Identification", CVPR 2020 (arXiv 2104.14913).
Official code: https://github.com/daodaofr/hypergraph_reid
(``models/ResNet_hypergraphsage_part.py``, ``models/resnet.py``, ``main_video_person_reid_hypergraphsage_part.py``).

Kept from the official code:
  * ResNet-50 (ImageNet init), last stride 1, with per-frame embedded-Gaussian non-local blocks
    (phi/g max-pooled 2x2) after every second bottleneck of layer2 and layer3 (blocks 1, 3 and
    1, 3, 5: the code's ``ResNetNonLocal``);
  * a global branch (spatial + temporal average pool, L2-normalised, ReLU, BatchNorm: 2048-d)
    and part branches with p = 2, 4, 8 horizontal stripes per frame, giving T*p nodes each;
  * per part branch two neighbourhood-aggregation (hypergraph propagation) layers: a node's
    hyperedge holds its top-3 cosine neighbours (itself included, i.e. 2 others) among the
    nodes of frames within a temporal range; the layer outputs concat(W_x x, W_n mean(neighbours))
    -> L2 norm -> ReLU -> BatchNorm, hidden size 512. The released model has one range, +-3
    frames (``BatchedGraphSAGEDynamicRangeMean1``, 1024-d per layer: ``windows=(3,)``);
  * the paper's temporal granularities, hyperedges over several temporal ranges, are the
    ``paper`` profile's ``windows=(1, 2, 3)``: one hyperedge per range, and the layer outputs
    concat(W_x x, W_n m_1, W_n m_2, W_n m_3) (shared W_n, (1 + 3) x 512 = 2048-d), the layout of
    the released code's commented-out multi-range variant (``BatchedGraphSAGEMean1Temporal`` with
    ``build_adj_full_d`` ranges 1, 2, 3 and its ``bnneck`` of 2048 + 3 x 4 x 512). That variant
    takes every node of the frames in range as the neighbours; here they are the top-3 by cosine
    within the range, as the released model picks them. The paper's own rule for combining a
    node's hyperedges could not be read here; this follows the code;
  * the concatenation [global, p=2, p=4, p=8] (pre-BN; 5120-d with one range, 8192-d with
    three) for the triplet loss, a BNNeck,
    one ID classifier per branch on its slice of the BNNeck feature (N(0, 0.001) init, with
    bias); loss = sum over branches of label-smoothed (0.1) cross-entropy + batch-hard
    triplet (margin 0.3); the BNNeck feature is the test embedding; 8 frames per clip;
    Adam at lr 3e-4, weight decay 5e-4 in the ``paper`` profile (our engine: AdamW +
    warmup/cosine).

Implemented from the paper because the released code lacks them:
  * attentive node pooling: a branch's graph-level feature is the softmax-attention-weighted
    sum of its nodes (a learnt linear score per node, softmax over the branch's T*p nodes),
    which the paper uses to down-weight occluded or misaligned parts; the code averages;
  * mutual-information minimisation between the graph-level features of different spatial
    granularities, so that the branches carry complementary information. The MI of every
    pair of part branches is estimated with the Jensen-Shannon lower bound of Deep InfoMax
    (Hjelm et al., ICLR 2019): a bilinear critic scores matched (same sample) against
    mismatched (other samples in the batch) pairs. The critic maximises the bound while the
    network minimises it, through a gradient-reversal layer, so one summed loss trains both.
    The exact estimator, critic and loss weight of the paper could not be read here (no
    network access to the paper's text); these are our choices, and ``mi_weight=0`` /
    ``pooling="mean"`` recover the released code's model.
    Measured against the released model in ``docs/baselines.md``.

Adaptations to video-to-shop retrieval:
  * Identities are products (``batch["product"]``). A shop image is a one-frame clip through
    the same network (shared weights, as re-id shares one network for query and gallery
    tracklets): T = 1 gives p nodes per part graph, whose +-3-frame window is the image itself,
    so a stripe's neighbours are the other stripes of the image (p = 2: the single other one).
    In ``tiny`` the two sides keep their own BatchNorm statistics (below).
  * Each batch holds B (clip, image) pairs; losses run over the 2B embeddings with product
    labels, so each anchor's positive is its cross-domain counterpart.
  * Frames: chunk sampling of the real frames (``methods.frames``, STE-NVAN's rule, as for
    ``nvan``): a random frame per chunk in training, the first at test. MGH's own code samples 8
    consecutive frames in training and averages over all 8-frame chunks at test (``video_loader.py``
    ``random`` / ``dense``); not implemented, a departure that stands.
  * Stripes come from adaptive average pooling, since 224 px gives 14 rows, which 8 does not
    divide (the code's fixed kernel assumes divisibility).

``tiny`` profile (2-core CPU): random-init ResNet-18 layout at half width (32..256 channels,
non-local after block 1 of layer2 and of layer3: every second block), last stride 1 at 112 px
(7 rows, so parts p = 2, 4, 7: the finest granularity is one row), hidden 64, 4 frames chunked
by STE-NVAN's rule as in ``paper``, one temporal range (the released model's ``windows=(3,)``:
the paper's three ranges measured no better at this scale, ``docs/baselines.md``).

BatchNorm statistics (tiny, ``domain_batchnorm=True``): clips and shop images pass through the
network in two calls (see ``docs/baselines.md``, NVAN, for why that costs retrieval with one shared
BatchNorm), and MGH gets the same treatment as NVAN and AsymNet, so that the baselines differ in
their method and not in this: one set of running statistics per side in the trunk, the
non-local blocks, the global branch's BatchNorm and the graph layers (shared affine weights,
``methods.domain_norm``); the BNNeck, which training runs on both sides at once, stays shared.
The runs are in ``docs/baselines.md``. ``paper`` keeps one shared network (``--set
domain_batchnorm=true`` turns it on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneConfig,
    create_backbone,
    resnet_out_channels,
    resnet_stages,
    resnet_stem,
    set_last_stride,
)
from methods.base import DataInfo, Encoded, Method
from methods.domain_norm import FRAME, SHOP, SIDES, batchnorm_domain, convert_domain_batchnorm
from methods.frames import select_frames
from methods.losses import batch_hard_triplet, label_smoothed_ce
from methods.nonlocal_blocks import BNNeck, NonLocalBlock, frames_to_volume, id_classifier, volume_to_frames


@dataclass(frozen=True)
class MGHConfig:
    encoder: BackboneConfig = field(default_factory=BackboneConfig)
    last_stride: int = 1
    nonlocal_blocks: bool = True  # per-frame non-local after every second block of layer2/3
    parts: tuple[int, ...] = (2, 4, 8)
    hidden: int = 512
    knn: int = 3  # hyperedge size: the node and its 2 nearest neighbours
    # temporal ranges: one hyperedge per range, its neighbours from frames within +-range.
    # (1, 2, 3): the paper's multiple temporal granularities (the released code's commented-out
    # BatchedGraphSAGEMean1Temporal, ranges 1, 2, 3); (3,): the released model's single range
    windows: tuple[int, ...] = (1, 2, 3)
    layers: int = 2
    pooling: str = "attention"  # "attention" (paper) | "mean" (released code)
    num_frames: int = 8
    # chunking of the real frames into num_frames (``methods.frames``): "ste-nvan" = STE-NVAN's
    # util/utils.py rule (both profiles); "equal" = methods.frames' other rule
    frame_chunks: str = "ste-nvan"
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    mi_weight: float = 0.1  # 0 = the released code (no MI term)
    # one set of BatchNorm statistics per side (clip frames, shop images) everywhere but the
    # BNNeck (``methods.domain_norm``; see the docstring)
    domain_batchnorm: bool = False


PAPER = MGHConfig(
    encoder=BackboneConfig(name="resnet50", pretrained="tv_in1k", input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
)
TINY = MGHConfig(
    encoder=BackboneConfig(name="resnet18", pretrained=None, channels=(32, 64, 128, 256)),
    parts=(2, 4, 7),
    hidden=64,
    windows=(3,),  # the released model's single range
    num_frames=4,
    domain_batchnorm=True,
)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: D401
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def grad_reverse(x: Tensor) -> Tensor:
    """Identity forward, negated gradient backward."""
    return _GradReverse.apply(x)


def temporal_neighbour_mask(frames: int, parts: int, window: int, device: torch.device) -> Tensor:
    """Bool [N, N] (N = frames * parts, frame-major): j may be a neighbour of i (|t_i - t_j| <=
    window, j != i)."""
    t = torch.arange(frames * parts, device=device) // parts
    near = (t[:, None] - t[None, :]).abs() <= window
    return near & ~torch.eye(frames * parts, dtype=torch.bool, device=device)


class HypergraphLayer(nn.Module):
    """One propagation layer: for each temporal range, a node's hyperedge is itself and its
    top-(``knn`` - 1) cosine neighbours among the nodes of frames within +-range; the layer
    outputs BN(ReLU(L2(concat(W_x x, W_n m_1, ..., W_n m_R)))), m_r the mean of range r's
    neighbours (``W_n`` shared across ranges, as the released code's multi-range variant)."""

    def __init__(self, in_dim: int, hidden: int, knn: int, windows: tuple[int, ...]) -> None:
        super().__init__()
        if not windows or min(windows) < 0:
            raise ValueError(f"mgh: windows must be one or more ranges >= 0, got {windows}")
        self.knn, self.windows = knn, tuple(windows)
        self.W_x = nn.Linear(in_dim, hidden)
        self.W_n = nn.Linear(in_dim, hidden)
        for lin in (self.W_x, self.W_n):
            nn.init.xavier_uniform_(lin.weight, gain=nn.init.calculate_gain("relu"))
            nn.init.zeros_(lin.bias)
        self.out_dim = (1 + len(self.windows)) * hidden
        self.bn = nn.BatchNorm1d(self.out_dim)

    def neighbour_mean(self, x: Tensor, frames: int, parts: int, window: int) -> Tensor:
        """[B, N, D] -> mean of each node's hyperedge neighbours within +-``window`` frames."""
        b, n, _ = x.shape
        allowed = temporal_neighbour_mask(frames, parts, window, x.device)
        k = min(self.knn - 1, int(allowed.sum(1).min()))
        if k <= 0:  # a single node: no neighbour
            return torch.zeros_like(x)
        xn = F.normalize(x, dim=-1)
        sim = (xn @ xn.transpose(1, 2)).masked_fill(~allowed, float("-inf"))
        idx = sim.topk(k, dim=-1).indices  # [B, N, k]
        neigh = torch.gather(
            x.unsqueeze(1).expand(b, n, n, x.shape[-1]), 2, idx.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1])
        )
        return neigh.mean(2)

    def forward(self, x: Tensor, frames: int, parts: int) -> Tensor:
        h = torch.cat(
            [self.W_x(x)] + [self.W_n(self.neighbour_mean(x, frames, parts, w)) for w in self.windows], dim=-1
        )
        h = F.relu(F.normalize(h, dim=-1))
        return self.bn(h.transpose(1, 2)).transpose(1, 2)


class PartBranch(nn.Module):
    """p horizontal stripes per frame -> T*p nodes -> propagation layers -> pooled feature."""

    def __init__(self, in_dim: int, parts: int, cfg: MGHConfig) -> None:
        super().__init__()
        self.parts = parts
        width = (1 + len(cfg.windows)) * cfg.hidden
        dims = [in_dim] + [width] * cfg.layers
        self.layers = nn.ModuleList(
            HypergraphLayer(dims[i], cfg.hidden, cfg.knn, cfg.windows) for i in range(cfg.layers)
        )
        self.pooling = cfg.pooling
        if cfg.pooling == "attention":
            self.attn = nn.Linear(width, 1)
        elif cfg.pooling != "mean":
            raise ValueError(f"mgh: pooling must be 'attention' or 'mean', got {cfg.pooling!r}")
        self.out_dim = width

    def forward(self, fmap: Tensor, b: int, t: int) -> Tensor:
        stripes = F.adaptive_avg_pool2d(fmap, (self.parts, 1)).flatten(2)  # [B*T, C, p]
        nodes = stripes.transpose(1, 2).reshape(b, t * self.parts, -1)
        for layer in self.layers:
            nodes = layer(nodes, t, self.parts)
        if self.pooling == "mean":
            return nodes.mean(1)
        weights = torch.softmax(self.attn(nodes).squeeze(-1), dim=1)
        return (weights.unsqueeze(-1) * nodes).sum(1)


class BilinearCritic(nn.Module):
    """T(a, b) = a^T W b for every (a_i, b_j) of a batch: [N, N] scores."""

    def __init__(self, dim_a: int, dim_b: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim_a, dim_b) / (dim_a * dim_b) ** 0.5)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ self.W @ b.t()


def jsd_mutual_information(scores: Tensor) -> Tensor:
    """Deep InfoMax's Jensen-Shannon MI estimate from critic scores [N, N]: matched pairs on
    the diagonal, mismatched pairs off it; shifted by log 4 so that a critic that cannot tell
    them apart (all scores 0) reads 0."""
    n = scores.shape[0]
    if n < 2:
        return scores.sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    pos = -F.softplus(-scores[eye]).mean()
    neg = F.softplus(scores[~eye]).mean()
    return pos - neg + math.log(4.0)


@METHODS.register(
    "mgh", description="MGH (CVPR 2020): ResNet-50 + multi-granular hypergraphs, attention pooling, MI minimisation"
)
class MGH(Method):
    """Global + part-hypergraph branches over frame stripes; BNNeck; per-branch ID heads."""

    Config = MGHConfig
    # the paper profile's optimiser settings from the paper (see above); --lr-encoder etc. override them
    TRAIN_RECIPE = {"paper": {"lr_encoder": 3e-4, "lr_new": 3e-4, "weight_decay": 5e-4}}
    PROFILES = {"paper": PAPER, "tiny": TINY}

    def __init__(self, cfg: MGHConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.encoder = create_backbone(cfg.encoder)
        set_last_stride(self.encoder, cfg.last_stride)
        self.nl_at: dict[int, list[int]] = {}
        blocks: dict[str, nn.ModuleList] = {}
        if cfg.nonlocal_blocks:
            for s in (1, 2):
                stage = resnet_stages(self.encoder)[s]
                at = [i for i in range(len(stage)) if i % 2 == 1]
                width = [
                    m for n_, m in stage[-1].named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n_
                ][-1].out_channels
                self.nl_at[s] = at
                blocks[str(s)] = nn.ModuleList(NonLocalBlock(int(width), sub_sample=True) for _ in at)
        self.nonlocal_blocks = nn.ModuleDict(blocks)
        dim = resnet_out_channels(self.encoder)
        self.global_bn = nn.BatchNorm1d(dim)
        self.branches = nn.ModuleList(PartBranch(dim, p, cfg) for p in cfg.parts)
        self.dims = [dim] + [br.out_dim for br in self.branches]
        self.embed_dim = sum(self.dims)
        self.bnneck = BNNeck(self.embed_dim)
        self.classifiers = nn.ModuleList(id_classifier(d, info.num_products, bias=True) for d in self.dims)
        pairs = [(i, j) for i in range(len(self.branches)) for j in range(i + 1, len(self.branches))]
        self.mi_pairs = pairs
        self.critics = nn.ModuleList(
            BilinearCritic(self.branches[i].out_dim, self.branches[j].out_dim) for i, j in pairs
        )
        if cfg.domain_batchnorm:
            convert_domain_batchnorm(self, SIDES, exclude=(self.bnneck,))

    # --- network ---------------------------------------------------------------------
    def trunk(self, clips: Tensor) -> Tensor:
        """[N, T, 3, H, W] -> per-frame maps [N*T, C, h, w]; non-local blocks work per frame."""
        x = resnet_stem(self.encoder, clips.flatten(0, 1))
        for s, stage in enumerate(resnet_stages(self.encoder)):
            at = self.nl_at.get(s, [])
            for i, block in enumerate(stage):
                x = block(x)
                if i in at:
                    x = volume_to_frames(self.nonlocal_blocks[str(s)][at.index(i)](frames_to_volume(x, 1)))
        return x

    def branch_features(self, clips: Tensor) -> list[Tensor]:
        """Pre-BNNeck features of each branch: [global, part p for p in parts]."""
        b, t = clips.shape[:2]
        fmap = self.trunk(clips)
        g = fmap.view(b, t, *fmap.shape[1:]).mean(dim=(1, 3, 4))
        g = self.global_bn(F.relu(F.normalize(g, dim=-1)))
        return [g] + [branch(fmap, b, t) for branch in self.branches]

    def _clip_branches(self, batch: dict[str, Any]) -> list[Tensor]:
        frames, _ = select_frames(
            batch["frames"], batch["frame_mask"], self.cfg.num_frames, self.training, rule=self.cfg.frame_chunks
        )
        with batchnorm_domain(self, FRAME):
            return self.branch_features(frames)

    def _image_branches(self, batch: dict[str, Any]) -> list[Tensor]:
        with batchnorm_domain(self, SHOP):
            return self.branch_features(batch["image"].unsqueeze(1))

    # --- contract --------------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.bnneck(torch.cat(self._clip_branches(batch), dim=1)))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.bnneck(torch.cat(self._image_branches(batch), dim=1)))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        clip, image = self._clip_branches(batch), self._image_branches(batch)
        branches = [torch.cat([c, i]) for c, i in zip(clip, image)]
        labels = torch.cat([batch["product"], batch["product"]])
        feat = torch.cat(branches, dim=1)
        slices = torch.split(self.bnneck(feat), self.dims, dim=1)
        xent = sum(
            label_smoothed_ce(fc(s), labels, self.cfg.label_smoothing) for fc, s in zip(self.classifiers, slices)
        )
        losses = {"id": xent, "triplet": batch_hard_triplet(feat, labels, margin=self.cfg.triplet_margin)}
        if self.cfg.mi_weight > 0 and self.mi_pairs:
            parts = [grad_reverse(f) for f in branches[1:]]
            mi = sum(
                jsd_mutual_information(critic(parts[i], parts[j]))
                for critic, (i, j) in zip(self.critics, self.mi_pairs)
            )
            # the critic ascends the MI bound, the network (through the reversal) descends it
            losses["mi"] = -self.cfg.mi_weight * mi
        return losses
