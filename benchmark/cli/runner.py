"""One benchmark run: dataset -> method -> train -> evaluate -> submission -> leaderboard.

:func:`run` takes a resolved :class:`~benchmark.core.config.RunConfig` and

1. joins the ``torchrun`` group if there is one and seeds every generator;
2. loads the dataset from ``DATASETS`` (a synthetic one is generated into the cache on
   first use; rank 0 goes first, the other ranks then read the cache);
3. builds :class:`~methods.base.DataInfo` (product and category indices from the
   training split) and the method (``build_method`` with the ``--set`` overrides);
4. trains it with :mod:`benchmark.training.engine` (skipped with ``epochs == 0``), evaluates it
   with :mod:`benchmark.evaluation.evaluate`;
5. on rank 0 writes the submission (by default under ``runs/results/``, the user's results:
   never over the committed record in ``results/``), regenerates the user's leaderboard there,
   returns its table and says how the run compares with the committed row of the same name
   (:func:`benchmark.reports.publish.committed_comparison`).

Before any training the run's identity (:mod:`benchmark.record.run_identity`: dataset instance,
truncation, method code, profile, overrides) is checked against the submission it would
write: one of another identity is never replaced without ``--overwrite``; a ``--resume``
with no checkpoint to resume is refused.

Run directory: ``<output_dir>/<dataset>/<method>[-<variant>]/<profile>-seed<N>/`` holding
``config.json``, ``last.pt`` (checkpoint) and the run's copy of the submission. Test-set
embeddings are cached under ``<output_dir>/feature-cache/`` (:mod:`benchmark.evaluation.feature_cache`;
``--no-feature-cache`` turns it off).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmark.cli.run_setup import (
    SYNTH_DATA_SEED,
    batch_groups,
    build,
    check_before_training,
    data_info,
    identity_for,
    load_initial_weights,
    load_splits,
    method_label,
    num_workers_for,
    run_dir_for,
    run_identity,
    run_variant,
    trains,
    with_frame_cache,
)
from benchmark.core.config import RunConfig
from benchmark.core.jsonable import to_jsonable
from benchmark.core.progress import console
from benchmark.core.registry import METHODS
from benchmark.evaluation import evaluate, rerank_fusion
from benchmark.evaluation.feature_cache import FEATURE_CACHE_DIR, FeatureCache
from benchmark.record import provenance
from benchmark.record import run_identity as ident
from benchmark.record.submission import starting_point
from benchmark.reports import publish
from benchmark.training import distributed as D
from benchmark.training import engine
from benchmark.training.checkpoint import save_config
from benchmark.training.seeding import seed_everything
from datasets.frame_selection import refuse_unprepared
from datasets.records import DatasetSplits
from datasets.shard_stream import stream_factory
from datasets.torch_data import PairDataset
from methods.base import Method


@dataclass
class RunResult:
    run_dir: Path
    method_name: str  # with the variant, e.g. "rice-icl+pmd"
    metrics: Optional[dict[str, Any]] = None
    submission_path: Optional[Path] = None
    train: Optional[engine.TrainResult] = None
    evaluation: Optional[evaluate.EvalOutput] = None
    leaderboard_table: Optional[Any] = None
    leaderboard_error: Optional[str] = None  # the leaderboard could not be regenerated (why)
    committed: Optional[str] = (
        None  # how it compares with the committed row of the same name (publish.committed_comparison)
    )
    timings: dict[str, float] = field(default_factory=dict)


# --- the run -----------------------------------------------------------------------------


def run(
    cfg: RunConfig,
    *,
    num_workers: Optional[int] = None,
    show_progress: bool = True,
    write_leaderboard: bool = True,
    overwrite: bool = False,
) -> RunResult:
    """Train and evaluate ``cfg.method`` on ``cfg.dataset``; see the module docstring.

    ``overwrite``: replace an existing submission of another run identity
    (:mod:`benchmark.record.run_identity`; refused otherwise, before any training)."""
    env = D.init_distributed(cfg.device)
    try:
        return _run(cfg, env, num_workers, show_progress, write_leaderboard, overwrite)
    finally:
        D.cleanup(env)


@dataclass
class Prepared:
    """What the stages after :func:`prepare` share: the data, the model and the run's record."""

    splits: DatasetSplits
    train_splits: DatasetSplits  # less the held-out pairs of a fused second stage
    validation: Any  # those held-out pairs (rerank_fusion), or None
    products: dict[str, int]
    categories: dict[str, int]
    method: Method
    variant: str
    label: str
    run_dir: Path
    workers: int
    seeds: dict[str, Any]
    record: dict[str, Any]  # the submission's provenance.identity
    identity: dict[str, Any]  # what a checkpoint must have been trained as (--resume)
    resolved: dict[str, Any]  # the run directory's config.json
    initial_weights: Optional[dict[str, Any]]
    weights_files: Any
    start: Optional[str]  # "untrained" / "zero-shot" for an evaluation of the initial weights
    load_s: float


