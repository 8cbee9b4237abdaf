"""Glue between a dataset's splits and the pure-tensor ranking and metrics.

:class:`SplitIndex` turns ``DatasetSplits`` (queries, gallery) into the arrays
:func:`benchmark.evaluation.retrieval.rank` and :func:`benchmark.evaluation.metrics.compute_metrics` take, and back
into ids for a submission. After :func:`benchmark.evaluation.retrieval.rank` (called by :mod:`benchmark.evaluation.evaluate`) the publisher
calls::

    index = SplitIndex.from_splits(splits)
    metrics = metrics_for_ranking(ranking, index, eval_cfg, seed)
    rankings = ranked_ids(ranking, index, eval_cfg.topk_saved)

and :func:`benchmark.record.rescore.rescore` uses the index to map submitted ids back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from benchmark.core.config import EvalConfig
from benchmark.evaluation.metrics import compute_metrics
from benchmark.evaluation.retrieval import GT_ABSENT, Ranking, pack_ground_truth
from datasets.records import DatasetSplits


@dataclass
class SplitIndex:
    """Positions, groups and ground truth of one split, in ``splits.queries`` / ``splits.gallery`` order."""

    query_ids: list[str]
    gallery_ids: list[str]
    query_groups: Optional[list[Optional[str]]]  # None: one global gallery
    gallery_groups: Optional[list[Optional[str]]]
    gt_ids: list[tuple[str, ...]]
    valid: Tensor  # [Nq] bool, False for queries whose clip is missing
    attributes: list[Mapping[str, Any]]
    gallery_lookup: dict[Optional[str], dict[str, int]]  # group -> image id -> gallery index

    @classmethod
    def from_splits(cls, splits: DatasetSplits) -> "SplitIndex":
        grouped = splits.grouped
        lookup: dict[Optional[str], dict[str, int]] = {}
        for i, item in enumerate(splits.gallery):
            group = item.group if grouped else None
            ids = lookup.setdefault(group, {})
            if item.image_id in ids:
                where = f"group {group!r}" if grouped else "the gallery"
                raise ValueError(f"{splits.name}: gallery image id {item.image_id!r} appears twice in {where}")
            ids[item.image_id] = i
        seen: set[str] = set()
        for q in splits.queries:
            if q.query_id in seen:
                raise ValueError(f"{splits.name}: query id {q.query_id!r} appears twice")
            seen.add(q.query_id)
        return cls(
            query_ids=[q.query_id for q in splits.queries],
            gallery_ids=[g.image_id for g in splits.gallery],
            query_groups=[q.group for q in splits.queries] if grouped else None,
            gallery_groups=[g.group for g in splits.gallery] if grouped else None,
            gt_ids=[tuple(dict.fromkeys(q.gt_ids)) for q in splits.queries],  # distinct ids
            valid=torch.tensor([not q.missing for q in splits.queries], dtype=torch.bool),
            attributes=[dict(q.attributes) for q in splits.queries],
            gallery_lookup=lookup,
        )

    @property
    def grouped(self) -> bool:
        return self.query_groups is not None

    def query_group(self, qi: int) -> Optional[str]:
        return self.query_groups[qi] if self.query_groups is not None else None

    def group_items(self, qi: int) -> dict[str, int]:
        """Image id -> gallery index for the gallery query ``qi`` is ranked against."""
        return self.gallery_lookup.get(self.query_group(qi), {})

    def gt_index(self) -> Tensor:
        """[Nq, G] ground-truth gallery indices in each query's own group (GT_ABSENT if not there)."""
        return pack_ground_truth(
            [[self.group_items(qi).get(g, GT_ABSENT) for g in gts] for qi, gts in enumerate(self.gt_ids)]
        )


def metrics_for_ranking(
    ranking: Ranking, index: SplitIndex, eval_cfg: EvalConfig, seed: int = 0, *, breakdown_ci: bool = True
) -> dict[str, Any]:
    """The submission's ``metrics``: R@ks, exact mAP, mAP@topk_saved, CIs, breakdowns."""
    return compute_metrics(
        ranking.gt_rank,
        ks=eval_cfg.ks,
        map_cutoff=eval_cfg.topk_saved,
        full_map=True,
        attributes=index.attributes,
        bootstrap=eval_cfg.bootstrap,
        seed=seed,
        breakdown_ci=breakdown_ci,
    )


def ranked_ids(ranking: Ranking, index: SplitIndex, topk: int) -> list[list[Any]]:
    """``[[query_id, [gallery ids, best first]], ...]`` in split order, at most ``topk`` each."""
    ids = index.gallery_ids
    rows = ranking.index[:, :topk].tolist()
    return [[qid, [ids[j] for j in row if j >= 0]] for qid, row in zip(index.query_ids, rows)]
