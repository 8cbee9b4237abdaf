"""Ranking a model's outputs made outside the harness, exactly as the harness ranks its own.

Embeddings (:func:`rank_embeddings`): each side's rows are matched to the split by id, then
:func:`benchmark.evaluation.retrieval.rank` ranks every query against its own gallery group
(LPR4M: its livestream; MovingFashion: the one gallery) by the cosine similarity of the
L2-normalised float32 embeddings, equal scores in gallery order, as for a plugin's embeddings.

Run files (:func:`rank_run`): the run's scores enter the same :func:`~benchmark.evaluation.retrieval.rank`
as a second stage over every pair of the group (``mode="all"``); a pair the run does not list
scores minus infinity and is cut from the ranking afterwards, so a query's ranking is exactly
the documents its run lists, by score, equal scores in gallery order (``trec_eval`` would break
them by document id; the harness's rule is the one applied). Scores are replaced by their
per-query dense rank before they reach the float32 ranking, so no two distinct scores tie.

Rules (also in docs/external.md): every query of the test split that has frames needs an
embedding and every gallery image one; an id that is not in the test split is refused (the
message says when it belongs to the training split); a query whose clip has no frames in the
release is a miss and must not be given. A run that ranks an image outside the query's gallery
group is refused; a query the run omits is counted as a miss (a notice says how many).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from benchmark.core.config import EvalConfig
from benchmark.evaluation.external_inputs import EmbeddingFile, ExternalInputError, RunEntry
from benchmark.evaluation.retrieval import Ranking, l2_normalize, rank
from benchmark.evaluation.scoring import SplitIndex
from datasets.records import DatasetSplits


@dataclass
class ExternalRanking:
    """What :func:`rank_embeddings` / :func:`rank_run` return: the harness's ranking of the
    outside model's outputs, and a notice for the user (queries counted as misses) or None."""

    ranking: Ranking
    index: SplitIndex
    notice: Optional[str] = None


def ranking_depth(eval_cfg: EvalConfig) -> int:
    """The ``k`` the harness's own evaluation ranks to (:func:`benchmark.evaluation.evaluate.evaluate`)."""
    return max(eval_cfg.topk_saved, max(eval_cfg.ks))


def _training_ids(splits: DatasetSplits) -> set[str]:
    return {t.clip.clip_id for t in splits.train} | {t.image_id for t in splits.train}


def _foreign(path: Path, what: str, i: str, splits: DatasetSplits, training: set[str]) -> ExternalInputError:
    where = "an id of the training split, not of the test split" if i in training else f"not a {what} of the test split"
    return ExternalInputError(f"{path}: {what} id {i!r} is {where} of {splits.name}")


def _query_rows(emb: EmbeddingFile, index: SplitIndex, splits: DatasetSplits, training: set[str]) -> Tensor:
    """[Nq, D] in split order; zero rows for queries without frames (never ranked: misses)."""
    pos = {q: i for i, q in enumerate(index.query_ids)}
    rows = np.zeros((len(index.query_ids), emb.matrix.shape[1]), dtype=np.float32)
    for r, qid in enumerate(emb.ids):
        qi = pos.get(qid)
        if qi is None:
            raise _foreign(emb.path, "query", qid, splits, training)
        if not bool(index.valid[qi]):
            raise ExternalInputError(
                f"{emb.path}: query {qid!r} has no frames in the release; it is scored as a miss "
                "for every method, so leave it out"
            )
        rows[qi] = emb.matrix[r]
    given = set(emb.ids)
    needed = [q for q, ok in zip(index.query_ids, index.valid.tolist()) if ok]
    absent = [q for q in needed if q not in given]
    if absent:
        raise ExternalInputError(
            f"{emb.path}: no embedding for query {absent[0]!r} ({len(absent)} of the "
            f"{len(needed)} queries with frames are missing)"
        )
    return torch.from_numpy(rows)


def _gallery_rows(emb: EmbeddingFile, index: SplitIndex, splits: DatasetSplits, training: set[str]) -> Tensor:
    """[Ng, D] in gallery order (an image listed in several groups takes its one embedding)."""
    row_of = {g: r for r, g in enumerate(emb.ids)}
    wanted = set(index.gallery_ids)
    for gid in emb.ids:
        if gid not in wanted:
            raise _foreign(emb.path, "gallery image", gid, splits, training)
    absent = [g for g in dict.fromkeys(index.gallery_ids) if g not in row_of]
    if absent:
        raise ExternalInputError(
            f"{emb.path}: no embedding for gallery image {absent[0]!r} ({len(absent)} of "
            f"{len(wanted)} gallery images are missing)"
        )
    take = np.fromiter((row_of[g] for g in index.gallery_ids), dtype=np.int64, count=len(index.gallery_ids))
    return torch.from_numpy(np.ascontiguousarray(emb.matrix[take], dtype=np.float32))


