"""A DataLoader collate followed by the method's batch preparer, run in the worker processes.

``methods.base.Method.batch_preparer`` names work on a collated batch (tokenizing its text, for
RICE and SGMN) that belongs off the training step's critical path. The training engine and the
evaluator wrap their collate with :func:`with_preparer`, so the DataLoader's workers run it
right after collating (the main process does with ``--num-workers 0``). It lives here, below
both of them, so that neither imports the other for it; it holds two picklable callables and
nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

Collate = Callable[[Sequence[Any]], dict[str, Any]]
Preparer = Callable[[dict[str, Any]], dict[str, Any]]


class PreparedCollate:
    """``prepare(collate(items))``: picklable when both callables are."""

    def __init__(self, collate: Collate, prepare: Preparer) -> None:
        self.collate, self.prepare = collate, prepare

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        return self.prepare(self.collate(items))

    def __repr__(self) -> str:
        return f"PreparedCollate({self.collate!r}, {self.prepare!r})"


def with_preparer(collate: Collate, prepare: Optional[Preparer]) -> Collate:
    """``collate`` followed by ``prepare`` (``collate`` itself when there is nothing to prepare)."""
    return collate if prepare is None else PreparedCollate(collate, prepare)
