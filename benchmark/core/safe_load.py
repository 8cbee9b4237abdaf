"""Loading torch files from disk safely, with errors a user can act on.

Every checkpoint, feature-cache entry and weight file is read with
``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain containers only.
A file that holds any other pickled object (a ``__reduce__`` payload that would run code, a
custom class) is refused before anything in it runs; :func:`load_failure_reason` turns
torch's long, ANSI-coloured message (which also suggests turning the protection off) into
one line naming what was refused.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REFUSED = re.compile(r"(Unsupported global: GLOBAL \S+|Unsupported operand \S+|Unsupported class \S+)")


TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a bare (legacy) pickle


class UnsafeOrCorruptFile(RuntimeError):
    """A torch file that is unreadable or not weights-only; ``str()`` names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def load_failure_reason(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused or failed."""
    text = _ANSI.sub("", str(exc)).strip()
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = _REFUSED.search(text)
        what = found.group(1).rstrip(".") if found else "objects that are not tensors or plain containers"
        return (
            f"refused: it holds pickled Python objects ({what}), not only tensors; it is read with "
            "torch.load(weights_only=True) and nothing in it was executed"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable torch file ({first})"


def safe_torch_load(path: Path | str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; failures raise :class:`UnsafeOrCorruptFile`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise UnsafeOrCorruptFile(path, "no such file") from None
    except OSError as exc:
        raise UnsafeOrCorruptFile(path, f"cannot read ({exc.strerror or exc})") from None
    if not head.startswith(TORCH_MAGIC):
        raise UnsafeOrCorruptFile(path, f"not a torch file (it starts with {head!r}, not a zip archive or a pickle)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe pickled objects
        raise UnsafeOrCorruptFile(path, load_failure_reason(exc)) from exc
