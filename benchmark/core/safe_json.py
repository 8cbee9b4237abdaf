"""Reading untrusted JSON (submissions, reported results) with hard limits.

Before anything is parsed the file size is checked; a gzip file (detected by its magic
bytes) is decompressed with a cap on the decompressed size (a file cut short is named as
truncated, not taken for a bomb by whatever its last four bytes hold in place of the size
trailer); the nesting depth is measured
by a linear scan outside string literals; only then is ``json.loads`` run, refusing
duplicate object keys, ``NaN``/``Infinity`` and numbers that overflow to infinity. JSON is
data: nothing in it is ever executed or imported.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

MAX_BYTES = 256 * 1024 * 1024  # decompressed
MAX_DEPTH = 32
GZIP_MAGIC = b"\x1f\x8b"
MAX_DEFLATE_RATIO = 1032  # deflate cannot expand more than this: a trailer claiming more lies (or was cut off)


class UntrustedJSONError(ValueError):
    """The file cannot be read safely; ``str()`` names the file and the fault."""


def read_limited(path: Path | str, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes (gunzipped if gzip), refusing more than ``max_bytes`` either way."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UntrustedJSONError(f"{path}: {size} bytes, more than the limit of {max_bytes}")
        with open(path, "rb") as fh:
            head = fh.read(2)
            if head == GZIP_MAGIC and size >= 18:  # the trailer's ISIZE: decompressed size mod 2**32
                fh.seek(-4, 2)
                claimed = int.from_bytes(fh.read(4), "little")
                if max_bytes < claimed <= size * MAX_DEFLATE_RATIO:  # an honest trailer: a bomb
                    with gzip.open(path, "rb") as gz:  # a corrupt stream says so first
                        gz.read(1)
                    raise UntrustedJSONError(
                        f"{path}: decompresses to more than the limit of {max_bytes} bytes "
                        f"({claimed} bytes, says its gzip trailer)"
                    )
        if head != GZIP_MAGIC:
            return path.read_bytes()
        data = _gunzip_limited(path, max_bytes)
    except FileNotFoundError:
        raise UntrustedJSONError(f"{path}: no such file") from None
    except EOFError:
        raise UntrustedJSONError(
            f"{path}: truncated gzip file (the compressed data ends before its end-of-stream marker)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise UntrustedJSONError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise UntrustedJSONError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise UntrustedJSONError(f"{path}: decompresses to more than the limit of {max_bytes} bytes")
    return data


def _gunzip_limited(path: Path, max_bytes: int, chunk: int = 1 << 20) -> bytes:
    """Decompress in chunks, stopping as soon as more than ``max_bytes`` came out.

    The trailer check in :func:`read_limited` refuses an honest bomb without decompressing;
    one whose trailer lies costs at most ``max_bytes`` plus a chunk of memory.
    """
    buf = bytearray()
    with gzip.open(path, "rb") as gz:
        while True:
            block = gz.read(chunk)
            if not block:
                return bytes(buf)
            if len(buf) + len(block) > max_bytes:
                raise UntrustedJSONError(f"{path}: decompresses to more than the limit of {max_bytes} bytes")
            buf += block


def json_depth(data: bytes) -> int:
    """Maximum nesting depth of arrays/objects; brackets inside string literals not counted.

    Vectorised over the sparse special bytes: a quote delimits a string unless an odd run of
    backslashes precedes it; a bracket is inside a string when an odd number of delimiters
    precede it.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(a == 0x22)
    slashes = np.flatnonzero(a == 0x5C)
    if slashes.size and quotes.size:
        run_start = np.ones(slashes.size, dtype=bool)
        run_start[1:] = np.diff(slashes) != 1
        start_idx = np.maximum.accumulate(np.where(run_start, np.arange(slashes.size), 0))
        run_len = np.arange(slashes.size) - start_idx + 1  # backslashes in the run ending here
        j = np.searchsorted(slashes, quotes - 1)
        jj = np.minimum(j, slashes.size - 1)
        escaped = (slashes[jj] == quotes - 1) & (run_len[jj] % 2 == 1)
        quotes = quotes[~escaped]
    opening = (a == 0x5B) | (a == 0x7B)
    brackets = np.flatnonzero(opening | (a == 0x5D) | (a == 0x7D))
    if brackets.size == 0:
        return 0
    outside = np.searchsorted(quotes, brackets, side="right") % 2 == 0
    step = np.where(opening[brackets], 1, -1)[outside]
    return int(np.cumsum(step).max()) if step.size else 0


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (metrics must be finite numbers)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows")
    return value


def parse(data: bytes, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON ``data`` under the limits above; errors name ``source``."""
    depth = json_depth(data)
    if depth > max_depth:
        raise UntrustedJSONError(f"{source}: JSON nested {depth} deep, more than the limit of {max_depth}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UntrustedJSONError(f"{source}: not UTF-8 ({exc})") from None
    try:
        return json.loads(
            text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise UntrustedJSONError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise UntrustedJSONError(f"{source}: invalid JSON: {exc}") from None


def load(path: Path | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`read_limited` then :func:`parse`."""
    return parse(read_limited(path, max_bytes), str(path), max_depth)
