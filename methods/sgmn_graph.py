"""SGMN's graph-based cross-domain interaction (GCI) and its distance-weighted triplet loss.

Facts from the official code (Huxiaowan/SGMN, ``modules/graph_loss.py``, ``modules/mca.py``),
used by :mod:`methods.sgmn` in training only (SGMN ranks with its global embeddings alone):

* Nodes are the batch's videos and images (2B nodes, embeddings L2-normalised).
* Connection (which edges exist, no gradient): each video keeps the edges to the top half of
  the batch under the video-image similarity, for video-video edges ("i2i") as for
  image-image ones ("t2t", the official code ranks both with the cross-domain similarity, as
  here); video-image edges keep the top half under the frame-level matching mean.
* Relevance (edge weights): ``exp(-||x - y||)`` within a domain; across domains, frame-level
  matching: the cosine of the image with each frame (leaky ReLU 0.1), SCAN-normalised, top-K
  frames through a small MLP (K -> K -> 1) plus the mean as a residual, one MLP per direction.
  The official code feeds the image as K identical "words"; over identical words SCAN's
  normalisation reduces to ``x / (sqrt(K) |x|)``, computed here in closed form. Frame
  embeddings reach the matching detached.
* Instance-level interaction: one post-norm transformer encoder layer (16 heads, feed-forward
  width = embedding width, dropout 0.1) over the 2B nodes, relevance added to the attention
  logits and -inf where there is no edge.
* Losses: ``base`` = triplet(video, image); ``gnn`` = triplet(video, image') +
  triplet(video', image) + triplet(video', image') on the interacted, re-normalised embeddings;
  ``reg`` = 10 x KL between the softmax of the learnt video-image relevance and that of
  ``exp(-cdist)`` of the embeddings (detached), both directions.
* Triplet: distance-weighted negative sampling (Wu et al., ICCV 2017: distances clamped at 0.5,
  weights from the distance density on the unit sphere of the embedding dimension, none beyond
  1.7), margin 0.2 on cosine similarities, summed over anchors in both directions.

Departure: positives and negatives come from the product labels when given (a second clip of
the same product in the batch is not a negative); the official code uses the batch index.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def distance_weighted_triplet(
    sim: Tensor,
    labels_row: Tensor,
    labels_col: Tensor,
    margin: float = 0.2,
    dim: int = 512,
    cut_off: float = 0.5,
    nonzero_cutoff: float = 1.7,
) -> Tensor:
    """Triplet loss on a similarity matrix [R, C] of L2-normalised embeddings, both directions.

    For every (anchor, positive) pair a negative is drawn with probability proportional to the
    inverse of the distance density in ``dim`` dimensions (far-but-not-too-far negatives). The
    hinge ``relu(margin + s_an - s_ap)`` is summed over pairs, as in the official code.
    """
    sim = sim.float()
    pos = labels_row[:, None] == labels_col[None, :]
    return _one_direction(sim, pos, margin, dim, cut_off, nonzero_cutoff) + _one_direction(
        sim.t(), pos.t(), margin, dim, cut_off, nonzero_cutoff
    )


def _one_direction(sim: Tensor, pos: Tensor, margin: float, dim: int, cut_off: float, nonzero_cutoff: float) -> Tensor:
    neg = ~pos
    anchor, positive = pos.nonzero(as_tuple=True)
    with torch.no_grad():
        dist = (2 - 2 * sim).clamp_min(0).sqrt().clamp_min(cut_off)
        log_w = (2.0 - dim) * dist.log() - ((dim - 3.0) / 2.0) * (1.0 - 0.25 * dist * dist).clamp_min(1e-12).log()
        log_w = torch.where(neg & torch.isfinite(log_w), log_w, torch.zeros_like(log_w))
        w = (log_w - log_w.max(dim=1, keepdim=True).values).exp() * (neg & (dist < nonzero_cutoff)).float()
        w = w[anchor]
        ok = w.sum(1) > 0
    if not bool(ok.any()):
        return sim.sum() * 0.0
    anchor, positive, w = anchor[ok], positive[ok], w[ok]
    negative = torch.multinomial(w / w.sum(1, keepdim=True), 1).squeeze(1)
    return F.relu(margin + sim[anchor, negative] - sim[anchor, positive]).sum()


class FrameLevelMatching(nn.Module):
    """Learnt video-image relevance from frame-level matching (official ``AdjacencyLearning``)."""

    def __init__(self, topk: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.topk = topk

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(topk, topk), nn.ReLU(), nn.Dropout(dropout), nn.Linear(topk, 1))

        self.mlp_image_to_video = mlp()  # official mlp_t2i: rows are images
        self.mlp_video_to_image = mlp()  # official mlp_i2t: rows are videos

    def forward(self, frames: Tensor, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``frames`` [V, T, D], ``images`` [I, D] (both L2-normalised) ->
        relevance image->video [I, V], video->image [V, I], and their matching means."""
        k = self.topk
        # s[i, v, t]: image i against frame t of video v
        s = F.leaky_relu(torch.einsum("id,vtd->ivt", images, frames), negative_slope=0.1)
        # image "words" are K copies of the image: normalising over them gives s / (sqrt(K) |s|)
        per_word = s / (math.sqrt(k) * s.abs()).clamp_min(1e-12)
        i2v_score = per_word.max(dim=2).values  # [I, V], the same for every word
        i2v_mean = i2v_score
        i2v_top = i2v_score[..., None].expand(*i2v_score.shape, k)
        # per frame, normalised over the frames of the video
        per_frame = F.normalize(s, dim=2)
        v2i_mean = per_frame.mean(dim=2).t()  # [V, I]
        v2i_top = per_frame.topk(k, dim=2).values.transpose(0, 1)  # [V, I, K]
        i2v = self.mlp_image_to_video(i2v_top).squeeze(-1) + i2v_mean
        v2i = self.mlp_video_to_image(v2i_top).squeeze(-1) + v2i_mean
        return i2v, v2i, i2v_mean, v2i_mean


