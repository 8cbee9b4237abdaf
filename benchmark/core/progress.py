"""Progress display: a rich bar (loss, samples/s, ETA) on a terminal, plain lines otherwise.

The bar is drawn only on rank 0, only when stderr is a TTY and neither ``CI`` nor
``LPR_BENCH_QUIET`` is set; otherwise a one-line summary per epoch is printed to stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def interactive() -> bool:
    if os.environ.get("CI") or os.environ.get("LPR_BENCH_QUIET"):
        return False
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def console(enabled: bool = True) -> Console:
    """A stderr console; ``quiet`` (nothing printed) when ``enabled`` is False (non-zero ranks)."""
    return Console(stderr=True, quiet=not enabled, highlight=False)


class StepProgress:
    """A progress bar over ``total`` steps with free-form ``loss`` and ``rate`` fields."""

    def __init__(self, description: str, total: int, *, enabled: bool = True, unit: str = "samples/s") -> None:
        self.enabled = enabled
        self.con = console(enabled)
        self.live = enabled and interactive()
        self.unit = unit
        self._progress: Optional[Progress] = None
        self._task = None
        self.description = description
        self.total = total

    def __enter__(self) -> "StepProgress":
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} " + self.unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.con,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, loss="-", rate="-")
        return self

    def update(self, completed: int, *, loss: Optional[float] = None, rate: Optional[float] = None) -> None:
        if self._progress is not None:
            fields = {}
            if loss is not None:
                fields["loss"] = f"{loss:.4f}"
            if rate is not None:
                fields["rate"] = f"{rate:.1f}"
            self._progress.update(self._task, completed=completed, **fields)

    def log(self, message: str) -> None:
        """A line above the bar (or a plain line when there is no bar)."""
        self.con.print(message)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
