"""Evaluation: batched embedding extraction, then ranking per gallery group and re-ranking.

1. Queries and gallery images are encoded in batches (``method.encode_query`` /
   ``encode_gallery`` in eval mode under ``torch.inference_mode``, autocast on CUDA) and
   L2-normalised; ``Encoded.extras`` are kept only when a second stage will need them.
   Under ``torchrun`` every rank encodes a shard (``DistributedSampler`` without shuffling),
   the shards are all-gathered, put back in split order and the sampler's padding dropped.
2. A query whose clip is missing from the release is not encoded: it is never ranked and
   counts as a miss (the denominator is every query of the split).
3. :func:`benchmark.evaluation.retrieval.rank` ranks each query inside its gallery group (one
   global group for ungrouped datasets, :class:`benchmark.evaluation.scoring.SplitIndex`); with ``EvalConfig.rerank`` ``all``/``topk`` and a method
   that ``supports_rerank``, its pairwise ``rerank`` scores the pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from benchmark.core.config import DataConfig, EvalConfig
from benchmark.core.prepared_collate import with_preparer
from benchmark.core.progress import StepProgress
from benchmark.evaluation import feature_cache as fcache
from benchmark.evaluation import retrieval, scoring
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.method_contract import encoded_problem
from benchmark.training.distributed import DistEnv, all_gather_cat
from benchmark.training.engine import autocast, to_device
from datasets.records import DatasetSplits
from datasets.torch_data import GalleryDataset, QueryDataset, collate_batch
from methods.base import Encoded, Method


class EvaluationError(RuntimeError):
    pass


@dataclass
class EvalOutput:
    """Rankings of every query of the split (rank 0 holds them; ``None`` elsewhere)."""

    ranking: retrieval.Ranking
    index: scoring.SplitIndex  # ids, groups, ground truth and validity, in split order
    rerank: str  # the mode actually used
    timings: dict[str, float] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)  # :func:`inference_cost`


# --- extraction --------------------------------------------------------------------------


def extract(
    method: Method,
    dataset: Dataset,
    side: str,
    *,
    env: DistEnv,
    batch_size: int,
    num_workers: int = 0,
    keep_extras: bool = False,
    amp_dtype: Optional[torch.dtype] = None,
    show_progress: bool = True,
    data_cfg: Optional[DataConfig] = None,
) -> Encoded:
    """Encode every item of ``dataset`` (``side`` = ``query`` or ``gallery``), in its order.

    ``data_cfg``: the mean/std that turn the loader's uint8 pixels into the model's input
    (default: a Query/GalleryDataset's own; required for any other dataset that yields pixels).
    Returns embeddings L2-normalised in float32 on the CPU, on every rank.
    """

    if side not in ("query", "gallery"):
        raise ValueError(f"side must be 'query' or 'gallery', got {side!r}")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise EvaluationError(f"nothing to encode on the {side} side")
    encode = method.encode_query if side == "query" else method.encode_gallery
    # the loader hands over uint8 pixels; they are normalised on the device, after the copy
    pixel_cfg = data_cfg or (dataset.cfg if isinstance(dataset, (QueryDataset, GalleryDataset)) else None)
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False, drop_last=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=with_preparer(collate_batch, method.batch_preparer()),  # e.g. tokens, in the workers
        pin_memory=env.device.type == "cuda",
    )
    embs: list[Tensor] = []
    idxs: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    was_training = method.training
    method.eval()
    t0 = time.perf_counter()
    with StepProgress(f"encode {side}", len(loader), enabled=show_progress and env.is_main, unit="items/s") as prog:
        with torch.inference_mode():  # no autograd records, no version counters
            for b, batch in enumerate(loader):
                with autocast(env.device, amp_dtype):
                    enc = encode(to_device(batch, env.device, pixel_cfg))
                # one device-to-host copy a batch; the contract is checked on the copy (a non-finite
                # value stays non-finite through the normalisation)
                emb = (
                    retrieval.l2_normalize(enc.embedding.detach()).cpu() if isinstance(enc.embedding, Tensor) else None
                )
                checked = Encoded(emb, enc.extras) if emb is not None else enc
                problem = encoded_problem(
                    method, f"encode_{side}", checked, len(batch["index"]), embs[0].shape[1] if embs else None
                )
                if problem:
                    raise EvaluationError(problem)
                embs.append(emb)
                idxs.append(batch["index"].cpu())
                if keep_extras:
                    for k, v in enc.extras.items():
                        extras.setdefault(k, []).append(v.detach().cpu())
                done = sum(len(i) for i in idxs) * env.world_size
                prog.update(b + 1, rate=done / max(time.perf_counter() - t0, 1e-9))
    method.train(was_training)
    emb = all_gather_cat(torch.cat(embs), env)
    index = all_gather_cat(torch.cat(idxs), env)
    out = torch.zeros(n, emb.shape[1], dtype=emb.dtype)
    out[index] = emb
    ex_out: dict[str, Tensor] = {}
    for k, parts in extras.items():
        full = all_gather_cat(torch.cat(parts), env)
        holder = torch.zeros((n, *full.shape[1:]), dtype=full.dtype)
        holder[index] = full
        ex_out[k] = holder
    return Encoded(out, ex_out)


# --- the whole evaluation ----------------------------------------------------------------


def evaluate(
    method: Method,
    splits: DatasetSplits,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    *,
    env: DistEnv,
    num_workers: int = 0,
    amp_dtype: Optional[torch.dtype] = None,
    show_progress: bool = True,
    feature_cache: Optional["FeatureCache"] = None,
    dataset_hook: Optional[Callable[[Dataset, str], Dataset]] = None,
) -> Optional[EvalOutput]:
    """Encode, rank (and re-rank) ``splits``' test queries; rank 0 gets the result.

    With ``feature_cache`` (:mod:`benchmark.evaluation.feature_cache`) embeddings already computed for
    these weights, data and configuration are read back instead of re-encoded.
    ``dataset_hook(dataset, side)`` prepares a dataset before it is encoded (the runner's
    decoded-frame cache, :mod:`datasets.frame_cache`).
    """

    mode = eval_cfg.rerank
    if mode not in ("none", "all", "topk"):
        raise EvaluationError(f"rerank must be none, all or topk, got {mode!r}")
    if mode != "none" and not method.supports_rerank:  # per instance (e.g. RICE without PMD)
        raise EvaluationError(
            f"--rerank {mode}: method {type(method).__name__} has no second stage (supports_rerank is False)"
        )
    if not splits.queries or not splits.gallery:
        raise EvaluationError(
            f"dataset {splits.name} has {len(splits.queries)} queries and {len(splits.gallery)} gallery images; "
            "both are needed"
        )
    index = scoring.SplitIndex.from_splits(splits)
    keep = mode != "none"
    present = [q for q in splits.queries if not q.missing]
    timings: dict[str, float] = {}
    common: dict[str, Any] = dict(
        env=env,
        batch_size=eval_cfg.batch_size,
        num_workers=num_workers,
        keep_extras=keep,
        amp_dtype=amp_dtype,
        show_progress=show_progress,
        data_cfg=data_cfg,
    )
    ctx = (
        feature_cache.context(
            method, annotation_checksum=splits.annotation_checksum, profile="", data_cfg=data_cfg, amp_dtype=amp_dtype
        )
        if feature_cache is not None
        else None
    )
    hook = dataset_hook or (lambda ds, side: ds)
    spent: dict[str, float] = {}  # seconds in extract() per side: encoded here, not read from the feature cache

    def encode(side: str, make: Callable[[], Dataset]) -> Encoded:
        ds = hook(make(), side)  # opening or building the decoded-frame cache is not the encoding's cost
        t = time.perf_counter()
        enc = extract(method, ds, side, **common)
        spent[side] = time.perf_counter() - t
        return enc

    t0 = time.perf_counter()
    enc_present = (
        fcache.cached(
            ctx,
            "query",
            [q.query_id for q in present],
            need_extras=keep,
            env=env,
            compute=lambda: encode("query", lambda: QueryDataset(present, data_cfg)),
        )
        if present
        else None
    )
    timings["encode_query_s"] = spent.get("query", time.perf_counter() - t0)
    t1 = time.perf_counter()
    g_enc = fcache.cached(
        ctx,
        "gallery",
        [g.image_id for g in splits.gallery],
        need_extras=keep,
        env=env,
        compute=lambda: encode("gallery", lambda: GalleryDataset(splits.gallery, data_cfg)),
    )
    timings["encode_gallery_s"] = spent.get("gallery", time.perf_counter() - t1)
    q_enc = _scatter_queries(enc_present, index.valid, g_enc.embedding.shape[1])
    if not env.is_main:
        return None
    score_pairs = _rerank_callback(method, q_enc, g_enc, env, amp_dtype, eval_cfg.batch_size) if keep else None
    t2 = time.perf_counter()
    ranking = retrieval.rank(
        q_enc.embedding,
        g_enc.embedding,
        index.query_groups,
        index.gallery_groups,
        k=max(eval_cfg.topk_saved, max(eval_cfg.ks)),
        gt_index=index.gt_index(),
        query_valid=index.valid,
        score_pairs=score_pairs,
        mode=mode,
        rerank_topk=eval_cfg.rerank_topk,  # type: ignore[arg-type]
    )
    timings["rank_s"] = time.perf_counter() - t2
    cache_state = "off" if ctx is None else ("miss" if "query" in spent or not present else "hit")
    return EvalOutput(
        ranking=ranking,
        index=index,
        rerank=mode,
        timings=timings,
        inference=inference_cost(
            timings, len(present), len(splits.gallery), int(ranking.pairs_scored), cache_state, env.world_size
        ),
    )


def inference_cost(
    timings: dict[str, float], queries: int, gallery: int, pairs_scored: int, feature_cache: str, world_size: int = 1
) -> dict[str, Any]:
    """The evaluation's cost for the submission's provenance (``provenance.inference``).

    Queries/s is what serving a query costs once the gallery is indexed: encoding the present
    queries (loading their frames, the model's forward pass) plus ranking them (a second stage's
    pair scoring included), on this run's devices and threads; building the decoded-frame cache
    is not counted. Not measured (None) when the query features came from the feature cache.
    """
    seconds = timings["encode_query_s"] + timings["rank_s"]
    measured = feature_cache != "hit" and queries > 0 and seconds > 0
    return {
        "queries": queries,
        "gallery": gallery,
        "pairs_scored": pairs_scored,
        **{k: round(float(v), 4) for k, v in timings.items()},
        "queries_per_s": round(queries / seconds, 3) if measured else None,
        "feature_cache": feature_cache,
        "threads": torch.get_num_threads(),
        "world_size": int(world_size),
    }


def _scatter_queries(enc: Optional[Encoded], valid: Tensor, dim: int) -> Encoded:
    """Embeddings of the present queries back at their positions; zeros for missing ones."""
    n = valid.numel()
    if enc is None:
        return Encoded(torch.zeros(n, dim))
    if bool(valid.all()):
        return enc
    pos = torch.nonzero(valid, as_tuple=True)[0]
    emb = torch.zeros(n, enc.embedding.shape[1], dtype=enc.embedding.dtype)
    emb[pos] = enc.embedding
    extras = {}
    for k, v in enc.extras.items():
        full = torch.zeros((n, *v.shape[1:]), dtype=v.dtype)
        full[pos] = v
        extras[k] = full
    return Encoded(emb, extras)


def _rerank_callback(
    method: Method, q_enc: Encoded, g_enc: Encoded, env: DistEnv, amp_dtype: Optional[torch.dtype], chunk: int
):
    """``score_pairs(query_idx, gallery_idx)`` for :func:`retrieval.rank`, via ``method.rerank``.

    Pairs go to the method ``chunk`` at a time, which bounds the memory a second stage over
    patch tokens needs.
    """

    q_enc, g_enc = resident(q_enc, env.device), resident(g_enc, env.device)

    def score_pairs(q_idx: Tensor, g_idx: Tensor) -> Tensor:
        method.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, q_idx.numel(), chunk):
                q = q_enc.select(q_idx[s : s + chunk].to(q_enc.embedding.device)).to(env.device, non_blocking=True)
                g = g_enc.select(g_idx[s : s + chunk].to(g_enc.embedding.device)).to(env.device, non_blocking=True)
                with autocast(env.device, amp_dtype):
                    scores = method.rerank(q, g)
                out.append(scores.float().reshape(-1))
        return torch.cat(out).cpu()  # one copy to the host per call

    return score_pairs


def resident(enc: Encoded, device: torch.device, share: float = 0.5) -> Encoded:
    """``enc`` where the second stage reads it: on the GPU when it fits in ``share`` of the free
    memory (each chunk is then an index on the device, not a copy over PCIe), else in pinned
    host memory (chunks copied without blocking). Unchanged on the CPU."""
    if device.type != "cuda":
        return enc
    tensors = [enc.embedding, *enc.extras.values()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size <= share * free:
        return enc.to(device)
    return Encoded(enc.embedding.pin_memory(), {k: v.pin_memory() for k, v in enc.extras.items()})