def _top_fraction(x: Tensor, fraction: float) -> Tensor:
    """Per row, True for entries at least as large as the row's ``int(n * fraction)``-th largest."""
    k = max(1, int(x.shape[1] * fraction))
    return x >= x.topk(k, dim=1).values[:, -1:]


def _kl(target: Tensor, learnt: Tensor, temperature: float = 1.0) -> Tensor:
    """The official ``kl_div(log_softmax(target), softmax(learnt))``: KL(learnt || target)."""
    return (
        F.kl_div(F.log_softmax(target / temperature, -1), F.softmax(learnt / temperature, -1), reduction="batchmean")
        * temperature**2
    )


class GraphInteraction(nn.Module):
    """GCI: video/image/video-image graph over the batch, a graph transformer layer, its losses."""

    def __init__(
        self,
        dim: int,
        topk: int,
        heads: int = 16,
        threshold: float = 0.5,
        sigma: float = 1.0,
        dropout: float = 0.1,
        margin: float = 0.2,
        w_reg: float = 10.0,
    ) -> None:
        super().__init__()
        self.dim, self.threshold, self.sigma, self.margin, self.w_reg = dim, threshold, sigma, margin, w_reg
        self.matching = FrameLevelMatching(topk)
        self.gnn = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout)

    def adjacency(self, video: Tensor, image: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Additive attention mask [2B, 2B] (relevance, -inf without an edge) and the reg loss."""
        with torch.no_grad():
            vv_connect = _top_fraction(video @ image.t(), self.threshold)
            ii_connect = _top_fraction(image @ video.t(), self.threshold)
        vv = torch.exp(-torch.cdist(video, video) / self.sigma)
        ii = torch.exp(-torch.cdist(image, image) / self.sigma)
        i2v, v2i, i2v_mean, v2i_mean = self.matching(frames.detach(), image.detach())
        iv_connect = _top_fraction(i2v_mean, self.threshold)
        vi_connect = _top_fraction(v2i_mean, self.threshold)
        target = torch.exp(-torch.cdist(video, image) / self.sigma).detach()
        reg = _kl(target, v2i) + _kl(target.t(), i2v)
        connect = torch.cat([torch.cat([vv_connect, vi_connect], 1), torch.cat([iv_connect, ii_connect], 1)], 0)
        relevance = torch.cat([torch.cat([vv, v2i], 1), torch.cat([i2v, ii], 1)], 0)
        return relevance.masked_fill(~connect, float("-inf")), reg

    def forward(
        self, video: Tensor, image: Tensor, frames: Tensor, labels: Optional[Tensor] = None
    ) -> dict[str, Tensor]:
        """``video``/``image`` [B, D] and ``frames`` [B, T, D], L2-normalised -> named losses."""
        b = video.shape[0]
        labels = labels if labels is not None else torch.arange(b, device=video.device)
        video, image, frames = video.float(), image.float(), frames.float()
        with torch.autocast(video.device.type, enabled=False):  # 2B nodes: float32 throughout
            mask, reg = self.adjacency(video, image, frames)
            nodes = torch.cat([video, image], 0)[:, None, :]  # a sequence of 2B nodes, batch of one
            out = F.normalize(self.gnn(nodes, src_mask=mask)[:, 0], dim=-1)
        video_g, image_g = out[:b], out[b:]

        def trip(v: Tensor, i: Tensor) -> Tensor:
            return distance_weighted_triplet(v @ i.t(), labels, labels, self.margin, self.dim)

        return {"gnn": trip(video, image_g) + trip(video_g, image) + trip(video_g, image_g), "reg": self.w_reg * reg}
