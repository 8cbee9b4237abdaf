"""Which frames of a clip the protocol reads at T, so that ``prepare --frames-per-clip T`` downloads
only those, and a run that would read another frame refuses.

Rule (``FRAME_RULE``): a clip of ``n`` annotated frames is read at the positions
``uniform_indices(n, T)`` = ``linspace(0, n-1, T)`` truncated (every frame when ``n <= T``). That
is the union over the registered methods: every method gets its frames from the loader
(:func:`datasets.torch_data.load_clip`), which samples these positions; training's tail cut keeps
a prefix of them; the chunked samplers of the video re-id methods (``methods/frames.py``: NVAN,
MGH, FashionNet, AsymNet) pick a random frame per chunk among the T frames already loaded, never
another frame of the clip. A method that read other frames would have to add its rule here, or
need the full lists (``--frames-per-clip 0``).

A reduced root keeps each clip's annotated frame count (``ClipSource.annotated_frames``) and the
annotated positions of the frames it holds (``frame_positions``), so :func:`clip_positions` gives
the frames a full root would give at the run's T, or refuses, naming the clip, the frame position
and the T the root was prepared for. Departure from a full root: a frame whose download failed is
left out after the positions are chosen (the clip loads one frame fewer, masked), where a full root
drops it before (its linspace then moves to frames a reduced root never downloaded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

import torch

from datasets import faults as F
from datasets.errors import DataError
from datasets.lpr4m_reader import split_frame_id
from datasets.prepare_validate import _Faults, training_files, training_rows
from datasets.records import ClipSource
from datasets.release_files import url_stem
from datasets.sampling import prepared_positions, tail_cut, uniform_indices

FRAME_RULE = (
    "linspace(0, n-1, T) of each clip's annotated frame list (every frame when n <= T); the tail cut "
    "keeps a prefix, chunked samplers pick among these T"
)


def unprepared_message(clip: ClipSource, position: int, num_frames: int) -> str:
    return (
        f"clip {clip.clip_id}: this run (T={num_frames}) reads frame {position} of its {clip.annotated_frames} "
        f"annotated frames, which this root lacks: it was prepared with --frames-per-clip {clip.prepared_frames}; "
        f"run at T={clip.prepared_frames} or prepare again with --frames-per-clip {num_frames} (0: every frame)"
    )


def clip_positions(
    clip: ClipSource, num_frames: int, *, train_cut: bool = False, generator: Optional[torch.Generator] = None
) -> list[int]:
    """Indices into ``clip.frame_paths`` of the frames an item loads at T = ``num_frames``: the
    rule above (plus training's tail cut); ``DataError`` when a reduced root lacks one."""
    if not clip.prepared_frames:
        idx = uniform_indices(len(clip.frame_paths), num_frames, clip.frame_pick)
        return tail_cut(idx, generator) if train_cut else idx
    n = clip.annotated_frames
    want = uniform_indices(n, num_frames, clip.frame_pick)
    have = set(prepared_positions(n, clip.prepared_frames))
    for p in want:
        if p not in have:
            raise DataError(unprepared_message(clip, p, num_frames), path=str(clip.clip_id), kind=F.MISSING_FILE)
    where = {p: i for i, p in enumerate(clip.frame_positions)}
    idx = [where[p] for p in want if p in where]  # a failed download is left out (module doc)
    return tail_cut(idx, generator) if train_cut else idx


def refuse_unprepared(clips: Iterable[ClipSource], num_frames: int) -> None:
    """Before a run: ``DataError`` (one line) at the first clip a root prepared at another T lacks frames of."""
    for clip in clips:
        if clip.prepared_frames and clip.prepared_frames != num_frames:
            clip_positions(clip, num_frames)


def select_frames(frame_lists: Iterable[list[str]], frames_per_clip: int) -> set[str]:
    """The frame ids read at T out of each clip's annotated (ordered) frame-id list."""
    keep: set[str] = set()
    for frames in frame_lists:
        keep.update(frames[p] for p in prepared_positions(len(frames), frames_per_clip))
    return keep


def write_reduced_list(src: Path, keep: set[str], out_dir: Path, prefix: str) -> tuple[Path, int, int]:
    """Stream the URL list ``src`` into ``out_dir/<prefix>_<kept>.txt`` keeping the URLs whose
    file stem is in ``keep`` (a repeated stem once); returns (path, URLs listed, URLs kept)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{prefix}.tmp"
    listed = kept = 0
    seen: set[str] = set()
    with open(src, encoding="utf-8") as fin, open(tmp, "w", encoding="utf-8") as fout:
        for line in fin:
            url = line.strip()
            if not url:
                continue
            listed += 1
            stem = url_stem(url)
            if stem in keep and stem not in seen:
                seen.add(stem)
                fout.write(url + "\n")
                kept += 1
    for old in out_dir.glob(f"{prefix}_*.txt"):
        old.unlink()
    dst = out_dir / f"{prefix}_{kept}.txt"
    os.replace(tmp, dst)
    return dst, listed, kept


def _test_frame_lists(path: Path) -> list[list[str]]:
    """Each test clip's frame ids from the test frame URL list, ordered by frame index (as the loader orders them)."""
    clips: dict[str, list[tuple[int, str]]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            stem = url_stem(line) if line.strip() else ""
            parts = split_frame_id(stem)
            if parts is not None:
                clips.setdefault(parts[0], []).append((parts[1], stem))
    return [[s for _, s in sorted(frames)] for frames in clips.values()]


def reduce_release(
    urls_dir: Path, lists: dict[str, Path], frames_per_clip: int, out_dir: Path
) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """The URL lists to download at T: the two frame lists reduced to the frames read at T (the
    training clips' frame lists from the training rows, the test clips' from the test frame URL
    list), written to ``out_dir``; the image lists as they are. Returns (lists, {prefix: {listed, kept}})."""
    used = dict(lists)
    counts: dict[str, dict[str, int]] = {}
    for prefix, path in lists.items():
        if prefix == "training_frame_url":
            faults = _Faults()
            rows = (frames for f in training_files(urls_dir) for _, _, frames in training_rows(f, faults))
            keep = select_frames(rows, frames_per_clip)
        elif prefix == "test_frame_url":
            keep = select_frames(_test_frame_lists(path), frames_per_clip)
        else:
            continue
        used[prefix], listed, kept = write_reduced_list(path, keep, out_dir, prefix)
        counts[prefix] = {"listed": listed, "kept": kept}
    return used, counts
