"""The pieces of one run that :mod:`benchmark.cli.runner` puts together: where it writes, what it
is called, the data and model it builds, its identity and the checks made before any training.

Each is a function of the resolved :class:`~benchmark.core.config.RunConfig` (and the data or
model already built), so the runner's stages read as a sequence of named steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from benchmark.core.config import RunConfig
from benchmark.core.digest import sha256_file
from benchmark.core.registry import DATASETS, METHODS
from benchmark.record import run_identity as ident
from benchmark.record.config_diff import recipe_changes, variant_with_settings
from benchmark.training import distributed as D
from benchmark.training import engine
from benchmark.training.checkpoint import CONFIG_NAME, CheckpointError, find_resumable, load_model_weights
from datasets import frame_cache
from datasets.records import DatasetSplits, livestream_of
from methods.base import DataInfo, Method, build_method

# The synthetic stand-ins are generated with this seed whatever the training seed, so that
# every method and every seed is scored on the same data.
SYNTH_DATA_SEED = 0


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
    digest = sha256_file(path)
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
