"""RICE's pairwise matching decoder (PMD), patch feature reconstruction (PFR) and negatives.

Facts from the paper (Yang et al., ICCV 2023) and the official code
(deepalchemist/crossview-semantic-alignment, ``mmf/models/rice``):

* PMD: the shop image's tokens are the queries; one self-attention layer, then one
  cross-attention layer whose keys/values are all tokens of all frames of the clip; both
  layers are CLIP blocks (pre-LN, MLP with the encoder's activation) initialised from the
  encoder's last two blocks (self <- second to last, cross <- last). Only the queries are
  layer-normed before the cross-attention; keys and values are the raw tokens. The pooler is
  LayerNorm -> token 0 -> Linear (no bias) -> ReLU; the matching logit is the cosine between
  the pooled vector and the weight of a bias-free ``Linear(width, 1)``, times 10.
* The cross-attention probabilities drop out at 0.1 (the self-attention does not).
* PFR: the cross-attention weights, heads stacked as channels and multiplied by
  ``sqrt(head_dim)`` as the official attention returns them, go through 1x1 convolutions
  ``heads -> heads/2 -> 1`` with a ReLU after each (weights initialised to 1, biases to 0),
  then a softmax over the keys; reconstruction = weights x video tokens (detached); MSE
  against the image tokens (detached).
* Negatives: for each image, the 3 videos (from every process) most similar to it under the
  ICL embeddings, excluding its own.

Differences (documented in ``methods/rice.py``): masked keys are excluded from PFR's softmax,
same-product videos can be excluded from the negatives, and the tiny profile compares
layer-normalised tokens in PFR (``pfr_loss(target="layernorm")``).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionLayer(nn.Module):
    """A pre-LN transformer layer (self- or cross-attention + MLP) copied from a CLIP block.

    ``heads`` may differ from the block's: the projection weights do not depend on it.
    """

    def __init__(self, block: nn.Module, heads: int, attn_dropout: float = 0.0, cross: bool = False) -> None:
        super().__init__()
        width = block.attn.embed_dim
        if width % heads:
            raise ValueError(f"PMD: width {width} is not divisible by {heads} heads")
        self.heads, self.cross, self.attn_dropout = heads, cross, attn_dropout
        self.ln_1 = copy.deepcopy(block.ln_1)
        self.in_proj_weight = nn.Parameter(block.attn.in_proj_weight.detach().clone())
        self.in_proj_bias = nn.Parameter(block.attn.in_proj_bias.detach().clone())
        self.out_proj = nn.Linear(width, width)
        self.out_proj.load_state_dict(block.attn.out_proj.state_dict())
        self.ls_1 = copy.deepcopy(block.ls_1)
        self.ln_2 = copy.deepcopy(block.ln_2)
        self.mlp = copy.deepcopy(block.mlp)
        self.ls_2 = copy.deepcopy(block.ls_2)

    @property
    def head_dim(self) -> int:
        return self.in_proj_weight.shape[1] // self.heads

    def forward(
        self,
        x: Tensor,
        key_keep: Tensor,
        kv: Optional[Tensor] = None,
        need_weights: bool = False,
        kv_index: Optional[Tensor] = None,
        kv_projected: Optional[tuple[Tensor, Tensor]] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """``x`` [P, Lq, W]; ``kv`` [P, S, W] (cross); ``key_keep`` [P, S] bool.

        With ``kv_index`` [P], ``kv`` holds [U, S, W] distinct key sequences and pair ``p``
        attends to ``kv[kv_index[p]]``: keys and values are projected once per sequence.
        ``kv_projected`` (cross only): keys and values already projected (:meth:`project_kv`),
        in place of ``kv``. Returns the new ``x`` and, with ``need_weights``, the attention
        probabilities [P, heads, Lq, S] before dropout.
        """
        q_in = self.ln_1(x)
        wq, _, _ = self.in_proj_weight.chunk(3)
        bq, _, _ = self.in_proj_bias.chunk(3)
        q = self._split(F.linear(q_in, wq, bq))
        k, v = kv_projected if kv_projected is not None else self.project_kv(kv if self.cross else q_in)
        k, v = self._split(k), self._split(v)
        if kv_index is not None:
            k, v = k[kv_index], v[kv_index]
        keep = key_keep[:, None, None, :]
        weights = None
        if need_weights:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
            scores = scores.masked_fill(~keep, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, self.attn_dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, dropout_p=self.attn_dropout if self.training else 0.0
            )
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        x = x + self.ls_1(out)
        x = x + self.ls_2(self.mlp(self.ln_2(x)))
        return x, weights

    def project_kv(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [N, S, W] of the token sequences ``kv`` [N, S, W] (heads not split).
        Under DDP a rank projects its own clips and gathers the result (``methods.rice_pmd``)."""
        _, wk, wv = self.in_proj_weight.chunk(3)
        _, bk, bv = self.in_proj_bias.chunk(3)
        return F.linear(kv, wk, bk), F.linear(kv, wv, bv)

    def _split(self, t: Tensor) -> Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)