def _run(
    cfg: RunConfig,
    env: D.DistEnv,
    num_workers: Optional[int],
    show_progress: bool,
    write_leaderboard: bool,
    overwrite: bool = False,
) -> RunResult:
    con = console(env.is_main)
    t_all = time.perf_counter()
    p = prepare(cfg, env, num_workers, overwrite, con)
    train_result = train_stage(cfg, env, p, show_progress, con)
    out, eval_s = evaluate_stage(cfg, env, p, show_progress, con)
    result = RunResult(run_dir=p.run_dir, method_name=p.label, train=train_result, evaluation=out)
    result.timings = {"load_s": p.load_s, "train_s": train_result.wall_s if train_result else 0.0, "eval_s": eval_s}
    if env.is_main and out is not None:
        result.timings["total_s"] = time.perf_counter() - t_all
        publish_stage(cfg, env, p, out, train_result, result, overwrite, write_leaderboard)
    D.barrier(env)
    return result


def prepare(cfg: RunConfig, env: D.DistEnv, num_workers: Optional[int], overwrite: bool, con: Any) -> Prepared:
    """Seed, load the data, build the method (and its ``--weights``), name the run and check,
    before any training, that its submission may be written."""
    seeds = seed_everything(cfg.seed, deterministic=cfg.deterministic, rank=env.rank)
    METHODS.get(cfg.method)  # fail on an unknown name before loading any data
    t0 = time.perf_counter()
    splits = load_splits(cfg, env)
    # a root prepared with --frames-per-clip T holds only the frames read at T: refuse another T now
    refuse_unprepared([p.clip for p in splits.train] + [q.clip for q in splits.queries], cfg.profile.data.num_frames)
    load_s = time.perf_counter() - t0
    info, products, categories = data_info(splits, cfg)
    # the same initial weights on every rank (DDP broadcasts rank 0's anyway, but an
    # evaluation-only run (epochs 0) has no DDP: every rank must encode with one model)
    seed_everything(cfg.seed, deterministic=cfg.deterministic, rank=0)
    method = build(cfg, info)
    initial_weights = load_initial_weights(method, cfg.weights, con) if cfg.weights is not None else None
    variant = run_variant(cfg, method)
    label = method_label(cfg.method, variant)
    method_cfg = to_jsonable(dataclasses.asdict(method.cfg)) if dataclasses.is_dataclass(method.cfg) else None
    weights_files = provenance.config_files(method_cfg)  # e.g. --pretrained FILE or a plugin's --set ckpt=FILE
    start = starting_point(trains(cfg), initial_weights is not None, method_cfg, files=bool(weights_files))
    run_dir = run_dir_for(cfg, label, initial_weights["sha256"] if initial_weights else None, start)
    workers = num_workers_for(cfg, num_workers)
    con.print(
        f"[bold]{label}[/bold] on {splits.name} ({len(splits.train)} train pairs, {len(splits.queries)} queries, "
        f"{len(splits.gallery)} gallery images), profile {cfg.profile.name}, seed {cfg.seed}, "
        f"{provenance.device_string(env.device)} x{env.world_size} -> {run_dir}"
    )
    # a fused second stage's weight is chosen on held-out training pairs (benchmark.evaluation.rerank_fusion)
    train_splits, validation = rerank_fusion.carve_if_needed(method, splits)
    record = identity_for(cfg, train_splits, method, env.world_size)
    preview = publish.preview_submission(
        cfg,
        splits,
        method,
        variant,
        record,
        trains=trains(cfg),
        initial_weights=initial_weights,
        synthetic_seed=SYNTH_DATA_SEED,
        weights_files=weights_files,
    )
    check_before_training(
        cfg, env, run_dir, publish.target_path(preview, cfg.results_dir), ident.comparable(preview), overwrite
    )
    resolved = {
        "run": cfg.to_dict(),
        "method_config": method_cfg,
        "method_label": label,
        "num_parameters": method.num_parameters(),
        "seeds": seeds,
        "num_workers": workers,
        "world_size": env.world_size,
    }
    return Prepared(
        splits=splits,
        train_splits=train_splits,
        validation=validation,
        products=products,
        categories=categories,
        method=method,
        variant=variant,
        label=label,
        run_dir=run_dir,
        workers=workers,
        seeds=seeds,
        record=record,
        identity=run_identity(cfg, initial_weights),
        resolved=resolved,
        initial_weights=initial_weights,
        weights_files=weights_files,
        start=start,
        load_s=load_s,
    )


