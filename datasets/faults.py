"""Fault collection shared by the loaders (strict: raise at once) and ``check_dataset`` (collect all).

A loader reports every problem it meets through a :class:`Faults`. In strict mode (loading for
training or evaluation) an *error* raises :class:`~datasets.errors.DataError` immediately and a
*warning* is recorded and logged; in collecting mode (``check_dataset``) both are recorded, with
counts and the first few offending places per kind.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from datasets.errors import DataError

log = logging.getLogger(__name__)

# fault kinds (stable names: they appear in check reports and tests)
MISSING_FILE = "missing_file"
UNREADABLE_FILE = "unreadable_file"
TRUNCATED_JPEG = "truncated_jpeg"
MISSING_VIDEO = "missing_video"
GT_NOT_IN_GROUP = "gt_not_in_group"
DUPLICATE_ID = "duplicate_id"
MALFORMED_ROW = "malformed_row"
BAD_ENCODING = "bad_encoding"
BAD_JSON = "bad_json"
PATH_ESCAPE = "path_escape"
MISSING_ANNOTATION = "missing_annotation"
EMPTY_CLIP = "empty_clip"
MISSING_GROUP = "missing_group"
FAILED_DOWNLOAD = "failed_download"  # a URL the prepare step could not fetch (warning: the release loses some)
BAD_BOX = "bad_box"  # a box dropped (degenerate, negative, or a box list not aligned with its frames)

FIRST_N = 5  # offending places kept per kind


@dataclass
class Fault:
    kind: str
    where: str
    message: str
    error: bool = True


@dataclass
class Faults:
    """Collects faults; ``strict=True`` turns every error into an immediate ``DataError``."""

    strict: bool = True
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[Fault]] = field(default_factory=dict)
    is_error: dict[str, bool] = field(default_factory=dict)

    def error(self, kind: str, where: Union[str, Path], message: str, *, line: Optional[int] = None) -> None:
        loc = f"{where}:{line}" if line is not None else str(where)
        if self.strict:
            raise DataError(f"{loc}: {message}", path=str(where), kind=kind)
        self._record(Fault(kind, loc, message, True))

    def warn(self, kind: str, where: Union[str, Path], message: str, *, line: Optional[int] = None) -> None:
        loc = f"{where}:{line}" if line is not None else str(where)
        self._record(Fault(kind, loc, message, False))

    def _record(self, fault: Fault) -> None:
        self.counts[fault.kind] += 1
        self.is_error[fault.kind] = self.is_error.get(fault.kind, False) or fault.error
        ex = self.examples.setdefault(fault.kind, [])
        if len(ex) < FIRST_N:
            ex.append(fault)

    def log_summary(self, name: str) -> None:
        for kind, n in sorted(self.counts.items()):
            first = self.examples[kind][0]
            log.warning("%s: %d x %s (first: %s: %s)", name, n, kind, first.where, first.message)
