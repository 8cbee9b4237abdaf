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
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmark.core.config import RunConfig
from benchmark.core.jsonable import to_jsonable
from benchmark.core.progress import console
from benchmark.core.registry import DATASETS, METHODS
from benchmark.evaluation import evaluate, rerank_fusion
from benchmark.evaluation.feature_cache import FEATURE_CACHE_DIR, FeatureCache
from benchmark.record import provenance
from benchmark.record import run_identity as ident
from benchmark.record.config_diff import recipe_changes, variant_with_settings
from benchmark.record.submission import starting_point
from benchmark.reports import publish
from benchmark.training import distributed as D
from benchmark.training import engine
from benchmark.training.checkpoint import CONFIG_NAME, CheckpointError, find_resumable, load_model_weights, save_config
from benchmark.training.seeding import seed_everything
from datasets import frame_cache
from datasets.frame_selection import refuse_unprepared
from datasets.records import DatasetSplits, livestream_of
from datasets.shard_stream import stream_factory
from datasets.torch_data import PairDataset
from methods.base import DataInfo, Method, build_method

# The synthetic stand-ins are generated with this seed whatever the training seed, so that
# every method and every seed is scored on the same data.
SYNTH_DATA_SEED = 0


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


# --- pieces ------------------------------------------------------------------------------


def run_dir_for(
    cfg: RunConfig, method_label: str, weights_sha256: Optional[str] = None, start: Optional[str] = None
) -> Path:
    """``<output>/<dataset>/<label>/<profile>-seed<N>`` (``-weights-<sha8>`` for a ``--weights`` run,
    which must not overwrite the run that trained those weights, nor one trained with its config;
    ``-untrained`` / ``-zero-shot`` for an evaluation of the initial weights, ``start``)."""
    name = f"{cfg.profile.name}-seed{cfg.seed}" + (f"-weights-{weights_sha256[:8]}" if weights_sha256 else "")
    if start:
        name += f"-{start}"
    return Path(cfg.output_dir) / cfg.dataset / method_label / name


def trains(cfg: RunConfig) -> bool:
    """Whether the run trains at all (``--epochs 0`` or ``--max-steps 0``: evaluation only)."""
    t = cfg.profile.train
    return t.epochs > 0 and (t.max_steps is None or t.max_steps > 0)


def run_variant(cfg: RunConfig, method: Method) -> str:
    """The method's variant label plus the ``--set`` changes it does not name and the changes
    to the profile's training recipe (:mod:`benchmark.record.config_diff`; none for a run that trains
    nothing), so that such a run never takes the default's place."""
    default = METHODS.get(cfg.method).default_config(cfg.profile.name)
    own = (type(method).TRAIN_RECIPE or {}).get(cfg.profile.name)  # the method's recipe, however cfg was built
    recipe = recipe_changes(cfg.profile.name, cfg.profile.train, own) if trains(cfg) else {}
    return variant_with_settings(method, default, ignore_weights=cfg.weights is not None, recipe=recipe)


def method_label(name: str, variant: str) -> str:
    return f"{name}-{variant}" if variant else name


def load_splits(cfg: RunConfig, env: D.DistEnv) -> DatasetSplits:
    """The dataset's splits; rank 0 loads (and generates a synthetic set) first."""
    loader = DATASETS.get(cfg.dataset)
    root = Path(cfg.data_root) if cfg.data_root is not None else None

    def load() -> DatasetSplits:
        return loader(root, size=cfg.synth_size, seed=SYNTH_DATA_SEED)

    if env.distributed and not env.is_main:
        D.barrier(env)
        return load()
    splits = load()
    D.barrier(env)
    return splits


def data_info(splits: DatasetSplits, cfg: RunConfig) -> tuple[DataInfo, dict[str, int], dict[str, int]]:
    """DataInfo and the product / category indices (sorted ids -> 0..n-1)."""
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in splits.train}))}
    categories = {c: i for i, c in enumerate(splits.categories)}
    info = DataInfo(
        num_products=len(products),
        num_categories=len(categories),
        num_frames=cfg.profile.data.num_frames,
        image_size=cfg.profile.data.image_size,
        grouped=splits.grouped,
    )
    return info, products, categories