def train_stage(
    cfg: RunConfig, env: D.DistEnv, p: Prepared, show_progress: bool, con: Any
) -> Optional[engine.TrainResult]:
    """Train with the engine, or (``--epochs 0``) only place the model and write its config."""
    if not trains(cfg):
        p.method.to(env.device)
        if env.is_main:
            save_config(p.run_dir, p.resolved)
        con.print(f"no training (epochs = 0): evaluating the {'loaded' if p.initial_weights else p.start} weights")
        return None
    groups = batch_groups(cfg, p.train_splits)
    data = cfg.profile.data
    pairs = PairDataset(p.train_splits.train, data, p.products, p.categories, train=True, live_groups=groups)
    stream = stream_factory(p.train_splits.train, data.num_frames, cfg.seed)  # a sharded root streams
    if cfg.frame_cache and stream is None:
        with_frame_cache(pairs, "train", p.splits, env, p.workers, con)
    return engine.train(
        p.method,
        pairs,
        cfg.profile.train,
        env=env,
        run_dir=p.run_dir,
        seed=cfg.seed,
        num_workers=p.workers,
        resume=cfg.resume,
        config=p.resolved,
        identity=p.identity,
        show_progress=show_progress,
        groups=groups,
        stream=stream,
    )


def evaluate_stage(cfg: RunConfig, env: D.DistEnv, p: Prepared, show_progress: bool, con: Any) -> tuple[Any, float]:
    """Choose a fused second stage's weight if there is one, then evaluate on the test split;
    return the evaluation and its seconds (the test split's, the weight's choice left out)."""
    amp = engine.amp_dtype_for(env.device, cfg.profile.train.amp)
    if p.validation is not None:
        choice = rerank_fusion.choose_fuse_weight(
            p.method, p.validation, cfg.profile.data, cfg.profile.eval, env=env, num_workers=p.workers, amp_dtype=amp
        )
        rerank_fusion.apply_choice(p.method, choice, p.run_dir if env.is_main else None)
        con.print(
            f"fused second stage: weight {choice.weight} chosen on {choice.queries} held-out training clips "
            f"(validation R1 {choice.r1_by_weight[choice.weight]:.2f}; cosine alone {choice.r1_first_stage:.2f}, "
            f"second stage alone {choice.r1_second_stage:.2f})"
        )
    t0 = time.perf_counter()
    out = evaluate.evaluate(
        p.method,
        p.splits,
        cfg.profile.data,
        cfg.profile.eval,
        env=env,
        num_workers=p.workers,
        amp_dtype=amp,
        show_progress=show_progress,
        feature_cache=FeatureCache(Path(cfg.output_dir) / FEATURE_CACHE_DIR) if cfg.feature_cache else None,
        dataset_hook=(lambda ds, side: with_frame_cache(ds, side, p.splits, env, p.workers, con))
        if cfg.frame_cache
        else None,
    )
    return out, time.perf_counter() - t0


def publish_stage(
    cfg: RunConfig,
    env: D.DistEnv,
    p: Prepared,
    out: Any,
    train_result: Optional[engine.TrainResult],
    result: RunResult,
    overwrite: bool,
    write_leaderboard: bool,
) -> None:
    """Rank 0: write the submission (and the user's leaderboard) and fill ``result`` from it."""
    published = publish.publish(
        cfg,
        p.splits,
        p.method,
        p.variant,
        out,
        train_result=train_result,
        provenance=provenance.collect(env.device, world_size=env.world_size),
        seeds=p.seeds,
        initial_weights=p.initial_weights,
        identity=p.record,
        overwrite=overwrite,
        weights_files=p.weights_files,
        timings=result.timings,
        run_dir=p.run_dir,
        synthetic_seed=SYNTH_DATA_SEED,
        write_leaderboard=write_leaderboard,
    )
    result.metrics = published.metrics
    result.submission_path = published.submission_path
    result.leaderboard_table = published.table
    result.leaderboard_error = published.leaderboard_error
    result.committed = published.committed
