"""A leaderboard of methods (issue 38): one ranked row per method, its variants against its main row,
the declared main configuration, content-keyed re-scoring cache, comparisons."""

from __future__ import annotations

import json

import pytest

from benchmark.record.submission import write_submission
from benchmark.reports import leaderboard as lb
from tests.evalkit import loader_for, make_splits, make_submission


def _write(root, splits, **kw):
    sub = make_submission(splits, **kw)
    write_submission(sub, root)
    return sub["metrics"]["overall"]["R1"]["value"]


def test_one_ranked_row_per_method_its_variants_against_its_main_row(tmp_path, toy):
    """m's ablation ranks above every row in R1 yet is not ranked: it goes to m's own table,
    compared with m's main row; n is compared with the best method (m), not only its neighbour."""
    r_abl = _write(tmp_path, toy, method="m", variant="abl", noise=0.1, seed=1)
    r_m = _write(tmp_path, toy, method="m", noise=0.6, seed=2)
    r_n = _write(tmp_path, toy, method="n", noise=2.5, seed=3)
    board = lb.regenerate(tmp_path, load_splits=loader_for(toy))
    key = ("toy", "tiny")
    ranked = [r for r in board.tables[key] if r.main]
    assert [r.label for r in ranked] == ["m", "n"] and r_abl > r_m > r_n
    (abl_test,) = board.vs_main[key]["m"]
    assert abl_test["R1"].diff == pytest.approx(r_abl - r_m)
    assert board.vs_best[key][1]["R1"].diff == pytest.approx(r_n - r_m) and board.vs_best[key][0] == {}
    md = (tmp_path / "leaderboard.md").read_text()
    ranked_md = md[md.index("**Ranked") : md.index("**Paired")]
    assert "m (abl)" not in ranked_md and "**m: configurations against its main row**" in md
    assert "**Each method against the best (m)**" in md


def test_the_declared_main_configuration_is_the_ranked_row(tmp_path, toy):
    """The main row is the declared one (first declared label present), not the best scoring."""
    _write(tmp_path, toy, method="m", variant="a", noise=0.1, seed=1)
    _write(tmp_path, toy, method="m", variant="b", noise=2.0, seed=2)
    rows = lb.collect_rows(tmp_path, loader_for(toy))
    board = lb.build(rows, main_of=lambda m: {"variants": ("c", "b", "a"), "rerank": "none"})
    assert [r.variant for r in board.tables[("toy", "tiny")] if r.main] == ["b"]
    board = lb.build(
        lb.collect_rows(tmp_path, loader_for(toy)), main_of=lambda m: {"variants": ("b",), "rerank": "all"}
    )
    assert not any(r.main for r in board.tables[("toy", "tiny")])  # no row of its main stage: nothing ranked


def test_rescoring_is_cached_by_content_and_verified_on_read(tmp_path, toy, monkeypatch):
    from benchmark.record import rescore_cache

    monkeypatch.setenv("LPR_BENCH_CACHE", str(tmp_path / "cache"))  # this test's entries alone
    _write(tmp_path, toy, method="m", noise=0.5)
    calls = []
    real = rescore_cache.rescore
    monkeypatch.setattr(rescore_cache, "rescore", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = lb.regenerate(tmp_path, load_splits=loader_for(toy), plots=False, site=False)
    second = lb.regenerate(tmp_path, load_splits=loader_for(toy), plots=False, site=False)
    assert len(calls) == 1
    ((a,),), ((b,),) = first.tables.values(), second.tables.values()
    assert a.values == b.values and a.cis == b.cis and list(a.per_query["R1"]) == list(b.per_query["R1"])
    (entry,) = rescore_cache.cache_dir().glob("*.json")
    obj = json.loads(entry.read_text())
    obj["payload"]["metrics"]["overall"]["R1"]["value"] += 5  # an edited entry: its digest no longer holds
    entry.write_text(json.dumps(obj))
    third = lb.regenerate(tmp_path, load_splits=loader_for(toy), plots=False, site=False)
    assert len(calls) == 2 and next(iter(third.tables.values()))[0].values == a.values
    _write(tmp_path, toy, method="m", noise=2.0)  # the file changed (same name): re-scored
    lb.regenerate(tmp_path, load_splits=loader_for(toy), plots=False, site=False)
    assert len(calls) == 3


def test_compare_resolves_a_label_within_a_dataset_and_writes_nothing(tmp_path, toy):
    from benchmark.record.submission import SubmissionError
    from benchmark.reports import publish

    other = make_splits(seed=12, name="toy2")
    for splits in (toy, other):
        _write(tmp_path, splits, method="good", noise=0.3)
        _write(tmp_path, splits, method="weak", noise=3.0)
    before = sorted(p for p in tmp_path.rglob("*"))
    load = lambda ds: {"toy": toy, "toy2": other}.get(ds["name"])
    lines = publish.compare_only(tmp_path, "good", "weak", dataset="toy2", load_splits=load)
    assert lines[0].startswith("test, toy2 (tiny)") and "good - weak" in lines[1]
    with pytest.raises(SubmissionError, match="names rows in 2 tables.*--dataset"):
        publish.compare_only(tmp_path, "good", "weak", load_splits=load)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_comparisons_are_read_back_by_content(tmp_path, toy, monkeypatch):
    """A second regeneration reads every seed-aware comparison back (same values, no redraw); a
    changed submission's comparisons are recomputed."""
    from benchmark.evaluation import significance as sig
    from benchmark.reports import comparison_cache

    monkeypatch.setenv("LPR_BENCH_CACHE", str(tmp_path / "cache"))
    for method, noise in (("a", 0.3), ("b", 1.5), ("c", 3.0)):
        _write(tmp_path / "r", toy, method=method, noise=noise)
    calls = []
    real = sig.seed_aware_tests
    monkeypatch.setattr(sig, "seed_aware_tests", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = lb.regenerate(tmp_path / "r", load_splits=loader_for(toy), plots=False, site=False)
    n = len(calls)
    second = lb.regenerate(tmp_path / "r", load_splits=loader_for(toy), plots=False, site=False)
    assert n == 4 and len(calls) == n  # 2 neighbour pairs + 2 against the best, then none redrawn
    key = ("toy", "tiny")
    assert second.pairs[key] == first.pairs[key] and second.vs_best[key] == first.vs_best[key]
    _write(tmp_path / "r", toy, method="c", noise=2.0)
    lb.regenerate(tmp_path / "r", load_splits=loader_for(toy), plots=False, site=False)
    assert len(calls) > n
    assert comparison_cache.ComparisonCache().folder.is_dir()
