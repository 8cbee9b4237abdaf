"""Small in-memory datasets and runs for the evaluation tests (no files, no network)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Optional

import torch

from benchmark.core.config import PROFILES, Profile
from benchmark.evaluation.retrieval import l2_normalize, rank
from benchmark.evaluation.scoring import SplitIndex, metrics_for_ranking, ranked_ids
from benchmark.record.submission import build_submission
from datasets.records import ClipSource, DatasetSplits, GalleryItem, Query

ROOT = Path("/nonexistent-data-root")


def make_splits(
    *,
    n_groups: int = 4,
    per_group: int = 12,
    queries_per_group: int = 10,
    seed: int = 0,
    grouped: bool = True,
    missing: int = 1,
    name: str = "toy",
) -> DatasetSplits:
    """Grouped (LPR4M-like) or global (MovingFashion-like) splits with attributes."""
    rng = random.Random(seed)
    gallery, queries = [], []
    for g in range(n_groups):
        live = f"live{g:02d}"
        ids = [f"img-{g:02d}-{i:03d}" for i in range(per_group)]
        gallery += [GalleryItem(image_id=i, image_path=ROOT / f"{i}.jpg", group=live if grouped else None) for i in ids]
        for q in range(queries_per_group):
            qid = f"{live}-{q:03d}"
            gts = tuple(rng.sample(ids, rng.choice([1, 1, 2, 3])))
            attrs = {"scale": rng.choice(["small", "medium", "large"])}
            if rng.random() < 0.8:
                attrs["category"] = rng.choice(["dress", "shoe"])
            queries.append(
                Query(
                    query_id=qid,
                    clip=ClipSource(clip_id=qid, frame_paths=(ROOT / f"{qid}.jpg",)),
                    gt_ids=gts,
                    group=live if grouped else None,
                    attributes=attrs,
                )
            )
    for i in range(missing):  # a query whose clip the release lacks: scored as a miss
        q = queries[i]
        queries[i] = Query(
            query_id=q.query_id,
            clip=ClipSource(clip_id=q.query_id),
            gt_ids=q.gt_ids,
            group=q.group,
            attributes=q.attributes,
            missing=True,
        )
    checksum = hashlib.sha256(f"{name}-{seed}-{n_groups}-{per_group}-{grouped}".encode()).hexdigest()
    return DatasetSplits(
        name=name,
        root=ROOT,
        train=[],
        queries=queries,
        gallery=gallery,
        annotation_checksum=checksum,
        layout="toy",
        grouped=grouped,
    )


def embeddings(
    splits: DatasetSplits, *, dim: int = 16, noise: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery embeddings at random; each query near one of its ground truths plus noise."""
    gen = torch.Generator().manual_seed(seed)
    g = l2_normalize(torch.randn(len(splits.gallery), dim, generator=gen))
    pos = {(it.group, it.image_id): i for i, it in enumerate(splits.gallery)}
    q = torch.randn(len(splits.queries), dim, generator=gen) * noise
    for i, query in enumerate(splits.queries):
        j = pos.get((query.group, query.gt_ids[0]))
        if j is not None:
            q[i] += g[j]
    return l2_normalize(q), g


def make_submission(
    splits: DatasetSplits,
    *,
    method: str = "toy-method",
    variant: str = "",
    seed: int = 0,
    profile: Optional[Profile] = None,
    noise: float = 1.0,
    bootstrap: int = 200,
    date: str = "2025-01-02T03:04:05Z",
    train_s: float = 125.0,
    topk: int = 10,
    dataset_size: Optional[str] = None,
    dataset_seed: Optional[int] = None,
    dataset: Optional[str] = None,
) -> dict:
    """A complete, valid submission of a random-embedding 'method' on ``splits`` (of a run that
    trained: it has a ``provenance.training`` block)."""
    import dataclasses

    profile = profile or PROFILES["tiny"]
    profile = dataclasses.replace(profile, eval=dataclasses.replace(profile.eval, bootstrap=bootstrap, topk_saved=topk))
    index = SplitIndex.from_splits(splits)
    q, g = embeddings(splits, noise=noise, seed=seed)
    ranking = rank(
        q,
        g,
        index.query_groups,
        index.gallery_groups,
        k=max(profile.eval.topk_saved, max(profile.eval.ks)),
        gt_index=index.gt_index(),
        query_valid=index.valid,
    )
    metrics = metrics_for_ranking(ranking, index, profile.eval, seed)
    return build_submission(
        method=method,
        variant=variant,
        method_config={"dim": 16, "noise": noise},
        num_parameters=1234,
        dataset=dataset or splits.name,
        splits=splits,
        profile=profile,
        metrics=metrics,
        rankings=ranked_ids(ranking, index, profile.eval.topk_saved),
        provenance={
            "git": {"commit": "0" * 40, "dirty": False},
            "packages": {"torch": torch.__version__},
            "python": "3",
            "platform": "test",
            "device": "cpu: test",
            "world_size": 1,
            "training": {"steps": 10, "epochs_completed": 1, "resumed_from_step": None},
        },
        seed=seed,
        wall_time_s={"train": train_s, "eval": 1.5},
        date=date,
        dataset_size=dataset_size,
        dataset_seed=dataset_seed,
    )


def recall_at(sub: dict, splits: DatasetSplits, k: int) -> float:
    """R@k of a submission computed from its saved rankings alone (a hit: any ground-truth id of
    the query among its first ``k`` ids), independently of the scorer; percent of all queries."""
    gt = {q.query_id: set(q.gt_ids) for q in splits.queries}
    hits = sum(1 for qid, ids in sub["rankings"] if gt[qid] & set(ids[:k]))
    return 100.0 * hits / len(splits.queries)


def loader_for(splits: DatasetSplits):
    """A ``load_splits`` for ``leaderboard.regenerate`` that knows only ``splits`` (by name)."""
    return lambda ds: splits if ds["name"] == splits.name else None
