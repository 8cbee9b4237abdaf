"""benchmark.reports.leaderboard: re-scored tables, unverified and reported rows, atomic and deterministic output."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmark.record.submission import dumps_submission, write_submission
from benchmark.reports import leaderboard as lb
from tests.evalkit import make_splits, make_submission

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


@pytest.fixture(scope="module")
def toy():
    return make_splits(seed=11, name="toy")


@pytest.fixture
def results(tmp_path, toy):
    good = make_submission(toy, method="good", noise=0.3, seed=0, train_s=3700.0)
    bad = make_submission(toy, method="weak", variant="small", noise=3.0, seed=0, train_s=59.0)
    write_submission(good, tmp_path)
    write_submission(bad, tmp_path)
    reported = {
        "schema_version": 1,
        "rows": [
            {
                "method": "paper-method",
                "variant": "",
                "dataset": "toy",
                "profile": "tiny",
                "metrics": {"R1": 12.5, "R5": 40.0},
                "protocol": "its own",
                "source": "a paper (2020)",
                "date": "2020",
            }
        ],
    }
    (tmp_path / "reported.json").write_text(json.dumps(reported))
    return tmp_path, good, bad


def loader_for(splits):
    return lambda ds: splits if ds["name"] == splits.name else None


def test_tables_show_rescored_numbers_ranked_by_r1(results, toy):
    root, good, bad = results
    board = lb.regenerate(root, load_splits=loader_for(toy))
    rows = board.tables[("toy", "tiny")]
    r1 = [r.values["R1"] for r in rows]
    assert rows[0].method == "good" and len(rows) == 3
    assert r1 == sorted(r1, reverse=True)
    good_row = next(r for r in rows if r.method == "good")
    assert good_row.status == "verified" and good_row.values["R1"] == pytest.approx(
        good["metrics"]["overall"]["R1"]["value"]
    )
    assert good_row.values["mAP"] == pytest.approx(good["metrics"]["overall"]["mAP@10"]["value"])
    md = (root / "leaderboard.md").read_text()
    g = good["metrics"]["overall"]
    assert f"{g['R1']['value']:.2f} [{g['R1']['ci95'][0]:.2f}, {g['R1']['ci95'][1]:.2f}]" in md
    assert "| weak (small)" in md and "| verified " in md and "reported [1]" in md
    assert "1.0h" in md and "59s" in md and "1.2K" in md and "2025-01-02" in md
    assert "[1] a paper (2020); protocol: its own" in md
    tex = (root / "leaderboard.tex").read_text()
    assert "\\begin{tabular}" in tex and "weak (small)" in tex and "\\toprule" in tex
    png = root / "plots" / "toy__tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_trusts_no_claimed_number(results, toy):
    """Claims that disagree with the rankings keep that file off the board, named with its
    first fault in ``board.skipped``; the rest is regenerated unchanged."""
    root, good, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    before = (root / "leaderboard.md").read_bytes()
    liar = copy.deepcopy(good)
    liar["method"]["name"] = "liar"
    liar["metrics"]["overall"]["R1"]["value"] = 99.0
    (root / "submissions" / "liar.json").write_text(dumps_submission(liar))
    board = lb.regenerate(root, load_splits=loader_for(toy))
    assert [p for p, _ in board.skipped] == [str(root / "submissions" / "liar.json")]
    assert re.search(r"metrics\.overall\.R1: claimed 99\.0, re-scored", board.skipped[0][1])
    assert (root / "leaderboard.md").read_bytes() == before
    with pytest.raises(lb.LeaderboardError, match=r"(?s)liar\.json.*metrics\.overall\.R1: claimed 99\.0"):
        lb.collect_rows(root, loader_for(toy))  # without a skip list: strict, as before


def test_unverified_rows_show_claims_and_say_so(results):
    root, good, _ = results
    board = lb.regenerate(root, load_splits=lambda ds: None)
    rows = board.tables[("toy", "tiny")]
    good_row = next(r for r in rows if r.method == "good")
    assert good_row.status == "unverified" and good_row.curve is None
    assert good_row.values["R1"] == good["metrics"]["overall"]["R1"]["value"]
    md = (root / "leaderboard.md").read_text()
    assert "| unverified [1]" in md and "claimed numbers: the dataset was not available" in md


def test_regeneration_is_deterministic_and_removes_stale_plots(results, toy):
    root, _, _ = results
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "gone__tiny.png").write_bytes(b"old")
    lb.regenerate(root, load_splits=loader_for(toy))
    first = {p: (root / p).read_bytes() for p in ("leaderboard.md", "leaderboard.tex")}
    lb.regenerate(root, load_splits=loader_for(toy))
    assert {p: (root / p).read_bytes() for p in first} == first
    assert not (root / "plots" / "gone__tiny.png").exists()


def test_interrupted_regeneration_leaves_old_file_whole(results, toy, monkeypatch):
    root, _, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    before = (root / "leaderboard.md").read_bytes()
    (root / "submissions" / "good__extra.json").write_text(
        (root / "submissions" / "toy__tiny__good__seed0.json").read_text().replace('"good"', '"other"')
    )
    import os

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lb.regenerate(root, load_splits=loader_for(toy))
    monkeypatch.undo()
    assert (root / "leaderboard.md").read_bytes() == before
    assert not [p for p in root.rglob("*.tmp")]


def test_bad_reported_file_is_rejected(results, toy):
    root, _, _ = results
    (root / "reported.json").write_text(json.dumps({"schema_version": 1, "rows": [{"method": "x"}]}))
    board = lb.regenerate(root, load_splits=loader_for(toy))
    assert [p for p, _ in board.skipped] == [str(root / "reported.json")]
    assert "schema violation" in board.skipped[0][1]
    assert all(r.source != "reported" for rows in board.tables.values() for r in rows)


def test_seeds_of_one_configuration_pool_into_one_row_with_per_seed_values(tmp_path, toy):
    """Two seeds of one method: one ranked row, the mean over seeds, an interval over seeds and
    queries that holds both seeds' spread, "2 seeds", and each seed's R1 in the run details."""
    subs = [make_submission(toy, method="m", seed=seed, noise=0.3 + 2.5 * seed) for seed in (0, 1)]
    for sub in subs:
        write_submission(sub, tmp_path)
    board = lb.regenerate(tmp_path, load_splits=loader_for(toy))
    (row,) = board.tables[("toy", "tiny")]
    r1 = [s["metrics"]["overall"]["R1"]["value"] for s in subs]
    assert row.main and [r.seed for r in row.runs] == [0, 1] and row.seed is None
    assert row.values["R1"] == pytest.approx(sum(r1) / 2) and r1[0] != r1[1]
    lo, hi = row.cis["R1"]
    assert lo < min(r1) < max(r1) < hi
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 2 seeds " in md and f"{r1[0]:.2f} / {r1[1]:.2f}" in md and "m, seed 0" not in md


def test_one_seed_rows_say_so(results, toy):
    root, _, _ = results
    lb.regenerate(root, load_splits=loader_for(toy))
    md = (root / "leaderboard.md").read_text()
    assert "| 1 seed " in md and "queries only (1 seed)" in md


def test_a_reranked_row_is_labelled_by_its_stage_and_trained_nothing(tmp_path, toy):
    first = make_submission(toy, method="m", train_s=300.0)
    first["provenance"]["training"] = {"steps": 40, "resumed_from_step": None}
    again = copy.deepcopy(first)  # the same checkpoint, re-ranked in a resumed evaluation
    again["protocol"].update(rerank="topk", rerank_topk=10)
    again["provenance"]["training"] = {"steps": 40, "resumed_from_step": 40}
    again["provenance"]["wall_time_s"]["train"] = 0.0
    write_submission(first, tmp_path)
    write_submission(again, tmp_path)
    rows = lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]
    by_label = {r.label: r for r in rows}
    assert set(by_label) == {"m", "m, re-ranked, top-10"}  # told apart by stage, not by seed
    assert by_label["m"].train_s == 300.0 and by_label["m, re-ranked, top-10"].train_s is None
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| m, re-ranked, top-10 " in md and "5.0min" in md and "0s" not in md


def test_a_run_resumed_part_way_counts_the_epochs_before_the_resume(tmp_path, toy):
    sub = make_submission(toy, method="m", train_s=60.0)  # this process: the last 2 epochs only
    sub["provenance"]["training"] = {
        "steps": 40,
        "resumed_from_step": 20,
        "history": [{"epoch": e, "wall_s": 30.0 + e} for e in range(1, 5)],
    }
    write_submission(sub, tmp_path)
    (row,) = lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]
    assert row.train_s == 31.0 + 32.0 + 33.0 + 34.0


def test_a_first_stage_evaluation_of_a_finished_checkpoint_shows_its_training_time(tmp_path, toy):
    """Resumed at its last step (e.g. to score the same weights on a regenerated test split):
    the row's weights took the epochs' time to train, though this process trained nothing."""
    sub = make_submission(toy, method="m", train_s=0.0)
    sub["provenance"]["training"] = {
        "steps": 40,
        "resumed_from_step": 40,
        "history": [{"epoch": e, "wall_s": 60.0} for e in range(1, 5)],
    }
    write_submission(sub, tmp_path)
    (row,) = lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]
    assert row.train_s == 240.0


def test_analysis_rows_come_after_the_ranked_ones_unnumbered(tmp_path, toy):
    """Another run's weights (``--weights``) or a test-time oracle never takes a rank, however high its R1."""
    weak = make_submission(toy, method="m", noise=3.0)
    oracle = make_submission(toy, method="m", variant="ipd-oracle", noise=0.1)
    reused = make_submission(toy, method="m", variant="x", noise=0.1)
    reused["provenance"]["initial_weights"] = {"path": "runs/a/last.pt", "sha256": "ab" * 32, "source": "m-full"}
    for sub in (weak, oracle, reused):
        write_submission(sub, tmp_path)
    rows = lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]
    assert [r.label for r in rows][0] == "m" and {r.label for r in rows[1:]} == {
        "m (ipd-oracle)",
        "m (x), weights of m-full",
    }
    assert rows[1].values["R1"] > rows[0].values["R1"] and all(r.analysis for r in rows[1:])
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 1   | m " in md and "| –   | m (x), weights of m-full" in md and "| 2 " not in md


