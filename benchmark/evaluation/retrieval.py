"""Pure-tensor ranking of queries against their gallery group.

The protocol (README, "Reading the leaderboard") ranks each query only against the gallery of
its own group (LPR4M: the query's livestream) or against one global gallery (MovingFashion).
:func:`rank` does this without per-query Python loops: queries and gallery items are
bucketed by group, and each group is scored by one matrix product (or by a method's
pairwise second stage) and reduced by one ``topk``, in query chunks that bound memory.

Ordering rule (documented, tested): higher score first; **equal scores are broken by
gallery order**, i.e. by the item's position in the gallery list passed in
(``DatasetSplits.gallery``), lower position first. This is the order the official LPR4M
script produces (Python's stable ``sorted(..., reverse=True)`` over the gallery in file
order). The rule holds in both stages: a re-ranked top-K is ordered by the second-stage
score with ties again broken by gallery order.

Besides the saved top-k lists, :func:`rank` records for every query the 1-based rank of
each of its ground truths in the *full* ranking of its group (``Ranking.gt_rank``), so that
mAP (see :mod:`benchmark.evaluation.metrics`) is exact and not truncated at k. In ``"topk"`` re-ranking
mode the full ranking is the re-ranked top-K followed by the first-stage order of the rest.

Conventions for ground-truth tensors (``gt_index`` in, ``gt_rank`` out), shape [Nq, G]:

``gt_index``  >= 0 gallery index; ``-1`` padding; ``GT_ABSENT`` (-2) a ground truth that is
              not in the gallery at all (it counts for mAP's denominator, is never found).
``gt_rank``   >= 1 rank in the full group ranking; ``0`` a ground truth that cannot be
              ranked (absent, in another group, or the query is invalid/missing); ``-1``
              padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

GT_PAD = -1
GT_ABSENT = -2

ScorePairs = Callable[[Tensor, Tensor], Tensor]
Groups = Union[Sequence[Optional[Hashable]], Tensor, None]
RerankMode = Literal["none", "all", "topk"]

#: default number of score-matrix elements held at once per chunk (float32: 64 MiB)
DEFAULT_MAX_ELEMENTS = 1 << 24


@dataclass
class Ranking:
    """Result of :func:`rank` (all tensors on the CPU).

    ``index`` [Nq, k] gallery indices, best first, ``-1`` where the group has fewer than k
    items or the query was not ranked; ``score`` [Nq, k] their scores (``-inf`` padding);
    ``gt_rank`` [Nq, G] as in the module docstring; ``group_size`` [Nq] number of gallery
    items each query was ranked against; ``pairs_scored`` pairs given to ``score_pairs``.
    """

    index: Tensor
    score: Tensor
    gt_rank: Tensor
    group_size: Tensor
    pairs_scored: int = 0
    mode: str = "none"

    @property
    def k(self) -> int:
        return int(self.index.shape[1])


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float32."""
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def encode_groups(query_groups: Groups, gallery_groups: Groups, nq: int, ng: int) -> tuple[Tensor, Tensor]:
    """Integer group codes for queries and gallery (``None`` for both: one global group).

    Labels may be any hashable (a live id string, ``None``) or already integer tensors.
    A query whose label no gallery item carries gets a code with no gallery items.
    """
    if query_groups is None and gallery_groups is None:
        return torch.zeros(nq, dtype=torch.long), torch.zeros(ng, dtype=torch.long)
    if query_groups is None or gallery_groups is None:
        raise ValueError("give group labels for both queries and gallery, or for neither (one global gallery)")
    if isinstance(query_groups, Tensor) and isinstance(gallery_groups, Tensor):
        qg, gg = query_groups.long().cpu(), gallery_groups.long().cpu()
    else:
        codes: dict[Hashable, int] = {}
        gg = torch.tensor([codes.setdefault(g, len(codes)) for g in _as_list(gallery_groups)], dtype=torch.long)
        qg = torch.tensor([codes.setdefault(g, len(codes)) for g in _as_list(query_groups)], dtype=torch.long)
    if qg.shape != (nq,) or gg.shape != (ng,):
        raise ValueError(
            f"group labels: got {tuple(qg.shape)} for {nq} queries and {tuple(gg.shape)} for {ng} gallery items"
        )
    return qg, gg


