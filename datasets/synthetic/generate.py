"""``generate()``: plan, render and write a synthetic dataset root; cached by a parameter hash.

The root is built in a temporary sibling folder and renamed into place when complete, under a
file lock, so that concurrent callers (e.g. DDP ranks) never see a half-written root and only
one of them generates. ``synth_manifest.json`` records the generator version, the parameter hash,
counts and every other file's size and SHA-256 (:mod:`datasets.synthetic.integrity`), and is
written last; a root whose manifest hash matches is reused only when its files still match that
record (else it is regenerated, with one warning line), one with another hash is regenerated
(only if it was made by this generator: a folder without the manifest is never overwritten).
``synth_truth.json`` records what was rendered (intent and distractor products of every clip,
product attributes) for tests and calibration; the loaders do not read either file.

Rendering runs in ``workers`` forked processes (default 2, env ``LPR_BENCH_SYNTH_WORKERS``);
tasks are whole livestreams (LPR4M) or chunks of products (MovingFashion), seeded from the plan,
so the bytes written do not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from benchmark.core.atomic import atomic_write_text
from datasets.synthetic.catalog import CATEGORIES
from datasets.synthetic.integrity import content_problem, content_record
from datasets.synthetic.knobs import GENERATOR_VERSION, Knobs, SizeSpec, get_size, knobs_from_dict, params_hash
from datasets.synthetic.plan import Live, MFProduct, plan_lpr4m, plan_movingfashion
from datasets.synthetic.scale import plan_scale
from datasets.synthetic.write_lpr4m import LPR750K, RELEASE, plausible_boxes, write_live_pixels, write_lpr4m_annotations
from datasets.synthetic.write_movingfashion import write_mf_annotations, write_products

log = logging.getLogger(__name__)

MANIFEST = "synth_manifest.json"
TRUTH = "synth_truth.json"
MOVINGFASHION = "movingfashion"
LAYOUT_NAMES = {"lpr4m": RELEASE, RELEASE: RELEASE, LPR750K: LPR750K, MOVINGFASHION: MOVINGFASHION}
MF_CHUNK = 20  # MovingFashion products per rendering task
SCALE_URL_BASE = "https://lpr-bench.invalid/frames/"  # URL prefix of lpr4m-scale's (never fetched) frame list


def canonical_layout(layout: str) -> str:
    try:
        return LAYOUT_NAMES[layout]
    except KeyError:
        raise ValueError(f"unknown synthetic layout {layout!r}; layouts are {', '.join(LAYOUT_NAMES)}") from None


def generate(
    layout: str,
    out: Path,
    *,
    seed: int,
    size: Union[str, SizeSpec],
    knobs: Union[Knobs, dict[str, Any], None] = None,
    workers: Optional[int] = None,
) -> Path:
    """Write a synthetic dataset in ``layout`` (``lpr4m`` = ``lpr4m-release``, ``lpr750k``,
    ``movingfashion``) to ``out``, or reuse ``out`` if it already holds the same generation.

    ``size``: ``tiny`` | ``default`` | ``lpr4m-scale`` (annotations only, LPR4M layouts) or a
    :class:`SizeSpec`; ``knobs``: a :class:`Knobs` or a dict of overrides. Returns ``out``.
    """
    layout = canonical_layout(layout)
    spec = get_size(size) if isinstance(size, str) else size
    knob = knobs if isinstance(knobs, Knobs) else knobs_from_dict(knobs)
    if layout == MOVINGFASHION and not spec.pixels:
        raise ValueError(f"size {spec.name!r} is annotations-only; it exists for the LPR4M layouts, not MovingFashion")
    key = params_hash(layout, spec, knob, seed)
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f".{out.name}.lock"):
        if manifest_hash(out) == key:
            problem = content_problem(out, _manifest(out).get("files"), MANIFEST)
            if problem is None:
                log.info("synthetic %s (%s, seed %d) reused from %s", layout, spec.name, seed, out)
                return out
            print(f"warning: cached synthetic set {out}: {problem}; regenerating it", file=sys.stderr)
        if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise FileExistsError(
                f"{out}: folder exists, is not empty and was not written by the synthetic generator; "
                f"refusing to overwrite it (choose another --out)"
            )
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            counts, truth = _build(layout, tmp, seed, spec, knob, _workers(workers))
            atomic_write_text(tmp / TRUTH, json.dumps(truth, separators=(",", ":")) + "\n")
            manifest = {
                "generator": "datasets.synthetic",
                "generator_version": GENERATOR_VERSION,
                "params_hash": key,
                "layout": layout,
                "size": spec.name,
                "seed": int(seed),
                "counts": counts,
                "size_spec": dataclasses.asdict(spec),
                "knobs": dataclasses.asdict(knob),
                "files": content_record(tmp, MANIFEST),  # verified on every reuse (integrity.py)
            }
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
            _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "synthetic %s (%s, seed %d) generated in %.1f s at %s: %s",
            layout,
            spec.name,
            seed,
            time.perf_counter() - t0,
            out,
            counts,
        )
    return out


def _manifest(root: Path) -> dict[str, Any]:
    try:
        value = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def manifest_hash(root: Path) -> Optional[str]:
    """The parameter hash recorded in ``root``'s manifest, or None."""
    return _manifest(root).get("params_hash")


