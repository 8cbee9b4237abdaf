"""Write a planned MovingFashion world in layout (c) of LAYOUT.md: mp4 videos, shop images, JSONs.

Videos are encoded with PyAV (MPEG-4 Part 2, ``yuv420p``, one thread, ``bitexact`` flags on the
codec and the muxer), which makes the files byte-identical across runs. ``hard`` videos use a
coarser quantiser than ``regular`` ones. Videos marked missing in the plan are listed in the JSON
but not written, as in the public archive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import av
import numpy as np

from benchmark.core.atomic import atomic_write_text
from datasets.synthetic.knobs import Knobs, SizeSpec
from datasets.synthetic.plan import MFProduct, MFVideo
from datasets.synthetic.render import shop_jpeg
from datasets.synthetic.scene import make_stage, render_clip

Box = tuple[int, int, int, int]


def video_rel(video: MFVideo) -> str:
    return f"videos/{video.name}.mp4"


def image_rel(product: MFProduct) -> str:
    return f"imgs/{product.pid}.jpg"


def encode_mp4(path: Path, frames: list[np.ndarray], fps: int, qscale: int) -> None:
    """Encode RGB frames to an mp4 deterministically."""

    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        stream.options = {"qscale": str(qscale), "flags": "+bitexact"}
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_products(
    products: list[MFProduct], root: Path, size: SizeSpec, knobs: Knobs
) -> dict[str, list[Optional[Box]]]:
    """Render and write the shop images and (present) videos of ``products``; returns boxes per video."""
    out: dict[str, list[Optional[Box]]] = {}
    for prod in products:
        path = root / image_rel(prod)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shop_jpeg(prod.spec, prod.shop_seed, size.image_size, knobs, title=None))
        for video in prod.videos:
            colours = [s.rgb for s in video.distractors]
            stage = make_stage(video.stage_seed, size.mf_frame_size, colours, knobs, clean=not prod.hard)
            render = render_clip(
                stage, prod.spec, list(video.distractors), video.attrs, video.n_frames, knobs, video.seed
            )
            out[video.name] = render.boxes
            if not video.missing:
                encode_mp4(root / video_rel(video), render.frames, size.mf_fps, qscale=8 if prod.hard else 4)
    return out


def write_mf_annotations(products: list[MFProduct], boxes: dict[str, list[Optional[Box]]], root: Path) -> list[Path]:
    """``train.json`` and ``test.json``, keyed by product id, in plan order."""
    written = []
    for split in ("train", "test"):
        data: dict[str, dict] = {}
        for prod in products:
            if prod.split != split:
                continue
            entry: dict[str, object] = {
                "img_path": image_rel(prod),
                "video_paths": [video_rel(v) for v in prod.videos],
                "source": 0 if prod.hard else 1,
            }
            if all(v.tracklets for v in prod.videos):
                entry["tracklets"] = [
                    {str(i): [int(c) for c in b] for i, b in enumerate(boxes[v.name]) if b is not None}
                    for v in prod.videos
                ]
            data[prod.pid] = entry
        written.append(atomic_write_text(root / f"{split}.json", json.dumps(data, separators=(", ", ": ")) + "\n"))
    return written
