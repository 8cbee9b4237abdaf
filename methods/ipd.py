"""Intent-product detection (IPD): boxes -> patch keep-masks, and the two box detectors.

RICE (Yang et al., ICCV 2023) restricts attention to the intent product: each frame's box
becomes a ``grid x grid`` patch mask (a patch is kept when the IoU between its cell and the
box reaches a threshold, 0.02 in the paper; if no patch is kept, all are; the CLS token is
always kept), which serves as a key-padding mask in the encoder and in the matching decoder.

The official code (deepalchemist/crossview-semantic-alignment) ships no detector, so the two
described by the paper are built here on the shared encoder's last-layer tokens:

* :class:`SetDetector` with ``temporal_layers=0``: a single-frame DETR-style set predictor
  (Carion et al., ECCV 2020): a few learned queries, a transformer decoder over one frame's
  tokens, an object/no-object head and a box head (sigmoid ``cx, cy, w, h``), trained with
  Hungarian matching and CE + L1 + GIoU losses; with one target per frame the matching is the
  query of least cost (:func:`match_single_target`, equal to ``scipy.optimize.linear_sum_assignment``'s)
  (DETR's costs and weights 1 / 5 / 2, no-object weight 0.1). Scaled down from DETR: one
  intent product per frame, so 4 queries and 2 decoder layers instead of 100 and 6, and no
  auxiliary decoding losses.
* the same with ``temporal_layers > 0``: the multi-frame detector, where a temporal
  transformer (attention over the frames, for each token position, with a learned temporal
  position embedding and padded frames masked) runs before the same decoder and heads.

Boxes are ``x1, y1, x2, y2`` in ``[0, 1]`` of the transformed frame (the batch format).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


# --- boxes -> patch keep-mask -----------------------------------------------------------
def patch_cells(grid: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``grid**2`` patch cells as xyxy boxes in [0, 1], row-major (ViT token order)."""
    step = 1.0 / grid
    ys, xs = torch.meshgrid(torch.arange(grid, device=device), torch.arange(grid, device=device), indexing="ij")
    x1, y1 = xs.flatten() * step, ys.flatten() * step
    return torch.stack([x1, y1, x1 + step, y1 + step], dim=-1).float()


