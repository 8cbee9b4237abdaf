"""Check every file ``prepare`` will rely on before the first URL is fetched.

A download of the real release takes days; a damaged list or annotation file found after it
(a ``UnicodeDecodeError`` traceback, a truncated JSON that only ``check-data`` notices) wastes
them. :func:`validate_release` reads the URL lists and the annotation files ``prepare`` copies
and the loader parses, line by line (a list of 473M lines is streamed, never held), and returns
one line per fault naming the file and the line: a line that is not UTF-8, a URL that is not
http(s), a frame URL whose file stem is not ``<clip_id>-<frame_idx>``, a JSON annotation that
does not parse (truncated) or is not an object, a training row without its 11 tab-separated
columns or with an unreadable frame list, a required annotation file missing. At most
``PER_FILE`` faults are listed per file, then a count of the rest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Optional

from datasets.annotation_io import parse_literal_list
from datasets.lpr4m_reader import split_frame_id
from datasets.release_files import ANNOTATION_PREFIXES, list_kind, url_stem

PER_FILE = 20
TEST_JSON = ("test_videoid_to_gtimage_*.json", "test_liveid_to_gallery_*.json", "test_frameid2gtbox_*.json")
TRAINING_PARTS = re.compile(r"^training_videoinfo_(full_part_\d+|full_\d+|\d+)\.txt$")


class _Faults:
    """Fault lines, at most ``PER_FILE`` per file, with a count of those left out."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.per_file: dict[Path, int] = {}

    def add(self, path: Path, line: Optional[int], message: str) -> None:
        n = self.per_file.get(path, 0) + 1
        self.per_file[path] = n
        if n <= PER_FILE:
            self.lines.append(f"{path}{f':{line}' if line is not None else ''}: {message}")

    def finish(self) -> list[str]:
        more = [f"{p}: {n - PER_FILE} more fault(s) not listed" for p, n in self.per_file.items() if n > PER_FILE]
        return self.lines + more


def text_lines(path: Path, faults: _Faults) -> Iterator[tuple[int, str]]:
    """Non-empty lines of ``path`` as ``(line_number, text)``, streamed; a non-UTF-8 line is a fault."""
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield i, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                faults.add(path, i, f"not valid UTF-8 at byte {e.start} of the line")


def _check_url_list(path: Path, prefix: str, faults: _Faults) -> None:
    frames = list_kind(prefix) == "frame"
    for i, line in text_lines(path, faults):
        url = line.strip()
        if not url.startswith(("http://", "https://")):
            faults.add(path, i, f"not an http(s) URL: {url[:160]!r}")
        elif frames and split_frame_id(url_stem(url)) is None:
            faults.add(path, i, f"frame URL {url[:160]!r} does not end in <clip_id>-<frame_idx>.jpg")


def _check_json(path: Path, faults: _Faults) -> None:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        faults.add(path, None, f"not valid UTF-8 at byte {e.start}")
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        what = "invalid JSON" if text.rstrip().endswith(("}", "]")) else "truncated JSON"  # cut mid-value
        faults.add(path, e.lineno, f"{what}: {e.msg} (column {e.colno})")
        return
    if not isinstance(value, dict):
        faults.add(path, None, f"expected a JSON object, got {type(value).__name__}")


def training_rows(path: Path, faults: _Faults) -> Iterator[tuple[int, str, list[str]]]:
    """``(line_number, clip_id, frame_ids)`` of each well-formed training row (11 columns, a
    non-empty frame list); the others are faults. Shared with the frame reduction."""
    for i, line in text_lines(path, faults):
        cols = line.split("\t")
        if len(cols) != 11:
            faults.add(path, i, f"expected 11 tab-separated columns, got {len(cols)}")
            continue
        try:
            frames = parse_literal_list(cols[1])
        except ValueError as e:
            faults.add(path, i, f"frame list: {e}")
            continue
        if not cols[0] or not frames or not all(isinstance(f, str) and f for f in frames):
            faults.add(path, i, "empty video_id or frame list")
            continue
        yield i, cols[0], frames


def training_files(urls_dir: Path) -> list[Path]:
    """The training annotation files (the ten parts, or one list), in name order."""
    return sorted(p for p in urls_dir.iterdir() if p.is_file() and TRAINING_PARTS.match(p.name))


def validate_release(urls_dir: Path, lists: dict[str, Path], which: str = "all") -> list[str]:
    """One line per fault in the URL lists ``lists`` and the annotation files of ``urls_dir``
    that ``prepare --lists which`` relies on; an empty list when all of them are sound."""
    faults = _Faults()
    for prefix, path in lists.items():
        _check_url_list(path, prefix, faults)
    for pattern in TEST_JSON:
        found = sorted(urls_dir.glob(pattern))
        if not found:
            faults.add(urls_dir / pattern, None, "required annotation file is missing")
        for path in found:
            _check_json(path, faults)
    wanted = ANNOTATION_PREFIXES if which == "all" else tuple(p for p in ANNOTATION_PREFIXES if p.startswith("test_"))
    for path in sorted(urls_dir.iterdir()):
        if not path.is_file() or not path.name.startswith(wanted) or path.suffix == ".json":
            continue
        if TRAINING_PARTS.match(path.name):
            for _ in training_rows(path, faults):
                pass
        else:
            for _ in text_lines(path, faults):
                pass
    if which == "all" and not training_files(urls_dir):
        faults.add(urls_dir / "training_videoinfo_full_part_0*.txt", None, "required annotation file is missing")
    return faults.finish()
