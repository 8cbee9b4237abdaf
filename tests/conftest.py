"""Shared test set-up: an isolated synthetic-data cache and tiny synthetic datasets.

* ``LPR_BENCH_CACHE`` points at a temporary folder for the whole session (shared by the
  pytest-xdist workers, removed at the end), so no test ever writes into the repository's
  ``.cache``. ``LPR_BENCH_QUIET`` turns the progress bars off.
* ``synth_lpr4m`` / ``synth_movingfashion``: the generator's ``tiny`` size (seed 0) loaded
  through the registered ``lpr4m-synth`` / ``movingfashion-synth`` datasets, built once per
  session (the generator's file lock makes concurrent workers build it once).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_MARK = "_LPR_BENCH_TEST_CACHE"
_created: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(_MARK) and os.environ.get("PYTEST_XDIST_WORKER"):
        cache = os.environ[_MARK]  # a worker: reuse the controller's folder
    else:
        cache = tempfile.mkdtemp(prefix="lpr-bench-test-cache-")
        _created.append(cache)
        os.environ[_MARK] = cache
    os.environ["LPR_BENCH_CACHE"] = cache
    os.environ["LPR_BENCH_QUIET"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_cache() -> Path:
    return Path(os.environ["LPR_BENCH_CACHE"])


@pytest.fixture(scope="session")
def synth_lpr4m(synth_cache):
    """``lpr4m-synth`` at size ``tiny`` (42 train pairs, 20 queries in 2 livestreams)."""
    from benchmark.core.registry import DATASETS, load_builtin_datasets

    load_builtin_datasets()
    return DATASETS.get("lpr4m-synth")(None, size="tiny", seed=0)


@pytest.fixture(scope="session")
def synth_movingfashion(synth_cache):
    """``movingfashion-synth`` at size ``tiny`` (one global gallery, a missing test video)."""
    from benchmark.core.registry import DATASETS, load_builtin_datasets

    load_builtin_datasets()
    return DATASETS.get("movingfashion-synth")(None, size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """The synthetic LPR4M release (``urls/``, ``www/``) of lpr4m-synth tiny, frames as 144 x 256
    portrait originals (``prepare`` stores them at 256 x 455, boxes rescaled by the sidecar)."""
    from datasets.synthetic.generate import generate
    from datasets.synthetic.release import write_release

    base = tmp_path_factory.mktemp("tiny_release")
    root = generate("lpr4m", base / "gen", seed=0, size="tiny", workers=1)
    write_release(root, base / "rel", base_url="http://127.0.0.1:9/", original_size=(144, 256))
    return base / "rel"


@pytest.fixture(scope="session")
def synth_roots(tmp_path_factory) -> dict[str, Path]:
    """The generator's ``tiny`` output (seed 0) in three layouts, written once per session into a
    temporary folder (not the cache): ``release`` (LPR4M release), ``lpr750k`` and ``mf``
    (MovingFashion). Tests read them and never write into them."""
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("synth")
    return {
        "release": generate("lpr4m", base / "release", seed=0, size="tiny", workers=1),
        "lpr750k": generate("lpr750k", base / "lpr750k", seed=0, size="tiny", workers=1),
        "mf": generate("movingfashion", base / "mf", seed=0, size="tiny", workers=1),
    }


@pytest.fixture(scope="session")
def toy():
    """evalkit's in-memory toy splits (seed 11, named ``toy``) that the leaderboard and integrity
    tests score submissions against; a module that needs other toy splits defines its own."""
    from tests.evalkit import make_splits

    return make_splits(seed=11, name="toy")


@pytest.fixture
def isolated_registry(monkeypatch):
    """The built-in methods registered, and whatever a test registers forgotten afterwards
    (use with ``pytestmark = pytest.mark.usefixtures("isolated_registry")``)."""
    from benchmark.core import registry
    from benchmark.core.registry import METHODS

    registry.load_builtin_methods()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))


@pytest.fixture(scope="session")
def good_submission(tmp_path_factory, synth_lpr4m) -> Path:
    """A valid submission on lpr4m-synth (tiny, seed 0): random embeddings, real ground truth.
    Tests copy or read it, never change it."""
    from benchmark.record.submission import write_submission
    from tests.evalkit import make_submission

    sub = make_submission(synth_lpr4m, bootstrap=20, dataset_size="tiny", dataset_seed=0)
    assert sub["dataset"]["name"] == "lpr4m-synth"
    return write_submission(sub, tmp_path_factory.mktemp("good"))
