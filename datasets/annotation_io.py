"""Reading annotation files safely: root-confined paths, UTF-8 lines, JSON, Python-literal lists.

Every reader reports problems through a :class:`~datasets.faults.Faults` so that the same code
serves the strict loaders and the collecting ``check_dataset``. Nothing here is ever ``eval``-ed:
Python-literal lists go through ``json`` (fast path) or ``ast.literal_eval``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from datasets import faults as F
from datasets.faults import Faults


def safe_path(root: Path, rel: str, faults: Faults, where: Path, *, line: Optional[int] = None) -> Optional[Path]:
    """``root / rel`` if ``rel`` is relative and stays inside ``root`` (lexically), else a fault.

    No file-system access: the check is on the normalised string, so it costs nothing per file.
    """
    if not rel or "\x00" in rel:
        faults.error(F.MALFORMED_ROW, where, f"empty or invalid path {rel!r}", line=line)
        return None
    norm = os.path.normpath(rel.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        faults.error(F.PATH_ESCAPE, where, f"path {rel!r} escapes the data root {root}", line=line)
        return None
    return root if norm == "." else root / norm


class RootPaths:
    """``safe_path`` with a per-folder cache: a file path costs one string split and one
    ``Path / name`` (frames of a clip share their folder), which keeps loading 200k+ frame
    paths fast. Anything unusual (``..``, backslashes, NUL) goes through ``safe_path``."""

    def __init__(self, root: Path, faults: Faults) -> None:
        self.root = root
        self.faults = faults
        self._dirs: dict[str, Optional[Path]] = {}

    def join(self, rel: str, where: Path, *, line: Optional[int] = None) -> Optional[Path]:
        parent, _, name = rel.rpartition("/")
        if not name or ".." in rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or name == ".":
            return safe_path(self.root, rel, self.faults, where, line=line)
        if not parent:
            return _child(self.root, name)
        if parent not in self._dirs:
            base = safe_path(self.root, parent, self.faults, where, line=line)
            if base is None:
                return None
            self._dirs[parent] = base
        base = self._dirs[parent]
        return None if base is None else _child(base, name)


def _child(base: Path, name: str) -> Path:
    """``base / name`` for a single, already validated component; uses pathlib's internal
    no-reparse constructor when this Python has it (2x faster), the public ``/`` otherwise."""
    make = getattr(base, "_make_child_relpath", None)
    return make(name) if make is not None else base / name


def read_lines(path: Path, faults: Faults) -> list[tuple[int, str]]:
    """Non-empty UTF-8 lines as ``(line_number, text)``; a bad line is a ``bad_encoding`` fault."""
    data = read_annotation_bytes(path, faults)
    if data is None:
        return []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        try:
            out.append((i, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            faults.error(F.BAD_ENCODING, path, f"not valid UTF-8 at byte {e.start} of the line", line=i)
    return out


def read_annotation_bytes(path: Path, faults: Faults) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        faults.error(F.MISSING_ANNOTATION, path, "annotation file is missing")
    except OSError as e:
        faults.error(F.UNREADABLE_FILE, path, f"cannot read annotation file ({e.strerror or e})")
    return None


def read_json(path: Path, faults: Faults) -> Any:
    """Parsed JSON, or ``None`` after a fault (missing, not UTF-8, not JSON)."""
    data = read_annotation_bytes(path, faults)
    if data is None:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        faults.error(F.BAD_ENCODING, path, f"not valid UTF-8 at byte {e.start}")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        faults.error(F.BAD_JSON, path, f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
        return None


def expect_object(obj: Any, path: Path, faults: Faults, what: str) -> dict:
    """``obj`` if it is a JSON object, else a ``bad_json`` fault and ``{}``."""
    if isinstance(obj, dict):
        return obj
    if obj is not None:
        faults.error(F.BAD_JSON, path, f"expected a JSON object {what}, got {type(obj).__name__}")
    return {}


def parse_literal_list(text: str) -> list:
    """A Python-literal (or JSON) list; ``ValueError`` if the text is not one."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError("not a list literal")
    try:
        if '"' not in text and "\\" not in text:
            value = json.loads(text.replace("'", '"'))  # fast path, same result for plain literals
        else:
            value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise ValueError(f"not a Python literal ({type(e).__name__})") from None
    if not isinstance(value, list):
        raise ValueError("not a list")
    return value


def find_one(folder: Path, pattern: str, faults: Faults, *, required: bool = True) -> Optional[Path]:
    """The single file in ``folder`` matching the glob ``pattern`` (one directory listing)."""
    matches = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        faults.error(F.MALFORMED_ROW, folder, f"several files match {pattern}: {names}; keep one")
        return matches[0]
    if not matches:
        if required:
            faults.error(F.MISSING_ANNOTATION, folder / pattern, "required annotation file is missing")
        return None
    return matches[0]


def annotation_checksum(root: Path, files: Iterable[Path]) -> str:
    """sha256 over ``relpath \\0 bytes \\0`` of each file, in sorted relative-path order."""
    h = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in files):
        h.update(rel.encode("utf-8") + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def parse_box(value: Any) -> Optional[tuple[float, float, float, float]]:
    """A box ``[x1,y1,x2,y2]`` -> tuple; ``[]``, ``None`` or all-zero -> ``None``; else ``ValueError``.

    A list of boxes yields its first box (the intent product's).
    """
    if value is None or value == []:
        return None
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return parse_box(value[0])
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"box {value!r} is not [x1, y1, x2, y2]")
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"box {value!r} has non-numeric coordinates") from None
    if x1 == 0 and y1 == 0 and x2 == 0 and y2 == 0:
        return None
    if not (x2 > x1 and y2 > y1) or min(x1, y1) < 0:
        raise ValueError(f"box {value!r} is not a valid x1<x2, y1<y2 box")
    return (x1, y1, x2, y2)
