"""The leaderboard's default ``load_splits``: datasets from the registry, with a line on stderr as
each loads (a synthetic set is generated into the cache on first use, a minute or two)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from rich.console import Console

from benchmark.core.registry import DATASETS, RegistryError, load_builtin_datasets
from datasets.errors import DataError
from datasets.records import DatasetSplits
from datasets.synthetic.loaders import load_recorded

LoadSplits = Callable[[Mapping[str, Any]], Optional[DatasetSplits]]


def registry_loader(data_roots: Optional[Mapping[str, Path]] = None) -> LoadSplits:
    """A ``load_splits`` for :func:`regenerate` backed by the ``DATASETS`` registry.

    A dataset named in ``data_roots`` is loaded from there; otherwise the loader is called
    with no data root and the submission's generator ``size``/``seed``, which synthetic
    datasets satisfy (generated into the cache) and real ones refuse with ``DataError``:
    the row is then unverified.
    """

    load_builtin_datasets()
    roots = dict(data_roots or {})

    def load(ds: Mapping[str, Any]) -> Optional[DatasetSplits]:
        try:
            loader = DATASETS.get(ds["name"])
        except RegistryError:
            return None
        with _progress(ds, roots.get(ds["name"])):
            return _load(loader, ds)

    def _load(loader: Callable[..., DatasetSplits], ds: Mapping[str, Any]) -> Optional[DatasetSplits]:
        kwargs: dict[str, Any] = {}
        if ds.get("size") is not None:
            kwargs["size"] = ds["size"]
        if ds.get("seed") is not None:
            kwargs["seed"] = ds["seed"]
        root = roots.get(ds["name"])
        if root is None:
            try:
                if ds.get("size") is not None:  # a generated synthetic set: the world it was made on
                    return load_recorded(
                        ds["name"],
                        size=ds["size"],
                        seed=int(ds.get("seed") or 0),
                        checksum=ds.get("annotation_checksum"),
                    )
                return loader(None, **kwargs)
            except DataError:
                return None
        return loader(Path(root), **kwargs)

    return load


@contextmanager
def _progress(ds: Mapping[str, Any], root: Optional[Path]):
    """One line on stderr before and after loading a dataset (a synthetic set is generated into the
    cache on first use, a minute or two on 2 cores), with a spinner on a terminal."""

    con = Console(stderr=True, highlight=False)
    where = (
        f"from {root}"
        if root is not None
        else (
            f"size {ds.get('size')}, seed {ds.get('seed')}: generated into the cache on first use, 1-2 minutes"
            if ds.get("size")
            else ""
        )
    )
    con.print(f"leaderboard: loading {ds['name']}" + (f" ({where})" if where else "") + " ...")
    t0 = time.perf_counter()
    with con.status(f"loading {ds['name']} ..."):
        yield
    con.print(f"leaderboard: {ds['name']} loaded in {time.perf_counter() - t0:.0f}s")