def test_an_untrained_control_is_analysis_and_a_zero_shot_row_is_ranked(tmp_path, toy):
    """No ``provenance.training``: random weights make an unranked "untrained" control (its own
    file beside the trained row); pretrained weights make a ranked "zero-shot" row."""
    trained = make_submission(toy, method="m", noise=1.0)
    untrained = make_submission(toy, method="m", noise=0.2)
    zero_shot = make_submission(toy, method="z", noise=2.0)
    for sub in (untrained, zero_shot):
        sub["provenance"].pop("training", None)
    zero_shot["method"]["config"] = {"encoder": {"pretrained": "openai", "width": 8}}
    paths = {write_submission(sub, tmp_path).name for sub in (trained, untrained, zero_shot)}
    assert paths == {
        "toy__tiny__m__seed0.json",
        "toy__tiny__m__untrained__seed0.json",
        "toy__tiny__z__zero-shot__seed0.json",
    }
    rows = lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]
    assert [(r.label, r.analysis) for r in rows] == [("m", False), ("z, zero-shot", False), ("m, untrained", True)]
    assert rows[2].values["R1"] > rows[0].values["R1"]  # the better untrained score still takes no rank
    assert "| –   | m, untrained" in (tmp_path / "leaderboard.md").read_text()


def test_trained_rows_show_their_gain_over_the_untrained_control(tmp_path, toy):
    """R1 minus the untrained control's (same method, variant, stage; seeds pooled alike), "(n.s.)" when the
    control lies inside the trained row's CI; no column in a table without controls."""
    write_submission(make_submission(toy, method="solo", noise=0.5), tmp_path)
    lb.regenerate(tmp_path, load_splits=loader_for(toy))
    assert "vs untrained R1 / R10" not in (tmp_path / "leaderboard.md").read_text()
    good, good0 = make_submission(toy, method="good", noise=0.3), make_submission(toy, method="good", noise=4.0, seed=1)
    flat, flat0 = (
        make_submission(toy, method="flat", noise=4.0, seed=2),
        make_submission(toy, method="flat", noise=4.0, seed=3),
    )
    for sub in (good0, flat0):
        sub["provenance"].pop("training")
    for sub in (good0, flat, flat0):  # different noise draws, all of seed 0
        sub["provenance"]["seed"] = 0
    for sub in (good, good0, flat, flat0):
        write_submission(sub, tmp_path)
    rows = {(r.label, r.seed): r for r in lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]}
    g, g0, f, f0 = rows[("good", 0)], rows[("good, untrained", 0)], rows[("flat", 0)], rows[("flat, untrained", 0)]
    assert g.control == g0.values and f.control == f0.values
    assert g.cis["R1"][0] > g0.values["R1"] and f.cis["R1"][0] <= f0.values["R1"]
    assert lb.fmt_control(g) == f"{g.values['R1'] - g0.values['R1']:+.2f}"
    assert lb.fmt_control(f).endswith(" (n.s.)") and lb.fmt_control(g0) == lb.DASH
    r10 = lb.fmt_control(g, "R10")
    assert r10.startswith(f"{g.values['R10'] - g0.values['R10']:+.2f}")
    assert r10.endswith(" (n.s.)") == (g.cis["R10"][0] <= g0.values["R10"])
    assert lb.fmt_controls(g) == f"{lb.fmt_control(g)} / {r10}" and lb.fmt_controls(g0) == lb.DASH
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| vs untrained R1 / R10 " in md and lb.fmt_controls(g) in md


