"""Names shared by the ``prepare`` paths (:mod:`datasets.prepare_lpr4m`, :mod:`datasets.prepare_fast`,
:mod:`datasets.prepare_shards`): the release's URL-list prefixes, a URL's file stem, where a
frame or shop image goes in the files layout, and the error they raise. A leaf module, so that
the prepare modules import it and not each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from datasets.lpr4m_reader import split_frame_id

LIST_PREFIXES = ("training_frame_url", "training_image_url", "test_frame_url", "test_image_url")
TEST_LISTS = ("test_frame_url", "test_image_url")
ANNOTATION_PREFIXES = (
    "training_videoinfo_",
    "test_videoid_",
    "test_liveid_",
    "test_frameid2gtbox_",
    "test_image_title_",
)


class PrepareError(Exception):
    """The prepare step cannot go on; the message names the file or command."""


def url_stem(url: str) -> str:
    """The file stem of a URL: ``.../<frame_id>.jpg`` -> ``<frame_id>``."""
    name = url.strip().rsplit("/", 1)[-1].split("?", 1)[0]
    return name[:-4] if name.lower().endswith(".jpg") else name


def list_kind(prefix: str) -> str:
    """``image`` for the shop-image lists, ``frame`` for the frame lists."""
    return "image" if prefix.endswith("image_url") else "frame"


def layout_target(root: Path, kind: str, stem: str) -> Optional[Path]:
    """``images/<id>.jpg`` or ``frames/<clip_id>/<frame_id>.jpg`` under ``root``; None for a frame
    stem that is not ``<clip_id>-<frame_idx>``."""
    if kind == "image":
        return root / "images" / f"{stem}.jpg"
    parts = split_frame_id(stem)
    return None if parts is None else root / "frames" / parts[0] / f"{stem}.jpg"
