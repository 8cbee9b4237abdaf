"""``tools/rerun_rows.py``: the plan of leaderboard reruns and how it recognises a row already run."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rerun_rows", REPO / "tools" / "rerun_rows.py")
rerun_rows = importlib.util.module_from_spec(_spec)
sys.modules["rerun_rows"] = rerun_rows  # dataclasses look their module up there
_spec.loader.exec_module(rerun_rows)

COMMITTED = REPO / "results" / "submissions"


def _submission(path: Path) -> dict:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as fh:
        return json.load(fh)


def _command(name: str) -> list[str]:
    return _submission(COMMITTED / name)["provenance"]["command"].split()


def test_plan_lists_each_main_row_and_its_control_once_per_seed() -> None:
    jobs = rerun_rows.plan("tiny-v2", ["lpr4m-synth", "movingfashion-synth"], [0, 1, 2], ["asymnet", "nvan"], True)
    assert len(jobs) == 2 * 2 * 3 * 2  # methods x datasets x seeds x (trained, untrained)
    assert len({j.name for j in jobs}) == len(jobs)
    asym = next(j for j in jobs if j.method == "asymnet" and not j.untrained)
    assert asym.args[asym.args.index("--rerank") + 1] == "all"  # AsymNet's MAIN_RERANK
    nvan = [j for j in jobs if j.method == "nvan"]
    assert all("--rerank" not in j.args for j in nvan)
    assert all(("--epochs" in j.args) == j.untrained for j in jobs)
    assert [j.untrained for j in jobs] == sorted(j.untrained for j in jobs)  # trained rows first


def test_a_committed_row_is_recognised_as_already_run(tmp_path: Path) -> None:
    """The committed v1 AsymNet row and its control match the plan's tiny commands (whatever their
    --results-dir); the other methods' rows are still to run."""
    (tmp_path / "submissions").mkdir()
    for name in (
        "lpr4m-synth__tiny__asymnet__rerank-all__seed0.json.gz",
        "lpr4m-synth__tiny__asymnet__rerank-all__untrained__seed0.json.gz",
    ):
        shutil.copy(COMMITTED / name, tmp_path / "submissions" / name)
    done = rerun_rows._recorded(tmp_path)
    jobs = rerun_rows.plan("tiny", ["lpr4m-synth"], [0], ["asymnet", "nvan"], True)
    todo = [j.name for j in jobs if rerun_rows._key(list(j.args)) not in done]
    assert todo == ["lpr4m-synth__nvan__seed0", "lpr4m-synth__nvan__seed0__untrained"]
    # the same plan at another seed or profile is not taken for it
    other = rerun_rows.plan("tiny-v2", ["lpr4m-synth"], [0], ["asymnet"], False)
    assert rerun_rows._key(list(other[0].args)) not in done


def test_key_ignores_where_a_run_writes_and_the_order_of_its_options() -> None:
    a = rerun_rows._key(
        "run_benchmark.py --profile tiny --seed 0 --no-leaderboard --results-dir /x --method nvan --dataset d".split()
    )
    b = rerun_rows._key(
        "run_benchmark.py run --method nvan --dataset d --profile tiny --seed 0 --num-workers 0".split()
    )
    assert a == b
    assert a != rerun_rows._key("run_benchmark.py --method nvan --dataset d --profile tiny --seed 1".split())


def _compare_protocols():
    spec = importlib.util.spec_from_file_location("compare_protocols", REPO / "tools" / "compare_protocols.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_protocols"] = module
    spec.loader.exec_module(module)
    return module


def _row(method: str, r1: float, ci: tuple[float, float], control: float, seeds: tuple[float, ...] = ()):
    from benchmark.reports.leaderboard_rows import Row

    runs = [Row("d", "p", method, "", "reproduced", "verified", values={"R1": v}, seed=i) for i, v in enumerate(seeds)]
    return Row(
        "d",
        "p",
        method,
        "",
        "reproduced",
        "verified",
        values={"R1": r1},
        cis={"R1": ci},
        control={"R1": control},
        runs=runs,
    )


def test_protocol_report_gives_tau_reversals_and_controls() -> None:
    cp = _compare_protocols()
    old = {"a": _row("a", 50, (47, 53), 5), "b": _row("b", 30, (27, 33), 5), "c": _row("c", 29, (26, 32), 5)}
    new = {
        "a": _row("a", 25, (22, 28), 5, seeds=(24, 25, 26)),  # a and b swap: separated in old
        "b": _row("b", 40, (37, 43), 5),
        "c": _row("c", 8, (4, 12), 6),  # its control lies inside its interval
    }
    text = cp.report(old, new, "tiny", "tiny-v2")
    assert "Kendall's tau over the 3 methods in both: 0.333" in text
    assert "Pairs the tiny intervals separate: 2; order reversed in tiny-v2: a / b (separated in both)" in text
    assert "| c | 29.00 [26.00, 32.00] | 8.00 [4.00, 12.00] | 1 | - | 6.00 | **no** |" in text
    assert "| a | 50.00 [47.00, 53.00] | 25.00 [22.00, 28.00] | 3 | 1.00 | 5.00 | yes |" in text
    assert "seed noise" not in text  # one method at several seeds: no order to compare


def test_seed_taus_compare_the_orders_of_two_seeds_over_the_methods_run_at_both() -> None:
    cp = _compare_protocols()
    new = {
        "a": _row("a", 0, (0, 0), 0, seeds=(30, 10, 30)),
        "b": _row("b", 0, (0, 0), 0, seeds=(20, 20, 20)),
        "c": _row("c", 0, (0, 0), 0, seeds=(10, 30)),  # no seed 2
    }
    taus = cp.seed_taus(new)
    assert {k: (round(t, 3), n) for k, (t, n) in taus.items()} == {
        (0, 1): (-1.0, 3),
        (0, 2): (1.0, 2),
        (1, 2): (-1.0, 2),
    }


