"""The feature cache: hits skip encoding, any change to the key is a miss, bad entries are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from benchmark.cli.main import main
from benchmark.core import registry
from benchmark.core.config import PROFILES
from benchmark.core.registry import METHODS
from benchmark.evaluation import evaluate as E
from benchmark.evaluation import feature_cache as fc
from benchmark.training.distributed import DistEnv
from methods.base import DataInfo, Encoded, build_method
from tests.scaleout_helpers import run_args, run_dir

TINY = PROFILES["tiny"]
EVAL = dataclasses.replace(TINY.eval, bootstrap=0)
SMALL = {
    "encoder.layers": "1",
    "encoder.width": "32",
    "encoder.heads": "2",
    "encoder.patch_size": "28",
    "encoder.embed_dim": "32",
}


pytestmark = pytest.mark.usefixtures("isolated_registry")  # conftest: registrations are forgotten


def _method(**overrides: str):
    info = DataInfo(num_products=5, num_categories=3, num_frames=TINY.data.num_frames, image_size=TINY.data.image_size)
    registry.load_builtin_methods()
    torch.manual_seed(0)
    return build_method(METHODS.get("clip-meanpool"), "tiny", info, {**SMALL, **overrides})


class Counter:
    """Counts the items a method encodes, per side."""

    def __init__(self, method) -> None:
        self.items = {"query": 0, "gallery": 0}
        for side in ("query", "gallery"):
            fn = getattr(method, f"encode_{side}")

            def wrapped(batch, _fn=fn, _side=side):
                self.items[_side] += len(batch["index"])
                return _fn(batch)

            setattr(method, f"encode_{side}", wrapped)


def _eval(method, splits, cache, data_cfg=TINY.data):
    return E.evaluate(method, splits, data_cfg, EVAL, env=DistEnv(), show_progress=False, feature_cache=cache)


@pytest.fixture(scope="module")
def cold(tmp_path_factory, synth_lpr4m):
    """One cold evaluation into a fresh cache: (cache, method, counter, output)."""
    cache = fc.FeatureCache(tmp_path_factory.mktemp("fcache"))
    m = _method()
    counter = Counter(m)
    out = _eval(m, synth_lpr4m, cache)
    return cache, m, counter, out


def test_cold_run_encodes_everything_and_writes_two_entries(cold, synth_lpr4m):
    cache, _, counter, _ = cold
    present = [q for q in synth_lpr4m.queries if not q.missing]
    assert counter.items == {"query": len(present), "gallery": len(synth_lpr4m.gallery)}
    assert cache.stats["misses"] == 2 and cache.stats["writes"] == 2
    assert sorted(p.name.split("-")[0] for p in cache.root.iterdir()) == ["gallery", "query"]


def test_warm_run_encodes_nothing_and_ranks_identically(cold, synth_lpr4m):
    cache, m, counter, out = cold
    before = dict(counter.items)
    hits = cache.stats["hits"]
    again = _eval(m, synth_lpr4m, cache)
    assert counter.items == before  # not one item re-encoded
    assert cache.stats["hits"] == hits + 2
    assert torch.equal(again.ranking.index, out.ranking.index)
    assert torch.equal(again.ranking.score, out.ranking.score)
    assert torch.equal(again.ranking.gt_rank, out.ranking.gt_rank)
    # the cost record: measured on the cold run, not measurable from cached features
    assert out.inference["feature_cache"] == "miss" and out.inference["queries_per_s"] > 0
    assert again.inference["feature_cache"] == "hit" and again.inference["queries_per_s"] is None


def test_same_weights_in_another_model_object_hit(cold, synth_lpr4m):
    cache, m, _, _ = cold
    twin = _method()
    twin.load_state_dict(m.state_dict())
    counter = Counter(twin)
    _eval(twin, synth_lpr4m, cache)
    assert counter.items == {"query": 0, "gallery": 0}


@pytest.mark.parametrize("change", ["weights", "annotations", "data_config", "method_config", "query_set"])
def test_any_change_to_the_key_is_a_miss(cold, synth_lpr4m, change):
    cache, m, _, _ = cold
    model, splits, data_cfg = _method(), synth_lpr4m, TINY.data
    model.load_state_dict(m.state_dict())
    if change == "weights":
        with torch.no_grad():
            p = next(model.parameters())
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))  # one ulp
    elif change == "annotations":
        splits = dataclasses.replace(splits, annotation_checksum="0" * 64)
    elif change == "data_config":
        data_cfg = dataclasses.replace(data_cfg, resize_size=data_cfg.resize_size + 8)
    elif change == "method_config":
        model.cfg = dataclasses.replace(model.cfg, max_logit_scale=50.0)
    elif change == "query_set":
        q0 = dataclasses.replace(splits.queries[0], missing=True)
        splits = dataclasses.replace(splits, queries=[q0, *splits.queries[1:]])
    counter = Counter(model)
    _eval(model, splits, cache, data_cfg)
    if change == "query_set":  # the gallery side is the same
        assert counter.items["query"] == len([q for q in splits.queries if not q.missing])
        assert counter.items["gallery"] == 0
    else:
        assert counter.items["query"] > 0 and counter.items["gallery"] > 0


def test_state_dict_hash_sees_every_bit_and_buffers():
    m = torch.nn.BatchNorm1d(3)
    h = fc.state_dict_hash(m)
    assert fc.state_dict_hash(m) == h and len(h) == 64
    m.running_mean[1] = 1e-30  # a buffer, not a parameter
    assert fc.state_dict_hash(m) != h
    b = torch.nn.Linear(2, 2).to(torch.bfloat16)
    hb = fc.state_dict_hash(b)
    assert fc.state_dict_hash(b.float()) != hb  # the dtype is part of it


# --- entries with and without re-ranking extras ------------------------------------------------


def _ctx(root: Path) -> fc.CacheContext:
    return fc.CacheContext(fc.FeatureCache(root), model="m", annotations="a", config="c", split="test", amp="fp32")


def _computer(n: int = 4, with_extras: bool = True):
    calls = []

    def compute() -> Encoded:
        calls.append(1)
        extras = {"tokens": torch.arange(n * 6, dtype=torch.float32).reshape(n, 3, 2)} if with_extras else {}
        return Encoded(torch.eye(n, 5), extras)

    return compute, calls


def test_rerank_extras_entry_serves_both_kinds_of_request(tmp_path):
    ctx, ids, env = _ctx(tmp_path), ["a", "b", "c", "d"], DistEnv()
    compute, calls = _computer()
    plain = ctx.get_or_compute("gallery", ids, need_extras=False, env=env, compute=compute)
    assert len(calls) == 1 and plain.extras  # computed with extras, cached without
    rich = ctx.get_or_compute("gallery", ids, need_extras=True, env=env, compute=compute)
    assert len(calls) == 2 and torch.equal(rich.extras["tokens"], compute().extras["tokens"])  # miss: no extras cached
    calls.clear()
    for need in (True, False):
        enc = ctx.get_or_compute("gallery", ids, need_extras=need, env=env, compute=compute)
        assert bool(enc.extras) == need
    assert calls == []  # the entry now holds extras and serves both


def test_unreadable_or_foreign_entries_are_recomputed(tmp_path, capsys):
    ctx, ids, env = _ctx(tmp_path), ["a", "b", "c", "d"], DistEnv()
    compute, calls = _computer(with_extras=False)
    ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    path = ctx.cache.path(ctx.key("query", ids))
    path.write_bytes(b"\x00garbage")
    ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    assert len(calls) == 2 and "ignored: unreadable" in capsys.readouterr().err
    # an entry written for other ids (copied over this key's file) is refused by the stored key
    other = _ctx(tmp_path)
    other.get_or_compute("query", ["x", "y", "z", "w"], need_extras=False, env=env, compute=compute)
    path.write_bytes(other.cache.path(other.key("query", ["x", "y", "z", "w"])).read_bytes())
    ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    assert "its key does not match" in capsys.readouterr().err
    assert ctx.cache.load(ctx.key("query", ids), num_items=4, need_extras=False) is not None  # rewritten


def test_an_entry_altered_after_writing_is_recomputed(tmp_path, capsys):
    """Right key, other numbers (the file rewritten with its key kept): refused by the content hash."""
    ctx, ids, env = _ctx(tmp_path), ["a", "b", "c", "d"], DistEnv()
    compute, calls = _computer(with_extras=False)
    first = ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    path = ctx.cache.path(ctx.key("query", ids))
    entry = torch.load(path, weights_only=True)
    entry["embedding"] = entry["embedding"].flip(0)  # same shape, finite: only the hash can tell
    torch.save(entry, path)
    again = ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    assert len(calls) == 2 and torch.equal(again.embedding, first.embedding)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: feature cache entry {path} ignored: its tensors do not match their content hash "
        "(altered after writing); re-encoding"
    ]
    assert ctx.cache.load(ctx.key("query", ids), num_items=4, need_extras=False) is not None  # rewritten


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_never_executed(tmp_path, capsys):
    ctx, ids, env = _ctx(tmp_path / "c"), ["a", "b"], DistEnv()
    marker = tmp_path / "pwned"
    path = ctx.cache.path(ctx.key("query", ids))
    path.parent.mkdir(parents=True)
    torch.save({"key": {}, "embedding": _Payload(marker), "extras": {}, "has_extras": False}, path)
    compute, calls = _computer(n=2, with_extras=False)
    ctx.get_or_compute("query", ids, need_extras=False, env=env, compute=compute)
    assert not marker.exists() and len(calls) == 1
    assert "ignored: unreadable" in capsys.readouterr().err


def test_entries_over_the_size_limit_are_not_written(tmp_path, capsys):
    ctx = _ctx(tmp_path)
    ctx.cache.max_entry_bytes = 16
    compute, _ = _computer(with_extras=False)
    ctx.get_or_compute("query", ["a", "b", "c", "d"], need_extras=False, env=DistEnv(), compute=compute)
    assert not list(tmp_path.iterdir()) and "not cached" in capsys.readouterr().err


# --- through the command line ---------------------------------------------------------------


@pytest.mark.slow
def test_cli_re_evaluation_reads_the_cache_and_the_flag_turns_it_off(tmp_path, synth_lpr4m, monkeypatch):
    out, res = tmp_path / "runs", tmp_path / "res"
    assert main(run_args(out, res, method="clip-meanpool", steps=1)) == 0
    cache_dir = out / fc.FEATURE_CACHE_DIR
    assert len(list(cache_dir.glob("*.pt"))) == 2

    def no_encoding(*a, **k):
        raise AssertionError("re-encoded although the features are cached")

    monkeypatch.setattr(E, "extract", no_encoding)
    # the run is complete: --resume trains no further and evaluates the same weights from the cache
    assert main(run_args(out, tmp_path / "res2", "--resume", method="clip-meanpool", steps=1)) == 0
    # with --no-feature-cache it must encode (and so hits the guard)
    with pytest.raises(AssertionError, match="re-encoded"):
        main(run_args(out, tmp_path / "res3", "--resume", "--no-feature-cache", method="clip-meanpool", steps=1))
    assert (run_dir(out, "clip-meanpool") / "last.pt").is_file()