def cell_box_iou(boxes: Tensor, grid: int) -> Tensor:
    """IoU between each box ``[..., 4]`` and every patch cell: ``[..., grid**2]``."""
    cells = patch_cells(grid, boxes.device).to(boxes.dtype)
    b = boxes.unsqueeze(-2)  # [..., 1, 4]
    iw = (torch.minimum(b[..., 2], cells[:, 2]) - torch.maximum(b[..., 0], cells[:, 0])).clamp_min(0)
    ih = (torch.minimum(b[..., 3], cells[:, 3]) - torch.maximum(b[..., 1], cells[:, 1])).clamp_min(0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    area_c = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    return inter / (area_b + area_c - inter).clamp_min(1e-12)


def boxes_to_patch_keep(boxes: Tensor, has_box: Tensor, grid: int, threshold: float = 0.02) -> Tensor:
    """Token keep-mask ``[..., 1 + grid**2]`` from boxes ``[..., 4]`` and ``has_box`` ``[...]``.

    A patch is kept when IoU(cell, box) >= ``threshold``; a frame without a box, or whose
    box keeps no patch, keeps every patch; the CLS token (index 0) is always kept.
    """
    keep_patch = cell_box_iou(boxes.float(), grid) >= threshold
    keep_patch = keep_patch & has_box.unsqueeze(-1)
    empty = ~keep_patch.any(dim=-1, keepdim=True)
    keep_patch = keep_patch | empty
    cls = torch.ones((*keep_patch.shape[:-1], 1), dtype=torch.bool, device=keep_patch.device)
    return torch.cat([cls, keep_patch], dim=-1)


# --- the set-prediction detector ----------------------------------------------------------
class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, layers: int) -> None:
        super().__init__()
        dims = [dim] + [hidden] * (layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SetDetector(nn.Module):
    """DETR-style intent-product detector over encoder tokens (multi-frame if ``temporal_layers``).

    ``forward(tokens [B, T, L, W], frame_mask [B, T])`` returns object logits ``[B, T, Q, 2]``
    (class 0 = intent product, 1 = no object) and boxes ``[B, T, Q, 4]`` (cxcywh in [0, 1]).
    """

    def __init__(
        self,
        width: int,
        num_tokens: int,
        max_frames: int,
        dim: int = 256,
        queries: int = 4,
        layers: int = 2,
        heads: int = 8,
        temporal_layers: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_proj = nn.Linear(width, dim)
        self.token_pos = nn.Parameter(torch.zeros(num_tokens, dim))
        nn.init.normal_(self.token_pos, std=0.02)
        self.temporal: Optional[nn.TransformerEncoder] = None
        if temporal_layers > 0:
            self.time_pos = nn.Parameter(torch.zeros(max_frames, dim))
            nn.init.normal_(self.time_pos, std=0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True)
            self.temporal = nn.TransformerEncoder(layer, temporal_layers, enable_nested_tensor=False)
        self.query_embed = nn.Embedding(queries, dim)
        dec = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(dec, layers)
        self.class_head = nn.Linear(dim, 2)
        self.box_head = _MLP(dim, dim, 4, 3)

    @property
    def multi_frame(self) -> bool:
        return self.temporal is not None

    def forward(
        self, tokens: Tensor, frame_mask: Tensor, first_frame: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        """``first_frame`` [B]: where a window of the clip starts (temporal positions); default 0."""
        b, t, length, _ = tokens.shape
        x = self.input_proj(tokens) + self.token_pos[:length]
        if self.temporal is not None:
            start = first_frame if first_frame is not None else torch.zeros(b, dtype=torch.long, device=x.device)
            pos = start[:, None] + torch.arange(t, device=x.device)
            limit = self.time_pos.shape[0]
            if t > limit or (pos.device.type == "cpu" and int(pos.max()) >= limit):  # a read is free on the CPU
                raise ValueError(
                    f"multi-frame detector built for {limit} frames, got frame {max(t - 1, int(pos.max()))}"
                )
            if pos.device.type != "cpu":  # checked on the device, without making the host wait
                torch._assert_async(pos.max() < limit, "multi-frame detector: a frame position beyond num_frames")
            x = x + self.time_pos[pos][:, :, None, :]
            seq = x.permute(0, 2, 1, 3).reshape(b * length, t, -1)  # attention over frames per position
            pad = ~frame_mask.bool()
            pad = pad & pad.sum(1, keepdim=True).lt(t)  # an all-padding clip attends to itself
            pad = pad.repeat_interleave(length, dim=0)
            seq = self.temporal(seq, src_key_padding_mask=pad)
            x = seq.view(b, length, t, -1).permute(0, 2, 1, 3)
        memory = x.reshape(b * t, length, -1)
        query = self.query_embed.weight.unsqueeze(0).expand(b * t, -1, -1)
        h = self.decoder(query, memory)
        logits = self.class_head(h).view(b, t, -1, 2)
        boxes = self.box_head(h).sigmoid().view(b, t, -1, 4)
        return logits, boxes


# --- matching and losses ------------------------------------------------------------------
@torch.no_grad()
def hungarian_match(
    logits: Tensor,
    boxes: Tensor,
    targets: list[Tensor],
    cost_class: float = 1.0,
    cost_l1: float = 5.0,
    cost_giou: float = 2.0,
) -> list[tuple[Tensor, Tensor]]:
    """DETR's matcher: per image, (query indices, target indices) minimising the cost.

    ``logits`` [N, Q, 2], ``boxes`` [N, Q, 4] cxcywh, ``targets`` N tensors [n_i, 4] cxcywh.
    Cost = -cost_class * p(object) + cost_l1 * L1 + cost_giou * (-GIoU).
    """
    prob = logits.float().softmax(-1)[..., 0]
    out = []
    for i, tgt in enumerate(targets):
        if tgt.numel() == 0:
            empty = torch.empty(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        pred = boxes[i].float()
        c_l1 = torch.cdist(pred, tgt.float(), p=1)
        c_giou = -generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt.float(), "cxcywh", "xyxy"))
        cost = cost_l1 * c_l1 + cost_giou * c_giou - cost_class * prob[i].unsqueeze(1)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return out


def paired_giou(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of aligned xyxy boxes ``a[i]``, ``b[i]`` (``[..., 4]``): torchvision's
    ``generalized_box_iou`` formula, elementwise instead of all pairs."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - inter
    iou = inter / union
    lt_c, rb_c = torch.minimum(a[..., :2], b[..., :2]), torch.maximum(a[..., 2:], b[..., 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    area_c = wh_c[..., 0] * wh_c[..., 1]
    return iou - (area_c - union) / area_c


@torch.no_grad()
def match_single_target(
    logits: Tensor, boxes: Tensor, target: Tensor, cost_class: float = 1.0, cost_l1: float = 5.0, cost_giou: float = 2.0
) -> Tensor:
    """DETR's matcher when every frame has one target: the query of least cost, ``[N]``.

    ``logits`` [N, Q, 2], ``boxes`` [N, Q, 4] cxcywh, ``target`` [N, 4] cxcywh. With one
    target the optimal assignment is the argmin over the queries of the same cost as
    :func:`hungarian_match` (``tests/test_ipd.py`` checks it against scipy's); one batched
    computation on the device, no host sync.
    """
    prob = logits.float().softmax(-1)[..., 0]
    pred, tgt = boxes.float(), target.float()[:, None, :].expand_as(boxes)
    c_l1 = (pred - tgt).abs().sum(-1)
    c_giou = -paired_giou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    return (cost_l1 * c_l1 + cost_giou * c_giou - cost_class * prob).argmin(dim=1)


def detection_loss(
    logits: Tensor,
    boxes: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    w_class: float = 1.0,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
    eos_coef: float = 0.1,
) -> dict[str, Tensor]:
    """DETR set loss on the frames that carry a ground-truth box (one intent product each).

    ``logits`` [B, T, Q, 2], ``boxes`` [B, T, Q, 4] cxcywh; ``gt_boxes`` [B, T, 4] xyxy in
    [0, 1]; ``gt_valid`` [B, T]. Frames without a label are left out (unknown, not "empty").
    Returns ``class``, ``l1``, ``giou`` (already weighted); zeros when no frame has a label.
    Every frame is matched and scored, and the unlabelled ones are weighted out, so nothing
    waits for the host (no boolean indexing, no per-frame matcher); the sums equal those
    over the labelled frames alone up to float summation order. Every parameter of the
    class and box heads takes part (with zero weight when no frame has a label), so DDP
    needs no search for unused parameters.
    """
    flat_logits, flat_boxes = logits.flatten(0, 1).float(), boxes.flatten(0, 1).float()
    valid = gt_valid.flatten().to(flat_logits.dtype)
    tgt = box_convert(gt_boxes.flatten(0, 1).float().clamp(0, 1), "xyxy", "cxcywh")
    qry = match_single_target(flat_logits, flat_boxes, tgt, w_class, w_l1, w_giou)
    labels = torch.ones(flat_logits.shape[:2], dtype=torch.long, device=flat_logits.device)
    labels.scatter_(1, qry[:, None], 0)
    weight = torch.tensor([1.0, eos_coef], device=flat_logits.device, dtype=torch.float32)
    ce = F.cross_entropy(flat_logits.transpose(1, 2), labels, reduction="none")  # [N, Q]
    w = weight[labels] * valid[:, None]
    loss_ce = (ce * w).sum() / w.sum().clamp_min(1e-12)
    pred = flat_boxes.gather(1, qry[:, None, None].expand(-1, 1, 4)).squeeze(1)
    n = valid.sum().clamp_min(1.0)
    loss_l1 = ((pred - tgt).abs().sum(-1) * valid).sum() / n
    giou = paired_giou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    loss_giou = ((1 - giou) * valid).sum() / n
    return {"class": w_class * loss_ce, "l1": w_l1 * loss_l1, "giou": w_giou * loss_giou}


@torch.no_grad()
def predict_boxes(logits: Tensor, boxes: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Best query per frame: boxes ``[B, T, 4]`` xyxy in [0, 1] and ``found`` ``[B, T]``.

    ``found`` is False when the best query's object probability is below ``threshold``.
    """
    prob = logits.float().softmax(-1)[..., 0]
    best_p, best = prob.max(dim=-1)
    picked = torch.gather(boxes.float(), 2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(2)
    xyxy = box_convert(picked, "cxcywh", "xyxy").clamp(0, 1)
    return xyxy, best_p >= threshold