def rank_embeddings(
    splits: DatasetSplits, query: EmbeddingFile, gallery: EmbeddingFile, eval_cfg: EvalConfig
) -> ExternalRanking:
    """Check both files against the split and rank as the harness ranks a plugin's embeddings."""
    index = SplitIndex.from_splits(splits)
    training = _training_ids(splits) - set(index.query_ids) - set(index.gallery_ids)
    dq, dg = query.matrix.shape[1], gallery.matrix.shape[1]
    if dq != dg:
        raise ExternalInputError(
            f"{gallery.path}: embeddings are {dg}-dimensional but the query file's are {dq} "
            f"(first gallery id {gallery.ids[0]!r}; query file {query.path.name})"
        )
    q = _query_rows(query, index, splits, training)
    g = _gallery_rows(gallery, index, splits, training)
    ranking = rank(
        l2_normalize(q),
        l2_normalize(g),
        index.query_groups,
        index.gallery_groups,
        k=ranking_depth(eval_cfg),
        gt_index=index.gt_index(),
        query_valid=index.valid,
    )
    return ExternalRanking(ranking, index)


def rank_run(splits: DatasetSplits, entries: list[RunEntry], path: Path, eval_cfg: EvalConfig) -> ExternalRanking:
    """Check a run file's lines against the split and rank them (module docstring)."""
    index = SplitIndex.from_splits(splits)
    training = _training_ids(splits) - set(index.query_ids) - set(index.gallery_ids)
    by_query = _run_by_query(entries, path, index, splits, training)
    ng = len(index.gallery_ids)
    keys, values = [], []
    for qi, items in by_query.items():
        scores = np.array([s for _, s in items], dtype=np.float64)
        dense = np.unique(scores, return_inverse=True)[1]  # 0 = lowest score; equal scores stay equal
        keys += [qi * ng + gj for gj, _ in items]
        values += dense.astype(np.float64).tolist()
    order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
    sorted_keys = torch.from_numpy(np.asarray(keys, dtype=np.int64)[order])
    sorted_vals = torch.from_numpy(np.asarray(values, dtype=np.float32)[order])

    def score_pairs(q_idx: Tensor, g_idx: Tensor) -> Tensor:
        key = q_idx.long() * ng + g_idx.long()
        at = torch.searchsorted(sorted_keys, key).clamp_max(max(len(sorted_keys) - 1, 0))
        hit = sorted_keys[at] == key
        return torch.where(hit, sorted_vals[at], torch.tensor(float("-inf")))

    valid = index.valid.clone()
    listed = torch.zeros(len(index.query_ids), dtype=torch.long)
    for qi, items in by_query.items():
        listed[qi] = len(items)
    omitted = [q for qi, q in enumerate(index.query_ids) if bool(valid[qi]) and int(listed[qi]) == 0]
    valid &= listed > 0
    dummy_q, dummy_g = torch.zeros(len(index.query_ids), 1), torch.zeros(ng, 1)
    ranking = rank(
        dummy_q,
        dummy_g,
        index.query_groups,
        index.gallery_groups,
        k=ranking_depth(eval_cfg),
        gt_index=index.gt_index(),
        query_valid=valid,
        score_pairs=score_pairs,
        mode="all",
    )
    _cut_unlisted(ranking, listed)
    ranking.pairs_scored = 0  # no second stage ran: the run's own scores were looked up
    ranking.mode = "none"
    notice = None
    if omitted:
        notice = (
            f"{path}: {len(omitted)} of the {int(index.valid.sum())} queries with frames have no line in the run "
            f"(first {omitted[0]!r}): each counted as a miss (rule: docs/external.md)"
        )
    return ExternalRanking(ranking, index, notice)


def _run_by_query(
    entries: list[RunEntry], path: Path, index: SplitIndex, splits: DatasetSplits, training: set[str]
) -> dict[int, list[tuple[int, float]]]:
    """Run lines as {query position: [(gallery index, score)]}, each id checked against the split."""
    pos = {q: i for i, q in enumerate(index.query_ids)}
    all_gallery = set(index.gallery_ids)
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for e in entries:
        qi = pos.get(e.qid)
        where = f"{path}:{e.line}"
        if qi is None:
            raise _foreign(Path(where), "query", e.qid, splits, training)
        if not bool(index.valid[qi]):
            raise ExternalInputError(
                f"{where}: query {e.qid!r} has no frames in the release; it is scored as a miss "
                "for every method, so leave it out"
            )
        gj = index.group_items(qi).get(e.docid)
        if gj is None:
            if e.docid in all_gallery:
                raise ExternalInputError(
                    f"{where}: query {e.qid!r} ranks image {e.docid!r}, which is outside its gallery "
                    f"group {index.query_group(qi)!r} (each query is ranked within its own group)"
                )
            raise _foreign(Path(where), "gallery image", e.docid, splits, training)
        out[qi].append((gj, e.score))
    return out


def _cut_unlisted(ranking: Ranking, listed: Tensor) -> None:
    """Keep the first ``listed[q]`` entries of each query (the run's documents, which score above
    every unlisted one); a ground truth ranked below them was not retrieved."""
    col = torch.arange(ranking.index.shape[1])[None, :]
    beyond = col >= listed[:, None]
    ranking.index[beyond] = -1
    ranking.score[beyond] = float("-inf")
    unlisted = ranking.gt_rank > listed[:, None]
    ranking.gt_rank[unlisted] = 0
