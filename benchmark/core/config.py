"""Typed run configuration: one frozen dataclass per concern, one instance per profile.

``paper`` is the official RICE code's run that produced the reported rows (the LPR4M /
LPR750K and MovingFashion ``e2e_pretraining_*.yaml`` configs of
deepalchemist/crossview-semantic-alignment, README): 10 frames, 224 px, global batch 128 (the
README's LPR4M run; the yaml files say 96), AdamW (eps 1e-6, weight decay 0.2), encoder lr 1e-6,
new modules 1e-4 (``lr_multiplier`` 100), 5,000 updates with 500 of linear warmup then cosine,
fp16, no gradient clipping (``clip_gradients: false``). The paper's text differs (batch 256,
encoder lr 1e-7, 3 epochs on the 4M set); it produced the paper's LPR4M table, which the
released code does not reproduce and this benchmark does not list: run it with
``--batch-size 256 --lr-encoder 1e-7 --epochs 3`` plus ``updates=None`` in a profile of its own.
A method's ``paper`` profile trains under this recipe except where its ``TRAIN_RECIPE`` says
otherwise (:func:`for_method`): the CNN baselines' learning rates and weight decay are their
papers', SGMN's whole recipe is its official command; command-line options override both.
``tiny`` is sized for the 2-core CPU machine: 112 px (patch 16 keeps a 7x7 grid), 4 frames
(measured: ~4 training pairs/s at 8 frames on a busy 2-core machine, too slow), a few epochs, so a method trains in minutes on ``lpr4m-synth``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmark.core.jsonable import to_jsonable


@dataclass(frozen=True)
class DataConfig:
    num_frames: int = 10
    image_size: int = 224  # center-crop size
    resize_size: int = 256  # size before the crop at evaluation (see resize_mode)
    resize_mode: str = (
        "square"  # "square": whole frame to resize x resize, as the official configs; "shorter": aspect kept
    )
    train_jitter: bool = True  # random tail cut, random resized crop, flip
    train_spatial: bool = True  # with train_jitter: the random resized crop and flip (False: eval geometry)
    interpolation: str = "bilinear"  # the evaluation geometry's resize: "bilinear" | "bicubic"
    eval_frame_pick: Optional[str] = None  # evaluation's at-most-T pick (datasets.sampling); None: the loader's
    num_workers: int = 4
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # CLIP
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256  # global, across processes and accumulation steps
    grad_accum: int = 1
    lr_encoder: float = 1e-6
    lr_new: float = 1e-4
    weight_decay: float = 0.2
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0  # global-norm clip; 0 = off (the official RICE run does not clip)
    adam_eps: float = 1e-8  # torch's default; the official RICE run uses 1e-6
    adam_beta2: float = 0.999  # torch's default; BertAdam (SGMN) uses 0.98
    # "warmup_cosine": linear warmup, then cosine over the rest; "bert_warmup_cosine": BertAdam's
    # (warmup from 0, then a cosine over the whole run's progress; benchmark.training.engine)
    schedule: str = "warmup_cosine"
    # the schedule's length in optimizer updates (the official code's max_updates); None = epochs
    updates: Optional[int] = None
    amp: bool = True  # bf16/fp16 autocast on CUDA only; ignored on the CPU
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    checkpoint_every: Optional[int] = None  # also checkpoint every N optimizer steps (mid-epoch resume)
    # "livestream": each batch is chunks of group_size pairs from one livestream (benchmark.training.grouped_sampler)
    group_batches: str = "none"
    group_size: int = 8


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 64
    ks: tuple[int, ...] = (1, 3, 5, 10)
    topk_saved: int = 50  # ranked gallery ids kept per query in the submission
    bootstrap: int = 1000  # resamples for the 95% confidence intervals
    rerank: str = "none"  # "none" | "all" (every pair of the group) | "topk"
    rerank_topk: int = 20


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    # the method's own recipe values applied over ``train`` (``Method.TRAIN_RECIPE``; see
    # :func:`for_method`), kept so the leaderboard measures changes from the method's recipe
    method_recipe: dict[str, Any] = field(default_factory=dict, hash=False)
    # the profile whose method configs (``Method.PROFILES``) this one uses, "" its own name: a
    # protocol revision that changes only the recipe (epochs, frames, pixels) reuses the models
    method_profile: str = ""


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        description="the official RICE run behind the reported rows: 10 frames, 224 px, batch 128, 5k updates, GPU",
        data=DataConfig(num_frames=10, image_size=224, resize_size=256, num_workers=8),
        train=TrainConfig(
            epochs=1,
            updates=5000,
            warmup_ratio=0.1,
            batch_size=128,
            lr_encoder=1e-6,
            lr_new=1e-4,
            weight_decay=0.2,
            adam_eps=1e-6,
            grad_clip=0.0,
            amp=True,
        ),
        eval=EvalConfig(batch_size=128, bootstrap=1000),
    ),
    "tiny": Profile(
        name="tiny",
        description="CPU-sized: 4 frames, 112 px, small models from scratch, minutes on 2 cores",
        data=DataConfig(num_frames=4, image_size=112, resize_size=128, num_workers=2, resize_mode="shorter"),
        train=TrainConfig(
            epochs=4, batch_size=32, lr_encoder=5e-4, lr_new=5e-4, weight_decay=0.05, warmup_ratio=0.1, amp=False
        ),
        eval=EvalConfig(batch_size=64, bootstrap=1000),
    ),
}
# tiny protocol v2 (issue 38): v1's models and data at half the training cost, so that the demo
# (RICE on lpr4m-synth) finishes in 10 minutes on the idle 2-core machine. Its own profile name, so
# that its rows never share a table with v1's; docs/protocol-v2.md has the candidates measured.
PROFILES["tiny-v2"] = dataclasses.replace(
    PROFILES["tiny"],
    name="tiny-v2",
    method_profile="tiny",
    description="tiny protocol v2: tiny's models, 4 frames, 112 px, 2 epochs (half of tiny's training)",
    train=dataclasses.replace(PROFILES["tiny"].train, epochs=2),
)


def method_profile(name: str) -> str:
    """The profile name whose method configs ``name`` uses (itself unless it says otherwise)."""
    profile = PROFILES.get(name)
    return (profile.method_profile or name) if profile is not None else name


# Where a run writes its submission and the user's leaderboard unless told otherwise: untracked
# (under runs/, which git ignores), so that a run never modifies the committed record in results/
# (its submissions are remade on purpose with ``--results-dir results``).
USER_RESULTS_DIR = Path("runs") / "results"


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``run_benchmark.py --method M --dataset D`` run resolves to."""

    method: str
    dataset: str
    profile: Profile
    data_root: Optional[Path] = None
    seed: int = 0
    output_dir: Path = Path("runs")
    results_dir: Path = USER_RESULTS_DIR
    method_overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    resume: bool = False
    deterministic: bool = False
    synth_size: str = "default"
    feature_cache: bool = True  # reuse cached test embeddings (benchmark.evaluation.feature_cache)
    frame_cache: bool = True  # decode + resize frames once (datasets.frame_cache); same inputs
    weights: Optional[Path] = None  # start from a run checkpoint's model weights (``--weights``)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def for_method(profile: Profile, train_recipe: Any) -> Profile:
    """``profile`` with a method's own training recipe for it (``Method.TRAIN_RECIPE``, keyed
    by profile name) applied over the profile's; unchanged when the method has none. A ``"data"``
    entry holds :class:`DataConfig` fields (the method's official preprocessing)."""
    recipe = dict((train_recipe or {}).get(profile.name) or {})
    if not recipe:
        return profile
    data = dict(recipe.pop("data", None) or {})  # the method's own preprocessing (DataConfig fields)
    unknown = sorted(set(recipe) - {f.name for f in dataclasses.fields(TrainConfig)})
    unknown += sorted(f"data.{k}" for k in set(data) - {f.name for f in dataclasses.fields(DataConfig)})
    if unknown:
        raise ValueError(f"TRAIN_RECIPE[{profile.name!r}] names unknown training fields {unknown}")
    return dataclasses.replace(
        profile,
        train=dataclasses.replace(profile.train, **recipe),
        data=dataclasses.replace(profile.data, **data),
        method_recipe=recipe | ({"data": data} if data else {}),
    )


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; profiles are {sorted(PROFILES)}") from None