def _as_list(groups: Sequence[Optional[Hashable]] | Tensor) -> list:
    return groups.tolist() if isinstance(groups, Tensor) else list(groups)


def pack_ground_truth(gt: Sequence[Sequence[int]]) -> Tensor:
    """Ragged per-query gallery indices -> [Nq, G] LongTensor padded with ``GT_PAD``.

    Duplicate gallery indices are dropped (first occurrence kept); every ``GT_ABSENT`` (a
    ground truth that is not in the gallery) is kept, as each stands for a distinct id.
    Callers pass one entry per distinct ground-truth id.
    """
    rows = [_dedupe_present([int(i) for i in g]) for g in gt]
    if any(v < GT_ABSENT or v == GT_PAD for r in rows for v in r):
        raise ValueError("ground-truth indices must be >= 0 or GT_ABSENT")
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), GT_PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _dedupe_present(row: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for v in row:
        if v >= 0:
            if v in seen:
                continue
            seen.add(v)
        out.append(v)
    return out


def rank(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_groups: Groups = None,
    gallery_groups: Groups = None,
    *,
    k: int,
    gt_index: Optional[Tensor] = None,
    query_valid: Optional[Tensor] = None,
    score_pairs: Optional[ScorePairs] = None,
    mode: RerankMode = "none",
    rerank_topk: int = 20,
    pair_batch: int = 8192,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Ranking:
    """Rank every query against its gallery group; see the module docstring for the rules.

    ``query_emb`` [Nq, D] and ``gallery_emb`` [Ng, D] are expected L2-normalised (the score
    is their dot product, computed in float32 on their device). ``query_valid`` [Nq] bool:
    False for queries without a clip (never ranked, scored as misses). ``gt_index`` [Nq, G]
    (see :func:`pack_ground_truth`) enables ``Ranking.gt_rank``.

    Second stage: ``score_pairs(query_idx, gallery_idx) -> scores`` gets aligned CPU
    LongTensors of global indices (at most ``pair_batch`` pairs a call) and returns one
    score per pair (any device). ``mode="all"`` scores every (query, gallery) pair of each
    query's group with it instead of the dot product; ``mode="topk"`` re-scores the
    first-stage top ``rerank_topk`` and keeps the first-stage order below them (there
    ``Ranking.score`` holds second-stage scores for the head, first-stage ones below).
    ``Ranking.pairs_scored`` counts the pairs given to ``score_pairs``.

    Memory: at most about ``max_elements`` scores (times the ground-truth width) are held at
    once; larger groups are processed in query chunks.
    """
    _check_arguments(query_emb, gallery_emb, k, score_pairs, mode, rerank_topk)
    nq, ng = query_emb.shape[0], gallery_emb.shape[0]
    device = query_emb.device
    qg, gg = encode_groups(query_groups, gallery_groups, nq, ng)
    gt_index = _checked_gt_index(gt_index, nq, ng)
    valid = torch.ones(nq, dtype=torch.bool) if query_valid is None else query_valid.bool().cpu()
    buckets = _GalleryBuckets.of(gg)
    n_codes = int(max(int(qg.max()) if nq else 0, int(gg.max()) if ng else 0)) + 1
    size_by_code = torch.zeros(n_codes, dtype=torch.long)
    size_by_code[buckets.codes] = buckets.counts
    out = _Output(nq, k, gt_index)
    out.group_size = size_by_code[qg]
    gg_dev, pos_dev, gt_dev = gg.to(device), buckets.pos_in_group.to(device), gt_index.to(device)
    stage_k = max(k, rerank_topk) if mode == "topk" else k
    gq_width = max(int(gt_index.shape[1]), 1)

    q_sel = torch.nonzero(valid, as_tuple=True)[0]
    q_order = q_sel[torch.sort(qg[q_sel], stable=True).indices]
    q_codes, q_counts = torch.unique_consecutive(qg[q_order], return_counts=True)
    start = 0
    for code, count in zip(q_codes.tolist(), q_counts.tolist()):
        q_idx = q_order[start : start + count]
        start += count
        if code not in buckets.span:
            continue
        s, m = buckets.span[code]
        g_idx = buckets.order[s : s + m]
        g_emb = _rows(gallery_emb, g_idx).float() if mode != "all" else None
        chunk = max(1, max_elements // (m * gq_width))
        for c0 in range(0, count, chunk):  # one group's queries, in chunks that bound the memory
            qc = q_idx[c0 : c0 + chunk]
            if mode == "all":
                scores = _pair_scores(score_pairs, qc, g_idx, pair_batch).to(device)
                out.pairs_scored += scores.numel()
            else:
                scores = _rows(query_emb, qc).float() @ g_emb.T
            top_val, top_pos = _stable_topk(scores, min(stage_k, m))
            ranks = _gt_ranks(scores, _rows(gt_dev, qc), gg_dev, pos_dev, code, top_pos)
            if mode == "topk":
                r = min(rerank_topk, m)
                top_val, top_pos, ranks, n = _rerank_head(
                    score_pairs, qc, g_idx, top_val, top_pos, ranks, r, pair_batch
                )
                out.pairs_scored += n
            out.write(qc, g_idx, top_val, top_pos, ranks, min(k, m))
    return Ranking(out.index, out.score, out.gt_rank, out.group_size, out.pairs_scored, mode)


def _check_arguments(
    query_emb: Tensor, gallery_emb: Tensor, k: int, score_pairs: Optional[ScorePairs], mode: str, rerank_topk: int
) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if mode not in ("none", "all", "topk"):
        raise ValueError(f"rerank mode must be 'none', 'all' or 'topk', got {mode!r}")
    if mode != "none" and score_pairs is None:
        raise ValueError(f"rerank mode {mode!r} needs a score_pairs callback")
    if mode == "topk" and rerank_topk < 1:
        raise ValueError(f"rerank_topk must be >= 1, got {rerank_topk}")
    if query_emb.ndim != 2 or gallery_emb.ndim != 2 or query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(
            f"embeddings must be [Nq, D] and [Ng, D]; got {tuple(query_emb.shape)} and {tuple(gallery_emb.shape)}"
        )


def _checked_gt_index(gt_index: Optional[Tensor], nq: int, ng: int) -> Tensor:
    if gt_index is None:
        gt_index = torch.full((nq, 1), GT_PAD, dtype=torch.long)
    gt_index = gt_index.long().cpu()
    if gt_index.ndim != 2 or gt_index.shape[0] != nq:
        raise ValueError(f"gt_index must be [Nq={nq}, G]; got {tuple(gt_index.shape)}")
    if bool(((gt_index >= ng) | (gt_index < GT_ABSENT)).any()):
        raise ValueError(f"gt_index holds values outside [-2, {ng - 1}]")
    return gt_index


@dataclass
class _GalleryBuckets:
    """Gallery items bucketed by group code; a stable sort keeps gallery order inside a bucket."""

    order: Tensor  # gallery indices sorted by group
    codes: Tensor  # the group codes present
    counts: Tensor  # items per present code
    span: dict[int, tuple[int, int]]  # code -> (start in ``order``, count)
    pos_in_group: Tensor  # [Ng] each item's position inside its group

    @classmethod
    def of(cls, gg: Tensor) -> "_GalleryBuckets":
        ng = gg.shape[0]
        order = torch.sort(gg, stable=True).indices
        codes, counts = torch.unique_consecutive(gg[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        pos_in_group = torch.empty(ng, dtype=torch.long)
        pos_in_group[order] = torch.arange(ng) - torch.repeat_interleave(starts, counts)
        span = dict(zip(codes.tolist(), zip(starts.tolist(), counts.tolist())))
        return cls(order, codes, counts, span, pos_in_group)


class _Output:
    """The ranking being filled: top-k indices and scores per query, ground-truth ranks."""

    def __init__(self, nq: int, k: int, gt_index: Tensor) -> None:
        self.index = torch.full((nq, k), -1, dtype=torch.long)
        self.score = torch.full((nq, k), float("-inf"), dtype=torch.float32)
        self.gt_rank = torch.where(gt_index == GT_PAD, GT_PAD, 0)
        self.group_size = torch.zeros(nq, dtype=torch.long)
        self.pairs_scored = 0

    def write(self, qc: Tensor, g_idx: Tensor, top_val: Tensor, top_pos: Tensor, ranks: Tensor, kk: int) -> None:
        top_pos = top_pos[:, :kk].cpu()
        rows = slice(int(qc[0]), int(qc[-1]) + 1) if _is_range(qc) else qc  # a slice writes without a copy
        self.index[rows, :kk] = g_idx[top_pos]
        self.score[rows, :kk] = top_val[:, :kk].cpu()
        self.gt_rank[rows] = ranks.cpu()


def _is_range(idx: Tensor) -> bool:
    """True when ascending unique ``idx`` is one contiguous run (then a slice, not a copy)."""
    return idx.numel() > 0 and int(idx[-1]) - int(idx[0]) == idx.numel() - 1


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` for ascending unique CPU ``idx``; a view when the rows are contiguous."""
    if _is_range(idx):
        return x[int(idx[0]) : int(idx[-1]) + 1]
    return x[idx.to(x.device)]


def _check_finite(values: Tensor) -> None:
    """``torch.topk`` ranks NaN above everything, so a NaN anywhere in a row shows up here."""
    if bool(torch.isnan(values).any()):
        raise ValueError("similarity scores contain NaN (non-finite embeddings or re-ranking scores?)")


def _order_desc(val: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score descending, then column ascending (one sort on a unique key).

    The key packs an order-preserving integer image of the float32 score (``-0.0`` folded
    into ``+0.0``, as they compare equal) above the inverted column index.
    """
    bits = (val.float() + 0.0).contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()
    key = ordered * (1 << 32) + (0xFFFFFFFF - pos)
    order = torch.sort(key, dim=1, descending=True).indices
    return torch.gather(val, 1, order), torch.gather(pos, 1, order)


def _stable_topk(scores: Tensor, kk: int) -> tuple[Tensor, Tensor]:
    """Top ``kk`` columns per row, by score descending then column ascending.

    ``torch.topk`` orders equal scores arbitrarily; rows whose top ``kk + 1`` scores hold
    any equal pair (a tie inside the list or straddling the cut) are redone with a stable
    full sort. Float scores rarely tie, so this stays cheap.
    """
    m = scores.shape[1]
    extra = 1 if m > kk else 0
    val, pos = torch.topk(scores, kk + extra, dim=1, sorted=True)
    _check_finite(val)
    tied = (val[:, 1:] == val[:, :-1]).any(1) if val.shape[1] > 1 else torch.zeros(len(val), dtype=torch.bool)
    val, pos = val[:, :kk], pos[:, :kk]
    if bool(tied.any()):
        rows = torch.nonzero(tied, as_tuple=True)[0]
        sv, sp = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        val[rows], pos[rows] = sv[:, :kk], sp[:, :kk]
    return val, pos


def _gt_ranks(scores: Tensor, gt: Tensor, gg: Tensor, pos_in_group: Tensor, code: int, top_pos: Tensor) -> Tensor:
    """1-based rank of each ground truth in the full stable ranking of ``scores`` rows.

    A ground truth inside the row's top list (``top_pos``: the first columns of that same
    ranking) takes its position there. The others are counted:
    rank = 1 + #(score > s_gt) + #(score == s_gt and column < gt's column), on the rows that
    need it; the tie term only for (row, ground truth) pairs whose score another item shares.
    """
    ranks = torch.where(gt == GT_PAD, GT_PAD, 0)
    safe = gt.clamp_min(0)
    inside = (gt >= 0) & (gg[safe] == code)
    used = torch.nonzero(inside.any(0), as_tuple=True)[0]
    if used.numel() == 0:
        return ranks
    width = int(used.max()) + 1
    inside_w = inside[:, :width]
    col = torch.where(inside_w, pos_in_group[safe[:, :width]], -1)  # [c, W]
    hit = top_pos[:, None, :] == col[:, :, None]  # [c, W, kk]
    listed = hit.any(-1) & inside_w
    rank_w = hit.to(torch.int8).argmax(-1) + 1
    todo = inside_w & ~listed
    rows_todo = torch.nonzero(todo.any(1), as_tuple=True)[0]
    if rows_todo.numel():
        sub = scores if rows_todo.numel() == scores.shape[0] else scores[rows_todo]
        sub_col = col[rows_todo].clamp_min(0)
        s_gt = torch.gather(sub, 1, sub_col)[:, :, None]  # [r, W, 1]
        rows = sub[:, None, :]
        above = torch.count_nonzero(rows > s_gt, dim=-1)
        at_least = torch.count_nonzero(rows >= s_gt, dim=-1)
        counted = above + 1
        tied = todo[rows_todo] & (at_least - above > 1)
        if bool(tied.any()):
            r_idx, w_idx = torch.nonzero(tied, as_tuple=True)
            same = sub[r_idx] == s_gt[r_idx, w_idx]  # [P, m]
            before = torch.arange(sub.shape[1], device=sub.device)[None, :] < sub_col[r_idx, w_idx][:, None]
            counted[r_idx, w_idx] += torch.count_nonzero(same & before, dim=1)
        rank_w[rows_todo] = torch.where(todo[rows_todo], counted, rank_w[rows_todo])
    ranks[:, :width] = torch.where(inside_w, rank_w, ranks[:, :width])
    return ranks


def _pair_scores(score_pairs: ScorePairs, q_idx: Tensor, g_idx: Tensor, pair_batch: int) -> Tensor:
    """Second-stage scores of every (q, g) pair, as a [len(q_idx), len(g_idx)] matrix."""
    qq = q_idx.repeat_interleave(len(g_idx))
    gq = g_idx.repeat(len(q_idx))
    return _call_batched(score_pairs, qq, gq, pair_batch).view(len(q_idx), len(g_idx))


def _call_batched(score_pairs: ScorePairs, qq: Tensor, gq: Tensor, pair_batch: int) -> Tensor:
    parts = []
    for p0 in range(0, qq.numel(), pair_batch):
        q_part, g_part = qq[p0 : p0 + pair_batch], gq[p0 : p0 + pair_batch]
        out = score_pairs(q_part, g_part)
        if not isinstance(out, Tensor) or out.shape != (q_part.numel(),):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"score_pairs must return a tensor of shape [{q_part.numel()}], got {got}")
        parts.append(out.detach().float().cpu())
    return torch.cat(parts) if parts else torch.empty(0)


def _rerank_head(
    score_pairs: ScorePairs,
    qc: Tensor,
    g_idx: Tensor,
    top_val: Tensor,
    top_pos: Tensor,
    ranks: Tensor,
    r: int,
    pair_batch: int,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Re-score the first ``r`` first-stage candidates; the rest keep their order."""
    head_pos = top_pos[:, :r]
    qq = qc.repeat_interleave(r)
    gq = g_idx[head_pos.reshape(-1).cpu()]
    new = _call_batched(score_pairs, qq, gq, pair_batch).view(len(qc), r).to(head_pos.device)
    _check_finite(new)
    # order: new score descending, ties by gallery order (= column order inside a group)
    val_sorted, pos_sorted = _order_desc(new, head_pos)
    # ground truths in the head take their new position; the others keep their rank (> r)
    in_head = (ranks >= 1) & (ranks <= r)
    gt_col = torch.where(in_head, ranks - 1, 0)
    old_pos = torch.gather(head_pos, 1, gt_col.clamp_max(r - 1))  # column of that gt
    new_rank = (pos_sorted[:, None, :] == old_pos[:, :, None]).float().argmax(-1) + 1
    ranks = torch.where(in_head, new_rank, ranks)
    top_val = torch.cat([val_sorted, top_val[:, r:]], 1)
    top_pos = torch.cat([pos_sorted, top_pos[:, r:]], 1)
    return top_val, top_pos, ranks, qq.numel()