def test_a_row_trained_under_another_recipe_is_labelled_and_keeps_its_control(tmp_path, toy):
    """A run with ``--epochs 8`` is not one of the table's protocol: its variant says so
    (``train.epochs-8``, from the runner), and it is still compared with the untrained network of
    its model, which trains nothing and so carries no recipe."""
    import dataclasses

    from benchmark.core.config import PROFILES

    tiny = PROFILES["tiny"]
    longer = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=8))
    trained = make_submission(toy, method="m", variant="x+train.epochs-8", profile=longer, noise=0.3)
    control = make_submission(toy, method="m", variant="x", noise=4.0)
    control["provenance"].pop("training")
    for sub in (trained, control):
        write_submission(sub, tmp_path)
    rows = {r.label: r for r in lb.regenerate(tmp_path, load_splits=loader_for(toy)).tables[("toy", "tiny")]}
    row, ctl = rows["m (x+train.epochs-8)"], rows["m (x), untrained"]
    assert row.recipe == {"train.epochs": 8} and ctl.recipe == {}
    assert row.control == ctl.values and lb.fmt_control(row) == f"{row.values['R1'] - ctl.values['R1']:+.2f}"


def test_print_run_table(toy):
    from rich.console import Console

    sub = make_submission(toy, bootstrap=50)
    buf = io.StringIO()
    lb.print_run_table(sub["metrics"], Console(file=buf, width=120, color_system=None), title="toy run")
    text = buf.getvalue()
    r1 = sub["metrics"]["overall"]["R1"]
    assert "toy run (40 queries)" in text
    assert f"{r1['value']:.2f}" in text and f"[{r1['ci95'][0]:.2f}, {r1['ci95'][1]:.2f}]" in text
    assert "by scale" in text and "by category" in text and "unknown" in text


