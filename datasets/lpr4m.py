"""LPR4M loader: one entry point for both on-disk layouts (see ``datasets/LAYOUT.md``).

* ``lpr4m-release``: the full LPR4M release as the dataset README ships it (the ten training part
  files ``training_videoinfo_full_part_0i.txt`` with 11 columns, ``test_videoid_to_gtimage_*.json``,
  ``test_liveid_to_gallery_*.json``, ``test_frameid2gtbox_*.json`` holding only the boxed frames,
  ASR and title lists, the test frame URL list), laid out as ``frames/`` and ``images/`` by the
  ``prepare`` step (img2dataset's sidecar JSON beside each frame: boxes are in original pixels).
* ``lpr750k``: the official RICE code's LPR750K layout (``annotations/training_videoinfo_641821.txt``
  with root-relative frame paths, ``annotations/query_tenframes.json``,
  ``annotations/gallery_main.txt``; ``query/``, ``gallery/<live_id>/``, ``training_image/``,
  ``training_video_0X/``).

The layout is auto-detected (``query_tenframes.json`` present -> ``lpr750k``) and recorded in
``DatasetSplits.layout``. Loading never opens image or frame files (a release without a test frame
URL list has its test clip folders listed); existence and decodability are ``check_dataset``'s job.
Training lists: :mod:`datasets.lpr4m_train`; test side: :mod:`datasets.lpr4m_test`. Test queries
are grouped by live id (each query ranks only its livestream's gallery).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from benchmark.core.registry import DATASETS
from datasets import faults as F
from datasets.annotation_io import annotation_checksum
from datasets.errors import DataError
from datasets.faults import Faults
from datasets.lpr4m_reader import ATTRIBUTE_VALUES, LprReader, live_id_of, normalise_attribute
from datasets.lpr4m_test import lpr750k_test, release_test
from datasets.lpr4m_train import lpr750k_train, release_train, release_train_files
from datasets.records import DatasetSplits

__all__ = [
    "ATTRIBUTE_VALUES",
    "LAYOUT_750K",
    "LAYOUT_RELEASE",
    "detect_layout",
    "live_id_of",
    "load_lpr4m",
    "normalise_attribute",
    "read_lpr4m",
]

log = logging.getLogger(__name__)

LAYOUT_RELEASE = "lpr4m-release"
LAYOUT_750K = "lpr750k"


def detect_layout(root: Path) -> str:
    """``lpr750k`` if ``annotations/query_tenframes.json`` exists, ``lpr4m-release`` if the release's
    test ground truth does, else ``DataError``."""
    ann = root / "annotations"
    if (ann / "query_tenframes.json").is_file():
        return LAYOUT_750K
    if ann.is_dir() and any(ann.glob("test_videoid_to_gtimage_*.json")):
        return LAYOUT_RELEASE
    raise DataError(
        f"{root}: not an LPR4M data root (expected annotations/query_tenframes.json for LPR750K or "
        f"annotations/test_videoid_to_gtimage_*.json for the LPR4M release; see datasets/LAYOUT.md)",
        path=root,
        kind=F.MISSING_ANNOTATION,
    )


@DATASETS.register(
    "lpr4m", description="LPR4M (full release or the official LPR750K layout), JPEG frames, per-livestream galleries"
)
def load_lpr4m(
    data_root: Optional[Path], *, size: str = "default", seed: int = 0, cache_dir: Optional[Path] = None
) -> DatasetSplits:
    """Load an LPR4M data root (either layout). ``size``/``seed``/``cache_dir`` do not apply to real data."""
    if data_root is None:
        raise DataError("dataset lpr4m needs --data-root pointing at an LPR4M or LPR750K download")
    faults = Faults(strict=True)
    splits = read_lpr4m(Path(data_root), faults)
    faults.log_summary("lpr4m")
    return splits


def read_lpr4m(root: Path, faults: Faults) -> DatasetSplits:
    """Parse the annotations of ``root`` into records, reporting problems to ``faults``."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder", path=root, kind=F.MISSING_FILE)
    layout = detect_layout(root)
    reader = LprReader(root, faults)
    if (
        layout == LAYOUT_RELEASE
        and reader.report is not None
        and reader.report.lists
        and "training_frame_url" not in reader.report.lists
    ):  # prepare --lists test: evaluation only
        release_train_files(reader)  # still hashed: the checksum is the release's
        faults.warn(
            F.FAILED_DOWNLOAD,
            root / "prepare_report.json",
            "the training lists were not prepared (prepare --lists test): no training pairs",
        )
        train: list = []
        queries, gallery = release_test(reader)
    elif layout == LAYOUT_RELEASE:
        train = release_train(reader)
        queries, gallery = release_test(reader)
    else:
        train = lpr750k_train(reader)
        queries, gallery = lpr750k_test(reader)
    n_missing = sum(q.missing for q in queries)
    log.info(
        "lpr4m (%s): %d train pairs, %d queries (%d without frames, scored as misses), %d gallery images",
        layout,
        len(train),
        len(queries),
        n_missing,
        len(gallery),
    )
    return DatasetSplits(
        name="lpr4m",
        root=root,
        train=train,
        queries=queries,
        gallery=gallery,
        annotation_checksum=annotation_checksum(root, reader.used),
        layout=layout,
        grouped=True,
    )
