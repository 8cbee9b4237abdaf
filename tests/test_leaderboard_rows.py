"""How the leaderboard builds and labels a row: seeds pooled, a re-ranking stage, training time across
a resume, analysis rows, untrained controls and the gain over them, another recipe."""

from __future__ import annotations

import copy

import pytest

from benchmark.record.submission import write_submission
from benchmark.reports import leaderboard as lb
from tests.evalkit import loader_for, make_submission


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
