"""The ``lpr4m-scale`` plan: the LPR4M test set's exact sizes, annotations only.

20,079 queries and 66,358 gallery images in 110 gallery groups (the released test split's
counts), group sizes long-tailed (Dirichlet proportions), every group with at least one query.
A small training list is planned too so that the root is a complete ``lpr4m-release`` layout.
No pixel is rendered: the evaluator and its benchmarks need ids, groups and ground truth only.
"""

from __future__ import annotations

import numpy as np

from datasets.synthetic.catalog import category_prior
from datasets.synthetic.knobs import Knobs, SizeSpec
from datasets.synthetic.plan import Live, _live_products, _make_clip, sub_seed, uuid_from


def _split_counts(rng: np.random.Generator, total: int, parts: int, minimum: int, weights: np.ndarray) -> np.ndarray:
    """``parts`` integers >= ``minimum`` summing to ``total``, proportional to ``weights``."""
    if total < parts * minimum:
        raise ValueError(f"cannot split {total} into {parts} parts of at least {minimum}")
    free = total - parts * minimum
    raw = weights / weights.sum() * free
    counts = np.floor(raw).astype(int)
    rest = free - int(counts.sum())
    counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return counts + minimum


def plan_scale(seed: int, size: SizeSpec, knobs: Knobs) -> list[Live]:
    """Training lives (``scale_train_pairs`` clips) then ``scale_groups`` test lives."""
    rng = np.random.default_rng(sub_seed(seed, 11))
    prior = category_prior(knobs.category_alpha)
    taken: set[tuple] = set()
    lives: list[Live] = []
    n_train_lives = max(1, size.scale_train_pairs // 200)
    clips_left = size.scale_train_pairs
    for i in range(n_train_lives):
        live = Live(live_id=uuid_from(rng), split="train", index=len(lives), stage_seed=int(rng.integers(2**62)))
        live.products = _live_products(rng, int(rng.integers(*size.products_per_live)), knobs, prior, taken)
        n_clips = clips_left // (n_train_lives - i)
        clips_left -= n_clips
        t_ms = 0
        for _ in range(n_clips):
            clip, t_ms = _make_clip(rng, live, int(rng.integers(len(live.products))), t_ms, size, knobs)
            live.clips.append(clip)
        lives.append(live)
    weights = rng.dirichlet(np.full(size.scale_groups, 3.0))
    gallery_sizes = _split_counts(rng, size.scale_gallery, size.scale_groups, 20, weights)
    query_counts = _split_counts(
        rng, size.scale_queries, size.scale_groups, 1, weights * rng.uniform(0.7, 1.3, size.scale_groups)
    )
    for g in range(size.scale_groups):
        live = Live(live_id=uuid_from(rng), split="test", index=len(lives), stage_seed=int(rng.integers(2**62)))
        n_images = int(gallery_sizes[g])
        products = _live_products(rng, n_images, knobs, prior, set())  # unique within the group
        # some products carry a second shop image; keep the group's image count exact
        kept, count = [], 0
        for p in products:
            if count == n_images:
                break
            count += 1
            if count < n_images and rng.random() < knobs.multi_gt_rate:
                p.extra_image_id = uuid_from(rng)
                count += 1
            kept.append(p)
        live.products = kept
        t_ms = 0
        for _ in range(int(query_counts[g])):
            clip, t_ms = _make_clip(rng, live, int(rng.integers(len(live.products))), t_ms, size, knobs)
            live.clips.append(clip)
        lives.append(live)
    return lives