def run_identity(cfg: RunConfig, initial_weights: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What a checkpoint must have been trained as for ``--resume`` to continue it. A new key
    only when its feature is used: checkpoints written before it keep their identity."""
    identity: dict[str, Any] = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "profile": cfg.profile.name,
        "seed": cfg.seed,
        "method_overrides": {k: str(v) for k, v in cfg.method_overrides.items()},
        "data_root": str(cfg.data_root) if cfg.data_root else None,
        "synth_size": cfg.synth_size,
    }
    if initial_weights:
        identity["initial_weights"] = initial_weights["sha256"]
    return identity


def load_initial_weights(method: Method, path: Path, con: Any) -> dict[str, Any]:
    """``--weights``: load a run checkpoint's model weights into ``method``; return what the
    submission records (file, sha256, the source run's label, checkpoint keys left unused)."""

    unused = load_model_weights(method, path, allow_unused=True)
    h = hashlib.sha256()
    with open(path, "rb") as f:  # in chunks: a paper-profile checkpoint is hundreds of MB
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    source = None
    config = Path(path).parent / CONFIG_NAME
    if config.is_file():
        try:
            label = json.loads(config.read_text(encoding="utf-8")).get("method_label")
        except (OSError, ValueError, AttributeError):  # unreadable or not an object: source unknown
            label = None
        source = label[:200] if isinstance(label, str) else None
    con.print(
        f"weights from {path} ({source or 'source run unknown'}, sha256 {digest[:12]})"
        + (f"; {len(unused)} checkpoint tensors unused by this config, e.g. {unused[0]}" if unused else "")
    )
    return {"path": str(path), "sha256": digest, "source": source, "unused_keys": len(unused)}


class MethodBuildError(RuntimeError):
    """The method refused its configuration for this data (e.g. an image size mismatch)."""


def build(cfg: RunConfig, info: DataInfo) -> Method:
    cls = METHODS.get(cfg.method)
    try:
        return build_method(cls, cfg.profile.name, info, cfg.method_overrides)
    except (ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise MethodBuildError(f"cannot build method {cfg.method!r} (profile {cfg.profile.name}): {msg}") from exc


def with_frame_cache(dataset: Any, side: str, splits: DatasetSplits, env: D.DistEnv, workers: int, con: Any) -> Any:
    """Attach the decoded-frame cache (:mod:`datasets.frame_cache`; ``--no-frame-cache`` turns it
    off) to a torch dataset: rank 0 opens or builds it, the other ranks then open it."""

    tag = f"{splits.name}/{splits.annotation_checksum}/{side}"
    if env.distributed and not env.is_main:
        D.barrier(env)
        return frame_cache.attach(dataset, tag, num_workers=workers)
    frame_cache.attach(dataset, tag, num_workers=workers, log=con.print)
    D.barrier(env)
    return dataset


def num_workers_for(cfg: RunConfig, override: Optional[int]) -> int:
    return cfg.profile.data.num_workers if override is None else int(override)


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


def identity_for(cfg: RunConfig, splits: DatasetSplits, method: Method, world_size: int) -> dict[str, Any]:
    """The run's ``provenance.identity`` (:func:`benchmark.record.run_identity.build_identity`)."""
    t = cfg.profile.train
    planned = (
        (t.updates or ident.planned_steps(t.epochs, len(splits.train), t.batch_size, world_size, t.grad_accum))
        if trains(cfg)
        else None
    )  # a schedule in updates (the paper profile) plans exactly that many
    return ident.build_identity(
        dataset=cfg.dataset,
        annotation_checksum=splits.annotation_checksum,
        custom_root=cfg.data_root is not None,
        profile={"name": cfg.profile.name},
        method=cfg.method,
        overrides=cfg.method_overrides,
        code=ident.code_hash(method),
        seed=cfg.seed,
        max_steps=t.max_steps if trains(cfg) else None,
        planned=planned,
    )


def check_before_training(
    cfg: RunConfig, env: D.DistEnv, run_dir: Path, target: Path, record: dict[str, Any], overwrite: bool
) -> None:
    """Refuse, before any work, a ``--resume`` with nothing to resume and a submission that would
    replace one of another identity (rank 0 decides; every rank raises the same error)."""

    problem: Optional[tuple[str, str]] = None
    if env.is_main:
        if cfg.resume and trains(cfg) and find_resumable(run_dir) is None:
            problem = (
                "checkpoint",
                f"--resume: no checkpoint to resume in {run_dir} (nothing was trained there "
                f"with these settings yet); drop --resume to start the run",
            )
        else:
            try:
                ident.check_target(target, record, overwrite=overwrite)
            except ident.IdentityError as exc:
                problem = ("identity", str(exc))
    problem = D.broadcast_object(problem, env)
    if problem is not None:
        raise (CheckpointError if problem[0] == "checkpoint" else ident.IdentityError)(problem[1])


def batch_groups(cfg: RunConfig, splits: DatasetSplits) -> Optional[list[str]]:
    """Each training pair's livestream when the recipe groups batches by livestream, else None."""
    if cfg.profile.train.group_batches == "none":
        return None
    if not splits.grouped:
        raise engine.TrainingError(
            f"--group-batches {cfg.profile.train.group_batches}: {splits.name} ranks every query against one "
            "global gallery; its training pairs have no livestreams to group by"
        )
    return [livestream_of(p) for p in splits.train]


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
    identity = run_identity(cfg, initial_weights)

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

    train_result: Optional[engine.TrainResult] = None
    if trains(cfg):
        groups = batch_groups(cfg, train_splits)
        pairs = PairDataset(train_splits.train, cfg.profile.data, products, categories, train=True, live_groups=groups)
        stream = stream_factory(train_splits.train, cfg.profile.data.num_frames, cfg.seed)  # a sharded root streams
        if cfg.frame_cache and stream is None:
            with_frame_cache(pairs, "train", splits, env, workers, con)
        train_result = engine.train(
            method,
            pairs,
            cfg.profile.train,
            env=env,
            run_dir=run_dir,
            seed=cfg.seed,
            num_workers=workers,
            resume=cfg.resume,
            config=resolved,
            identity=identity,
            show_progress=show_progress,
            groups=groups,
            stream=stream,
        )
    else:
        method.to(env.device)
        if env.is_main:
            save_config(run_dir, resolved)
        con.print(f"no training (epochs = 0): evaluating the {'loaded' if initial_weights else start} weights")

    amp = engine.amp_dtype_for(env.device, cfg.profile.train.amp)
    if validation is not None:
        choice = rerank_fusion.choose_fuse_weight(
            method, validation, cfg.profile.data, cfg.profile.eval, env=env, num_workers=workers, amp_dtype=amp
        )
        rerank_fusion.apply_choice(method, choice, run_dir if env.is_main else None)
        con.print(
            f"fused second stage: weight {choice.weight} chosen on {choice.queries} held-out training clips "
            f"(validation R1 {choice.r1_by_weight[choice.weight]:.2f}; cosine alone {choice.r1_first_stage:.2f}, "
            f"second stage alone {choice.r1_second_stage:.2f})"
        )
    t1 = time.perf_counter()
    out = evaluate.evaluate(
        method,
        splits,
        cfg.profile.data,
        cfg.profile.eval,
        env=env,
        num_workers=workers,
        amp_dtype=amp,
        show_progress=show_progress,
        feature_cache=FeatureCache(Path(cfg.output_dir) / FEATURE_CACHE_DIR) if cfg.feature_cache else None,
        dataset_hook=(lambda ds, side: with_frame_cache(ds, side, splits, env, workers, con))
        if cfg.frame_cache
        else None,
    )
    eval_s = time.perf_counter() - t1
    result = RunResult(run_dir=run_dir, method_name=label, train=train_result, evaluation=out)
    result.timings = {"load_s": load_s, "train_s": train_result.wall_s if train_result else 0.0, "eval_s": eval_s}
    if env.is_main and out is not None:
        prov = provenance.collect(env.device, world_size=env.world_size)
        result.timings["total_s"] = time.perf_counter() - t_all
        published = publish.publish(
            cfg,
            splits,
            method,
            variant,
            out,
            train_result=train_result,
            provenance=prov,
            seeds=seeds,
            initial_weights=initial_weights,
            identity=record,
            overwrite=overwrite,
            weights_files=weights_files,
            timings=result.timings,
            run_dir=run_dir,
            synthetic_seed=SYNTH_DATA_SEED,
            write_leaderboard=write_leaderboard,
        )
        result.metrics = published.metrics
        result.submission_path = published.submission_path
        result.leaderboard_table = published.table
        result.leaderboard_error = published.leaderboard_error
        result.committed = published.committed
    D.barrier(env)
    return result