def test_ablations_match_the_committed_ablation_rows(tmp_path: Path) -> None:
    (tmp_path / "submissions").mkdir()
    for name in (
        "lpr4m-synth__tiny__rice-icl+pmd+pfr-ln+ipd__seed0.json.gz",
        "lpr4m-synth__tiny__rice-icl+pmd__seed0.json.gz",
    ):
        shutil.copy(COMMITTED / name, tmp_path / "submissions" / name)
    done = rerun_rows._recorded(tmp_path)
    jobs = rerun_rows.plan("tiny", ["lpr4m-synth"], [0], ["rice"], False, ablations=True)
    assert [j.name for j in jobs if rerun_rows._key(list(j.args)) in done] == [
        "lpr4m-synth__rice+text=false__seed0",
        "lpr4m-synth__rice+pfr=false+ipd=none+text=false__seed0",
    ]
    assert len(jobs) == 1 + len(rerun_rows.ABLATIONS["rice"])


def test_cheapest_first_puts_each_control_after_its_method_and_controls_only_keeps_controls(tmp_path, capsys) -> None:
    (tmp_path / "submissions").mkdir()
    base = ["--dry-run", "--profile", "tiny-v2", "--seeds", "0", "--datasets", "lpr4m-synth"]
    base += ["--methods", "rice", "video-swin", "nvan", "--results-dir", str(tmp_path)]
    assert rerun_rows.main([*base, "--cheapest-first"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [
        "lpr4m-synth__video-swin__seed0",
        "lpr4m-synth__video-swin__seed0__untrained",
        "lpr4m-synth__nvan__seed0",
        "lpr4m-synth__nvan__seed0__untrained",
        "lpr4m-synth__rice__seed0",
        "lpr4m-synth__rice__seed0__untrained",
    ]
    assert rerun_rows.main([*base, "--controls-only"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(names) == sorted(n for n in names if n.endswith("__untrained")) and len(names) == 3


def test_an_unreadable_submission_is_one_line_naming_it(tmp_path, capsys) -> None:
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "x__seed0.json").write_text("{not json")
    rc = rerun_rows.main(["--dry-run", "--seeds", "0", "--methods", "nvan", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "x__seed0.json: not a readable submission" in err


def test_no_job_starts_once_the_tree_leaves_its_commit(tmp_path, monkeypatch, capsys) -> None:
    """The queue re-checks the checkout before every job: rows of one plan come from one commit."""
    heads = iter(["abc", "def"])
    monkeypatch.setattr(rerun_rows, "_head", lambda tree: next(heads))
    started = []
    monkeypatch.setattr(rerun_rows.subprocess, "Popen", lambda *a, **k: started.append(a) or None)
    jobs = rerun_rows.plan("tiny-v2", ["lpr4m-synth"], [0], ["nvan"], True)
    args = rerun_rows.argparse.Namespace(log_dir=tmp_path, jobs=1, tree=tmp_path, results_dir=tmp_path)
    assert rerun_rows.run_queue(list(jobs), args, "def") == 1
    assert started == [] and "no longer a clean checkout of def" in capsys.readouterr().out


def test_the_v2_table_in_docs_quotes_the_committed_submissions() -> None:
    """docs/protocol-v2.md's tiny-v2 columns are the committed rows' recorded figures: per method, the
    mean R1 over its trained seeds, the number of seeds, their sample sd and the mean of its
    untrained controls; a one-seed row's interval is its recorded one (a pooled row's comes from
    the two-level bootstrap of the leaderboard, not recorded in any one file)."""
    import re
    import statistics

    text = (REPO / "docs" / "protocol-v2.md").read_text()
    rows = re.findall(
        r"^\| ([a-z-]+) \| [^|]+ \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \| (\d) \| ([\d.]+|-) \| ([\d.]+) \|", text, re.M
    )
    assert len(rows) == 10
    names = sorted(COMMITTED.glob("lpr4m-synth__tiny-v2__*"))

    def recorded(path: Path) -> dict:
        return _submission(path)["metrics"]["overall"]["R1"]

    for method, r1, lo, hi, seeds, sd, control in rows:
        mine = [n for n in names if n.name.split("__")[2].split("-")[0] == method.split("-")[0]]
        trained = [recorded(n) for n in mine if "untrained" not in n.name]
        untrained = [recorded(n)["value"] for n in mine if "untrained" in n.name]
        assert len(trained) == len(untrained) == int(seeds), method
        values = [t["value"] for t in trained]
        assert f"{statistics.mean(values):.2f}" == r1, method
        assert sd == ("-" if len(values) == 1 else f"{statistics.stdev(values):.2f}"), method
        assert f"{statistics.mean(untrained):.2f}" == control, method
        if len(values) == 1:
            assert (f"{trained[0]['ci95'][0]:.2f}", f"{trained[0]['ci95'][1]:.2f}") == (lo, hi), method


def test_hostile_submissions_are_refused_or_ignored_without_a_traceback(tmp_path, capsys) -> None:
    """A submission is data from anyone: a non-object provenance matches no plan; a file past the
    reader's depth limit is one line naming it (the record's guarded reader, benchmark.core.safe_json)."""
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "odd__seed0.json").write_text(json.dumps({"provenance": "run_benchmark.py --seed 0"}))
    assert rerun_rows._recorded(tmp_path) == set()
    (tmp_path / "submissions" / "deep__seed0.json").write_text("[" * 10_000 + "]" * 10_000)
    rc = rerun_rows.main(["--dry-run", "--seeds", "0", "--methods", "nvan", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "deep__seed0.json: not a readable submission" in err
