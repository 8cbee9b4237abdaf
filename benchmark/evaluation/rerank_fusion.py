"""The weight of a fused second stage, chosen on pairs held out of the training data.

A method whose ``needs_rerank_validation`` is true (RICE with ``rerank_score=fused`` and no
``rerank_fuse_weight``) ranks its top-K by ``cosine + w x second-stage score``. ``w`` must not
be tuned on the test split, so before training :func:`carve_validation` holds out whole
training livestreams (LPR4M; single products where there is one global gallery): their
clips become queries, their shop images a per-livestream gallery, and none of their pairs is
trained on. After training :func:`choose_fuse_weight` ranks those queries by the first-stage
cosine, scores each query's top-K with the second stage once, and picks the ``w`` of
``FUSE_GRID`` with the highest R1 (ties: the smallest ``w``, i.e. the one closest to the first
stage). The weight goes into the method's config, so the submission records it; the scan is
written to the run directory (``rerank_fusion.json``).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from benchmark.core.atomic import atomic_write_json
from benchmark.core.config import DataConfig, EvalConfig
from benchmark.evaluation import evaluate
from benchmark.training.distributed import DistEnv
from benchmark.training.engine import autocast
from datasets.records import DatasetSplits, GalleryItem, Query, livestream_of
from datasets.torch_data import GalleryDataset, QueryDataset
from methods.base import Method

FUSE_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
VALIDATION_FRACTION = 0.1
VALIDATION_MAX_PAIRS = 2000  # enough to choose one weight; bounds the second-stage cost on real data
VALIDATION_SEED = 0


@dataclass
class FusionChoice:
    weight: float
    r1_by_weight: dict[float, float]  # validation R1 (percent) of the fused top-K per weight
    r1_first_stage: float  # validation R1 of the cosine alone (w = 0)
    r1_second_stage: float  # validation R1 of the second-stage score alone over the same top-K
    queries: int
    pairs_scored: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "r1_by_weight": {str(k): v for k, v in self.r1_by_weight.items()},
            "r1_first_stage": self.r1_first_stage,
            "r1_second_stage": self.r1_second_stage,
            "queries": self.queries,
            "pairs_scored": self.pairs_scored,
            **self.extra,
        }


def carve_validation(
    splits: DatasetSplits,
    fraction: float = VALIDATION_FRACTION,
    seed: int = VALIDATION_SEED,
    max_pairs: int = VALIDATION_MAX_PAIRS,
) -> tuple[DatasetSplits, DatasetSplits]:
    """(``splits`` training on the rest, a validation split of held-out training groups).

    Groups are livestreams where the data ranks within livestreams (``splits.grouped``), else
    products; whole groups, in a seeded order, are held out until they hold ``fraction`` of the
    pairs or ``max_pairs`` (at least one group). Pairs whose shop image is in the validation
    gallery are dropped from training too."""
    key = livestream_of if splits.grouped else (lambda p: p.product_id)
    sizes: dict[str, int] = {}
    for p in splits.train:
        sizes[key(p)] = sizes.get(key(p), 0) + 1
    groups = sorted(sizes)
    if len(groups) < 2:
        raise ValueError(f"{splits.name}: {len(groups)} training group(s); a validation split needs at least 2")
    random.Random(seed).shuffle(groups)
    target = min(math.ceil(fraction * len(splits.train)), max_pairs)
    held: set[str] = set()
    count = 0
    for g in groups[:-1]:  # never every group
        if held and count >= target:
            break
        held.add(g)
        count += sizes[g]
    queries: list[Query] = []
    gallery: dict[str, GalleryItem] = {}
    for i, p in enumerate(p for p in splits.train if key(p) in held):
        group = key(p) if splits.grouped else None
        queries.append(Query(query_id=f"val-{i}-{p.clip.clip_id}", clip=p.clip, gt_ids=(p.image_id,), group=group))
        gallery.setdefault(
            p.image_id, GalleryItem(p.image_id, p.image_path, group=group, title=p.title, category=p.category)
        )
    train = [p for p in splits.train if key(p) not in held and p.image_id not in gallery]
    rest = dataclasses.replace(splits, train=train)
    val = dataclasses.replace(
        splits, name=f"{splits.name}-validation", train=[], queries=queries, gallery=list(gallery.values()), missing=[]
    )
    return rest, val


@torch.no_grad()
def choose_fuse_weight(
    method: Any,
    val: DatasetSplits,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    *,
    env: DistEnv,
    num_workers: int = 0,
    amp_dtype: Optional[torch.dtype] = None,
    grid: tuple[float, ...] = FUSE_GRID,
) -> FusionChoice:
    """Scan ``grid`` on ``val`` (top ``eval_cfg.rerank_topk`` by cosine) and return the best weight."""

    common = dict(
        env=env,
        batch_size=eval_cfg.batch_size,
        num_workers=num_workers,
        keep_extras=True,
        amp_dtype=amp_dtype,
        show_progress=False,
        data_cfg=data_cfg,
    )
    q_enc = evaluate.extract(method, QueryDataset(val.queries, data_cfg), "query", **common)
    g_enc = evaluate.extract(method, GalleryDataset(val.gallery, data_cfg), "gallery", **common)
    cand, cos = top_candidates(q_enc.embedding, g_enc.embedding, val, eval_cfg.rerank_topk)
    g_pos = {g.image_id: j for j, g in enumerate(val.gallery)}
    gt = [torch.tensor([j == g_pos[q.gt_ids[0]] for j in c], dtype=torch.bool) for q, c in zip(val.queries, cand)]
    q_idx = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(cand)])
    g_idx = torch.cat([torch.tensor(c, dtype=torch.long) for c in cand])
    method.eval()
    second = []
    for s in range(0, q_idx.numel(), eval_cfg.batch_size):
        q = q_enc.select(q_idx[s : s + eval_cfg.batch_size]).to(env.device)
        g = g_enc.select(g_idx[s : s + eval_cfg.batch_size]).to(env.device)
        with autocast(env.device, amp_dtype):
            second.append(method.second_stage_scores(q, g).cpu())
    second_all = torch.cat(second).split([len(c) for c in cand])
    r1 = {w: fused_r1(cos, second_all, gt, w) for w in grid}
    best = max(grid, key=lambda w: (r1[w], -w))
    return FusionChoice(
        weight=best,
        r1_by_weight=r1,
        r1_first_stage=fused_r1(cos, second_all, gt, 0.0),
        r1_second_stage=fused_r1([torch.zeros_like(c) for c in cos], second_all, gt, 1.0),
        queries=len(val.queries),
        pairs_scored=int(q_idx.numel()),
    )


def top_candidates(q_emb: Tensor, g_emb: Tensor, val: DatasetSplits, k: int) -> tuple[list[list[int]], list[Tensor]]:
    """Each query's top ``k`` gallery positions by cosine within its group (ties: gallery order)
    and their cosines, computed one group at a time."""
    by_group: dict[Any, list[int]] = {}
    for j, g in enumerate(val.gallery):
        by_group.setdefault(g.group if val.grouped else None, []).append(j)
    cand: list[list[int]] = [[] for _ in val.queries]
    cos: list[Tensor] = [torch.zeros(0) for _ in val.queries]
    q_rows: dict[Any, list[int]] = {}
    for i, q in enumerate(val.queries):
        q_rows.setdefault(q.group if val.grouped else None, []).append(i)
    for grp, rows in q_rows.items():
        cols = torch.tensor(by_group.get(grp, []), dtype=torch.long)
        if not len(cols):
            continue
        scores = q_emb[rows].float() @ g_emb[cols].float().t()
        order = torch.sort(-scores, dim=1, stable=True).indices[:, : min(k, len(cols))]
        for r, i in enumerate(rows):
            cand[i] = cols[order[r]].tolist()
            cos[i] = scores[r, order[r]]
    return cand, cos


def fused_r1(cos: list[Tensor], second: list[Tensor], gt: list[Tensor], weight: float) -> float:
    """R1 (percent) of ranking each query's candidates by ``cos + weight x second`` (ties: the
    first-stage order); a query whose ground truth is not among its candidates is a miss."""
    hits = 0
    for c, s, g in zip(cos, second, gt):
        if len(c):
            hits += int(bool(g[int(torch.argmax(c + weight * s))]))  # argmax keeps the first of ties
    return 100.0 * hits / max(len(cos), 1)


def apply_choice(method: Method, choice: FusionChoice, run_dir: Optional[Path] = None) -> None:
    """Give the method the chosen weight (its config records it) and write the scan to the run dir."""
    method.set_rerank_fuse_weight(float(choice.weight))
    if run_dir is not None:
        atomic_write_json(Path(run_dir) / "rerank_fusion.json", choice.to_dict())


def carve_if_needed(method: Method, splits: DatasetSplits) -> tuple[DatasetSplits, Optional[DatasetSplits]]:
    """The runner's step before training: (splits to train on, validation split or None)."""
    if not method.needs_rerank_validation:
        return splits, None
    return carve_validation(splits)
