"""The one exception type for bad data: ``DataError``, whose message names the file and the fault."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class DataError(Exception):
    """Bad or missing data. ``path`` is the offending file (when there is one), ``kind`` the fault kind."""

    def __init__(self, message: str, *, path: Optional[Union[str, Path]] = None, kind: str = "") -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.kind = kind


def data_error(path: Union[str, Path], fault: str, *, kind: str = "", line: Optional[int] = None) -> DataError:
    """Build a ``DataError`` whose message reads ``<path>[:<line>]: <fault>``."""
    where = f"{path}:{line}" if line is not None else str(path)
    return DataError(f"{where}: {fault}", path=path, kind=kind)
