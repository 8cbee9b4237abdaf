"""TREC files of a split and of a submission, for ``trec_eval`` and ranx.

* qrels: ``qid 0 docid 1``, one line per distinct ground-truth image of each test query (a
  ground truth absent from the query's gallery group is listed too: it counts in AP's
  denominator, as in the harness, and can never be retrieved);
* run: ``qid Q0 docid rank score tag``, a submission's saved top-K list per query. Submissions
  keep the order, not the scores, so the score written is ``K + 1 - rank`` (K = ``topk_saved``):
  strictly decreasing, so ``trec_eval`` and ranx (which sort by score) read back the same
  order. A query without a ranking (no frames in the release) has no lines: ranx's
  ``make_comparable=True`` and ``trec_eval -c`` count it as a miss, as the harness does.

Ids are whitespace-separated fields in these formats: an id holding whitespace is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from benchmark.core.atomic import atomic_write_bytes
from benchmark.evaluation.scoring import SplitIndex


class TrecExportError(ValueError):
    """An id cannot be written as a TREC field (one line naming it)."""


def _field(text: str, what: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise TrecExportError(f"{what} {text!r} cannot be a TREC field (empty or holds whitespace)")
    return text


def qrels_lines(index: SplitIndex) -> Iterator[str]:
    """``qid 0 docid 1`` for every (query, distinct ground truth), in split order."""
    for qid, gts in zip(index.query_ids, index.gt_ids):
        for g in gts:
            yield f"{_field(qid, 'query id')} 0 {_field(g, 'image id')} 1"


def run_lines(sub: Mapping[str, Any], tag: str) -> Iterator[str]:
    """``qid Q0 docid rank score tag`` for every saved ranking entry of ``sub``."""
    k = int(sub["protocol"]["topk_saved"])
    _field(tag, "run tag")
    for qid, ids in sub["rankings"]:
        _field(qid, "query id")
        for r, g in enumerate(ids, 1):
            yield f"{qid} Q0 {_field(g, 'image id')} {r} {k + 1 - r} {tag}"


def run_tag(path: Path | str) -> str:
    """A submission file's name without ``.json[.gz]``: its run's tag."""
    name = Path(path).name
    for ext in (".gz", ".json"):
        name = name.removesuffix(ext)
    return name


def qrels_name(sub: Mapping[str, Any]) -> str:
    """``<dataset>__<checksum12>.qrels``: one file per dataset instance."""
    ds = sub["dataset"]
    return f"{ds['name']}__{ds['annotation_checksum'][:12]}.qrels"


def _text(lines: Iterator[str]) -> bytes:
    return "".join(f"{ln}\n" for ln in lines).encode("utf-8")


def export(sub: Mapping[str, Any], submission_path: Path | str, index: SplitIndex, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<qrels_name>`` and ``<out_dir>/<run_tag>.run`` (both made before either
    is written, each written atomically); return both paths."""
    tag = run_tag(submission_path)
    files = [
        (Path(out_dir) / qrels_name(sub), _text(qrels_lines(index))),
        (Path(out_dir) / f"{tag}.run", _text(run_lines(sub, tag))),
    ]
    for path, data in files:
        atomic_write_bytes(path, data)
    return files[0][0], files[1][0]