def test_reported_rows_are_the_design_numbers():
    rows = lb.load_reported(RESULTS / "reported.json")
    got = {(r.method, r.variant, r.dataset): r.values for r in rows}
    assert got[("rice", "icl", "lpr4m")] == {"R1": 31.50}
    assert got[("rice", "icl+pmd", "lpr4m")] == {"R1": 33.07}
    assert got[("rice", "icl+pmd+pfr", "lpr4m")] == {"R1": 33.77}
    assert got[("rice", "icl", "movingfashion")] == {"R1": 74.76}
    assert got[("rice", "icl+pmd", "movingfashion")] == {"R1": 76.87}
    assert got[("rice", "icl+pmd+pfr", "movingfashion")] == {"R1": 77.92}
    seam = got[("seam-match-rcnn", "", "movingfashion")]
    assert seam == {"R1": 49.0, "R5": 80.0, "R10": 89.0, "R20": 94.0}
    seam_row = next(r for r in rows if r.method == "seam-match-rcnn")
    assert "SEAM's own evaluation script" in seam_row.note


def test_committed_leaderboard_has_no_drift(tmp_path):
    """Regenerating from the committed submissions reproduces the committed tables byte for byte."""
    work = tmp_path / "results"
    work.mkdir()
    if (RESULTS / "submissions").is_dir():
        shutil.copytree(RESULTS / "submissions", work / "submissions")
    shutil.copy(RESULTS / "reported.json", work / "reported.json")
    lb.regenerate(work, load_splits=lb.registry_loader(), plots=False)
    for name in (
        "leaderboard.md",
        "leaderboard.tex",
        "site/index.html",
        "site/data.js",
        "site/app.js",
        "site/style.css",
    ):
        assert (work / name).read_text() == (RESULTS / name).read_text(), (
            f"results/{name} drifted from the submissions: run `run_benchmark.py leaderboard`"
        )


def test_registry_loader_verifies_synthetic_rows_and_not_real_ones(tmp_path, synth_lpr4m, synth_movingfashion):
    """The default loader regenerates a synthetic set from the submission's size/seed."""
    write_submission(
        make_submission(
            synth_lpr4m, method="synth-run", dataset="lpr4m-synth", dataset_size="tiny", dataset_seed=0, topk=5
        ),
        tmp_path,
    )
    write_submission(
        make_submission(
            synth_movingfashion,
            method="mf-run",
            dataset="movingfashion-synth",
            dataset_size="tiny",
            dataset_seed=0,
            topk=5,
        ),
        tmp_path,
    )
    real = make_submission(synth_lpr4m, method="real-run", dataset="lpr4m", topk=5)  # real dataset name, no data root
    write_submission(real, tmp_path)
    board = lb.regenerate(tmp_path, load_splits=lb.registry_loader(), plots=False)
    status = {r.method: r.status for rows in board.tables.values() for r in rows}
    assert status == {"synth-run": "verified", "mf-run": "verified", "real-run": "unverified"}
    assert lb.registry_loader()({"name": "no-such-dataset"}) is None


# --- a leaderboard of methods (issue 38) ------------------------------------------------------


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