class PairwiseMatchingDecoder(nn.Module):
    """Scores (image, video) pairs from their tokens: self-attn, cross-attn, pooler, head."""

    def __init__(
        self,
        self_block: nn.Module,
        cross_block: nn.Module,
        heads: int,
        attn_dropout: float = 0.1,
        match_scale: float = 10.0,
    ) -> None:
        super().__init__()
        width = self_block.attn.embed_dim
        self.self_layer = AttentionLayer(self_block, heads, 0.0, cross=False)
        self.cross_layer = AttentionLayer(cross_block, heads, attn_dropout, cross=True)
        self.pool_norm = nn.LayerNorm(width)
        self.pool_dense = nn.Linear(width, width, bias=False)
        nn.init.normal_(self.pool_dense.weight, std=0.02)  # the official CrossModel init
        self.match = nn.Linear(width, 1, bias=False)
        self.match_scale = match_scale

    @property
    def heads(self) -> int:
        return self.cross_layer.heads

    def forward(
        self,
        queries: Tensor,
        query_keep: Tensor,
        keys: Optional[Tensor],
        key_keep: Tensor,
        need_weights: bool = False,
        key_index: Optional[Tensor] = None,
        query_index: Optional[Tensor] = None,
        kv_projected: Optional[tuple[Tensor, Tensor]] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Scores [P] of P aligned pairs and (optionally) cross-attention [P, heads, Lq, S].

        ``keys``/``key_keep`` are per pair, or, with ``key_index`` [P], U distinct clips
        ([U, S, W] / [U, S]) that the pairs index (each clip's keys projected once). Likewise
        ``query_index`` [P] indexes distinct images in ``queries``/``query_keep`` (the
        self-attention layer, which sees the image alone, then runs once per image).
        ``kv_projected``: the clips' keys and values from ``cross_layer.project_kv``, in place
        of ``keys`` (which may then be None).
        """
        key_keep = _never_empty(key_keep)
        if key_index is not None:
            key_keep = key_keep[key_index]
        x, _ = self.self_layer(queries, _never_empty(query_keep))
        if query_index is not None:
            x = x[query_index]
        x, weights = self.cross_layer(
            x, key_keep, kv=keys, need_weights=need_weights, kv_index=key_index, kv_projected=kv_projected
        )
        pooled = F.relu(self.pool_dense(self.pool_norm(x)[:, 0]))
        score = F.normalize(pooled.float(), dim=-1) @ F.normalize(self.match.weight.float(), dim=-1).t()
        return self.match_scale * score.squeeze(-1), weights


def _never_empty(keep: Tensor) -> Tensor:
    """Rows that keep no key keep their first one (an all-padding query), so nothing is NaN.
    (Computed for every row, without asking the host whether any row is empty.)"""
    empty = ~keep.any(dim=-1)
    first = torch.zeros_like(keep)
    first[..., 0] = True
    return keep | (first & empty[..., None])


class PatchFeatureReconstruction(nn.Module):
    """PFR's head: cross-attention maps [P, H, Lq, S] -> reconstruction weights [P, Lq, S]."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        mid = max(heads // 2, 1)
        self.convs = nn.Sequential(
            nn.Conv2d(heads, mid, kernel_size=1), nn.ReLU(), nn.Conv2d(mid, 1, kernel_size=1), nn.ReLU()
        )
        for m in self.convs:
            if isinstance(m, nn.Conv2d):  # the official head is initialised to ones / zeros
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, attn: Tensor, key_keep: Tensor, head_dim: int) -> Tensor:
        logits = self.convs(attn * head_dim**0.5).squeeze(1)
        logits = logits.float().masked_fill(~key_keep[:, None, :], float("-inf"))
        return logits.softmax(dim=-1)


PFR_TARGETS = ("raw", "layernorm")


def pfr_loss(weights: Tensor, video_tokens: Tensor, image_tokens: Tensor, target: str = "raw") -> Tensor:
    """MSE between ``weights`` [P, Lq, S] x video tokens [P, S, W] and image tokens [P, Lq, W].

    Both token tensors are detached: the loss trains only what produced ``weights``.
    ``target="raw"`` compares the tokens as they are (the official code); ``"layernorm"``
    first layer-normalises every token (no affine), which makes the loss blind to the tokens'
    scale (see ``RiceConfig.pfr_target``).
    """
    if target not in PFR_TARGETS:
        raise ValueError(f"pfr target must be one of {PFR_TARGETS}, got {target!r}")
    video, image = video_tokens.detach().float(), image_tokens.detach().float()
    if target == "layernorm":
        video = F.layer_norm(video, video.shape[-1:])
        image = F.layer_norm(image, image.shape[-1:])
    return F.mse_loss(weights @ video, image)


def consecutive_runs(tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Collapse runs of identical consecutive rows: (first row of each run [U], run id per row [P]).

    A re-ranker gets a query's pairs with its gallery one after another, so its clip repeats
    in consecutive rows; comparing neighbours is far cheaper than projecting them again.
    """
    if tokens.shape[0] <= 1:
        idx = torch.arange(tokens.shape[0], device=tokens.device)
        return idx, idx
    same = (tokens[1:] == tokens[:-1]).flatten(1).all(1) & (keep[1:] == keep[:-1]).all(1)
    new_run = torch.cat([torch.ones(1, dtype=torch.bool, device=tokens.device), ~same])
    run_id = new_run.long().cumsum(0) - 1
    return torch.nonzero(new_run, as_tuple=True)[0], run_id