def _workers(workers: Optional[int]) -> int:
    if workers is None:
        workers = int(os.environ.get("LPR_BENCH_SYNTH_WORKERS", "2"))
    return max(1, min(int(workers), os.cpu_count() or 1))


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl  # noqa: PLC0415  (POSIX only: optional)
    except ImportError:  # pragma: no cover - not POSIX: no lock, the rename still keeps roots whole
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _run(fn: Callable, tasks: list[tuple], workers: int) -> list:
    """``[fn(*t) for t in tasks]`` in order, on ``workers`` processes when > 1.

    Forked where the platform allows it: a spawned (or forkserver) child re-imports ``__main__``,
    which would re-enter ``generate`` in a script without a main guard and wait on our lock.
    The workers only use numpy, Pillow and PyAV.
    """
    if workers <= 1 or len(tasks) < 2:
        return [fn(*t) for t in tasks]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        return pool.starmap(fn, tasks, chunksize=1)


def _build(layout: str, root: Path, seed: int, size: SizeSpec, knobs: Knobs, workers: int) -> tuple[dict, dict]:
    if layout == MOVINGFASHION:
        products = plan_movingfashion(seed, size, knobs)
        chunks = [products[i : i + MF_CHUNK] for i in range(0, len(products), MF_CHUNK)]
        boxes: dict = {}
        for part in _run(write_products, [(c, root, size, knobs) for c in chunks], workers):
            boxes.update(part)
        write_mf_annotations(products, boxes, root)
        return _mf_counts(products), _mf_truth(products)
    lives = plan_lpr4m(seed, size, knobs) if size.pixels else plan_scale(seed, size, knobs)
    boxes = {}
    if size.pixels:
        for part in _run(write_live_pixels, [(layout, lv, root, size, knobs) for lv in lives], workers):
            boxes.update(part)
    else:
        boxes = {c.clip_id: plausible_boxes(c, size.frame_size, knobs) for lv in lives for c in lv.clips}
    # annotation-only sizes have no frames on disk: their frame list is the test frame URL list
    write_lpr4m_annotations(layout, lives, boxes, root, frame_url_base=None if size.pixels else SCALE_URL_BASE)
    return _lpr4m_counts(lives), _lpr4m_truth(lives)


def _lpr4m_counts(lives: list[Live]) -> dict[str, int]:
    train = [lv for lv in lives if lv.split == "train"]
    test = [lv for lv in lives if lv.split == "test"]
    return {
        "train_lives": len(train),
        "test_lives": len(test),
        "train_products": sum(len(lv.products) for lv in train),
        "train_clips": sum(len(lv.clips) for lv in train),
        "test_queries": sum(len(lv.clips) for lv in test),
        "gallery_images": sum(len(p.image_ids) for lv in test for p in lv.products),
        "frames": sum(c.n_frames for lv in lives for c in lv.clips),
    }


def _product_truth(spec) -> dict[str, Any]:
    return {
        "category": CATEGORIES[spec.category].name,
        "colour": spec.colour,
        "colour2": spec.colour2,
        "pattern": spec.pattern,
        "logo": spec.logo,
    }


def _lpr4m_truth(lives: list[Live]) -> dict[str, Any]:
    products, clips = {}, {}
    for lv in lives:
        for p in lv.products:
            for i in p.image_ids:
                products[i] = dict(
                    _product_truth(p.spec), live_id=lv.live_id, split=lv.split, title=p.title, product=p.image_id
                )
        for c in lv.clips:
            clips[c.clip_id] = {
                "split": lv.split,
                "live_id": lv.live_id,
                "intent": lv.products[c.intent].image_id,
                "gt": list(lv.products[c.intent].image_ids),
                "distractors": [lv.products[i].image_id for i in c.distractors],
                "scale": c.attrs.scale,
                "duration": c.attrs.duration,
                "num_products": c.attrs.number,
                "n_frames": c.n_frames,
                "jpeg_quality": c.quality,
            }
    return {"products": products, "clips": clips}


def _mf_counts(products: list[MFProduct]) -> dict[str, int]:
    out: dict[str, int] = {}
    for split in ("train", "test"):
        ps = [p for p in products if p.split == split]
        out[f"{split}_products"] = len(ps)
        out[f"{split}_videos"] = sum(len(p.videos) for p in ps)
        out[f"{split}_missing_videos"] = sum(v.missing for p in ps for v in p.videos)
        out[f"{split}_hard"] = sum(p.hard for p in ps)
    return out


def _mf_truth(products: list[MFProduct]) -> dict[str, Any]:
    return {
        "products": {
            p.pid: dict(_product_truth(p.spec), split=p.split, source="hard" if p.hard else "regular") for p in products
        },
        "videos": {
            v.name: {
                "product": p.pid,
                "missing": v.missing,
                "scale": v.attrs.scale,
                "duration": v.attrs.duration,
                "num_products": v.attrs.number,
                "worn": v.attrs.worn,
                "n_frames": v.n_frames,
            }
            for p in products
            for v in p.videos
        },
    }
