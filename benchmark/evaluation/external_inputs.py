"""Reading a model's outputs made outside the harness: embedding files and TREC run files.

Formats (docs/external.md has examples):

* ``.npz``: two arrays, ``ids`` (strings, one per row) and ``embeddings`` [N, D] (float);
* ``.npy``: the [N, D] array alone, its ids in a text file beside it, one id a line
  (``query.npy`` -> ``query.ids.txt``, or the file given as ``ids_path``);
* ``.safetensors``: a tensor named ``embeddings`` (or the file's only tensor), ids in a text
  file as for ``.npy``;
* a TREC run file: ``qid Q0 docid rank score tag`` a line, whitespace-separated, as
  ``trec_eval`` and ranx read it. The order is the score's (higher first); the rank column must
  be a positive integer but is not used, as in ``trec_eval``.

Files are read without pickles (``allow_pickle=False``). Every fault is one
:class:`ExternalInputError` line naming the file and the first offending id (or line); the
checks against a dataset's split live in :mod:`benchmark.evaluation.external`.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

EMBEDDING_SUFFIXES = (".npz", ".npy", ".safetensors")
MAX_ID_CHARS = 500  # a submission's id limit (schema: rankings)


class ExternalInputError(ValueError):
    """An outside file cannot be used; the message is one line naming the file and the fault."""


@dataclass
class EmbeddingFile:
    """Rows of one embedding file with their ids, and the files they came from (for hashing)."""

    path: Path
    ids: list[str]
    matrix: np.ndarray  # [N, D]
    files: list[Path]  # the embedding file, then its id list when separate


@dataclass
class RunEntry:
    """One line of a TREC run file."""

    qid: str
    docid: str
    score: float
    line: int


def default_ids_path(path: Path) -> Path:
    """``query.npy`` -> ``query.ids.txt`` (the id list beside a ``.npy``/``.safetensors`` file)."""
    return path.with_suffix(".ids.txt")


def read_embeddings(path: Path | str, ids_path: Optional[Path | str] = None) -> EmbeddingFile:
    """One embedding file (see the module docstring), its ids checked for duplicates and its
    rows for shape and finiteness."""
    path = Path(path)
    if not path.is_file():
        raise ExternalInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ExternalInputError(f"{path}: unknown embedding format {path.suffix!r} (use .npz, .npy or .safetensors)")
    files = [path]
    if suffix == ".npz":
        if ids_path is not None:
            raise ExternalInputError(
                f"{path}: an .npz file carries its own 'ids' array; drop the separate id list {ids_path}"
            )
        ids, matrix = _read_npz(path)
    else:
        matrix = _read_npy(path) if suffix == ".npy" else _read_safetensors(path)
        id_file = Path(ids_path) if ids_path is not None else default_ids_path(path)
        ids = read_id_list(id_file, path)
        files.append(id_file)
    _check_matrix(path, ids, matrix)
    return EmbeddingFile(path=path, ids=ids, matrix=matrix, files=files)


def _read_npz(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("ids", "embeddings") if k not in data.files]
            if missing:
                raise ExternalInputError(
                    f"{path}: no array named {missing[0]!r} (an .npz needs 'ids' and 'embeddings'; "
                    f"it has {sorted(data.files)})"
                )
            ids, matrix = data["ids"], data["embeddings"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, ExternalInputError):
            raise
        raise ExternalInputError(f"{path}: cannot be read as .npz ({_first_line(exc)})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        raise ExternalInputError(
            f"{path}: 'ids' must be a 1-D array of strings, got dtype {ids.dtype} shape {ids.shape}"
        )
    return [str(i) for i in ids.tolist()], matrix


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ExternalInputError(f"{path}: cannot be read as .npy ({_first_line(exc)})") from None


def _read_safetensors(path: Path) -> np.ndarray:
    # an optional reader, imported only for .safetensors inputs
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.numpy import load_file  # noqa: PLC0415

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExternalInputError(f"{path}: cannot be read as .safetensors ({_first_line(exc)})") from None
    if "embeddings" in tensors:
        return tensors["embeddings"]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise ExternalInputError(f"{path}: no tensor named 'embeddings' among {sorted(tensors)[:5]}")


def read_id_list(id_file: Path, owner: Path) -> list[str]:
    """Ids one a line (UTF-8; a trailing newline is fine, blank lines are not)."""
    if not id_file.is_file():
        raise ExternalInputError(
            f"{owner}: its id list {id_file} does not exist (one id a line, for .npy and .safetensors files)"
        )
    try:
        text = id_file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ExternalInputError(f"{id_file}: cannot be read as UTF-8 text ({_first_line(exc)})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    ids = [ln.rstrip("\r") for ln in lines]
    for n, i in enumerate(ids, 1):
        if not i.strip() or i != i.strip():
            raise ExternalInputError(f"{id_file}:{n}: blank id or id with surrounding spaces {i!r}")
    return ids


def _check_matrix(path: Path, ids: list[str], matrix: np.ndarray) -> None:
    if matrix.ndim != 2:
        raise ExternalInputError(f"{path}: embeddings must be a 2-D array [N, D], got shape {tuple(matrix.shape)}")
    if matrix.dtype.kind not in "fiu":
        raise ExternalInputError(f"{path}: embeddings must be numbers, got dtype {matrix.dtype}")
    if matrix.shape[0] != len(ids):
        raise ExternalInputError(f"{path}: {matrix.shape[0]} rows of embeddings but {len(ids)} ids")
    if matrix.shape[1] == 0:
        raise ExternalInputError(f"{path}: embeddings have 0 dimensions")
    seen: set[str] = set()
    for i in ids:
        if len(i) > MAX_ID_CHARS:
            raise ExternalInputError(f"{path}: id {i[:40]!r}... is longer than {MAX_ID_CHARS} characters")
        if i in seen:
            raise ExternalInputError(f"{path}: duplicate id {i!r}")
        seen.add(i)
    bad = ~np.isfinite(matrix).all(axis=1) if matrix.dtype.kind == "f" else np.zeros(len(ids), dtype=bool)
    if bad.any():
        row = int(np.argmax(bad))
        raise ExternalInputError(
            f"{path}: non-finite value (NaN or infinity) in the embedding of id {ids[row]!r} "
            f"(rows affected: {int(bad.sum())})"
        )


def read_run(path: Path | str) -> list[RunEntry]:
    """A TREC run file's lines (``qid Q0 docid rank score tag``), in file order; a repeated
    (qid, docid) pair, a malformed line or a non-finite score is refused."""
    path = Path(path)
    if not path.is_file():
        raise ExternalInputError(f"{path}: no such file")
    entries: list[RunEntry] = []
    seen: set[tuple[str, str]] = set()
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise ExternalInputError(f"{path}: cannot be read ({_first_line(exc)})") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                entries.append(_run_line(path, n, line.split(), seen))
        except UnicodeDecodeError as exc:
            raise ExternalInputError(f"{path}: not UTF-8 text ({_first_line(exc)})") from None
    if not entries:
        raise ExternalInputError(f"{path}: the run file has no lines")
    return entries


def _run_line(path: Path, n: int, parts: list[str], seen: set[tuple[str, str]]) -> RunEntry:
    where = f"{path}:{n}"
    if len(parts) != 6:
        raise ExternalInputError(f"{where}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
    qid, _, docid, rank, score_text, _ = parts
    try:
        if int(rank) < 1:
            raise ValueError
    except ValueError:
        raise ExternalInputError(f"{where}: query {qid!r}: rank {rank!r} is not a positive integer") from None
    try:
        score = float(score_text)
    except ValueError:
        raise ExternalInputError(f"{where}: query {qid!r}: score {score_text!r} is not a number") from None
    if not math.isfinite(score):
        raise ExternalInputError(f"{where}: query {qid!r}: score {score_text!r} is not finite")
    if (qid, docid) in seen:
        raise ExternalInputError(f"{where}: query {qid!r} ranks {docid!r} twice")
    seen.add((qid, docid))
    return RunEntry(qid=qid, docid=docid, score=score, line=n)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
