"""The registered synthetic datasets ``lpr4m-synth`` and ``movingfashion-synth``.

Each generates a root in the real layout (into the cache when ``data_root`` is None, reusing it
when the parameter hash matches) and then loads it with the REAL loader (``lpr4m`` /
``movingfashion``), so a synthetic copy goes through exactly the code a real release does.

Cache folder: ``cache_dir`` if given, else ``$LPR_BENCH_CACHE/synth``, else ``<repo>/.cache/synth``;
inside it ``<layout>-<size>-<seed>-<params hash>/`` (the hash covers the generator version, the
size and every knob). Environment: ``LPR_BENCH_SYNTH_LAYOUT`` (``lpr4m-release`` | ``lpr750k``)
picks the LPR4M layout, ``LPR_BENCH_SYNTH_KNOBS`` (a JSON object) overrides knobs.
With ``data_root`` given, that folder is loaded as is (e.g. the output of
``run_benchmark.py synth``); it is generated first only if it does not exist or is empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import datasets.lpr4m  # noqa: F401  (registers "lpr4m")
from benchmark.core.registry import DATASETS
from datasets.faults import Faults
from datasets.movingfashion import FRAME_PICKS, MISSING_TEST_POLICIES, policy, read_movingfashion
from datasets.records import DatasetSplits
from datasets.synthetic.generate import canonical_layout, generate
from datasets.synthetic.knobs import get_size, knobs_from_dict, params_hash

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_base(cache_dir: Optional[Path] = None) -> Path:
    """The folder holding the generated synthetic roots."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LPR_BENCH_CACHE")
    return (Path(env) if env else REPO_ROOT / ".cache") / "synth"


def env_knobs() -> dict[str, Any]:
    text = os.environ.get("LPR_BENCH_SYNTH_KNOBS", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"LPR_BENCH_SYNTH_KNOBS is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError("LPR_BENCH_SYNTH_KNOBS must be a JSON object {knob: value}")
    return value


# Knob values earlier generator versions wrote by default. A committed row made before a default
# changed records its data by annotation checksum; it is re-scored on the world it was made on
# (lpr4m-synth wrote English ASR and titles until generator version 8 made Chinese the default).
EARLIER_DEFAULTS: dict[str, tuple[dict[str, Any], ...]] = {"lpr4m-synth": ({"text_language": "en"},)}


def synth_root(
    layout: str,
    data_root: Optional[Path],
    size: str,
    seed: int,
    cache_dir: Optional[Path],
    knobs: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Where the synthetic root is (generated if needed); ``knobs`` over ``LPR_BENCH_SYNTH_KNOBS``."""
    layout = canonical_layout(layout)
    knobs = knobs_from_dict({**env_knobs(), **dict(knobs or {})})
    if data_root is not None:
        root = Path(data_root)
        if root.is_dir() and any(root.iterdir()):
            return root
        return generate(layout, root, seed=seed, size=size, knobs=knobs)
    key = params_hash(layout, get_size(size), knobs, seed)
    return generate(layout, cache_base(cache_dir) / f"{layout}-{size}-{seed}-{key}", seed=seed, size=size, knobs=knobs)


@DATASETS.register(
    "lpr4m-synth", description="synthetic livestreams in the LPR4M layout (generated, cached), read by the lpr4m loader"
)
def load_lpr4m_synth(
    data_root: Optional[Path] = None,
    *,
    size: str = "default",
    seed: int = 0,
    cache_dir: Optional[Path] = None,
    knobs: Optional[Mapping[str, Any]] = None,
) -> DatasetSplits:
    """Generate (or reuse) a synthetic LPR4M root and load it with the real ``lpr4m`` loader."""

    layout = os.environ.get("LPR_BENCH_SYNTH_LAYOUT", "lpr4m-release")
    if canonical_layout(layout) == "movingfashion":
        raise ValueError("LPR_BENCH_SYNTH_LAYOUT must be lpr4m-release or lpr750k for lpr4m-synth")
    root = synth_root(layout, data_root, size, seed, cache_dir, knobs)
    splits = DATASETS.get("lpr4m")(root, size=size, seed=seed)
    splits.name = "lpr4m-synth"
    return splits


@DATASETS.register(
    "movingfashion-synth",
    description="synthetic fashion videos in the MovingFashion layout (generated, cached), read by the movingfashion loader",
)
def load_movingfashion_synth(
    data_root: Optional[Path] = None, *, size: str = "default", seed: int = 0, cache_dir: Optional[Path] = None
) -> DatasetSplits:
    """Generate (or reuse) a synthetic MovingFashion root and load it with the real loader."""

    root = synth_root("movingfashion", data_root, size, seed, cache_dir)
    # the committed movingfashion-synth rows were measured with these two (the real dataset follows
    # RICE's script: rice-mf pick, missing test video dropped; datasets/movingfashion.py)
    faults = Faults(strict=True)
    splits = read_movingfashion(
        root,
        faults,
        frame_pick=policy("LPR_BENCH_MF_FRAME_PICK", "linspace", FRAME_PICKS),
        missing_test=policy("LPR_BENCH_MF_MISSING_TEST", "miss", MISSING_TEST_POLICIES),
    )
    faults.log_summary("movingfashion-synth")
    splits.name = "movingfashion-synth"
    return splits


def load_recorded(name: str, *, size: str, seed: int, checksum: Optional[str]) -> DatasetSplits:
    """The synthetic set a submission was made on: today's defaults, or else the earlier default
    world (:data:`EARLIER_DEFAULTS`) whose annotation checksum the submission records."""
    loader = DATASETS.get(name)
    splits = loader(None, size=size, seed=seed)
    if checksum and splits.annotation_checksum != checksum:
        for knobs in EARLIER_DEFAULTS.get(name, ()):
            earlier = loader(None, size=size, seed=seed, knobs=knobs)
            if earlier.annotation_checksum == checksum:
                return earlier
    return splits
