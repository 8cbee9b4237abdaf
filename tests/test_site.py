"""Split and marked tables, the narrow terminal table, the plots, the static site and the browse pages."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark.evaluation import significance as sig
from benchmark.record.submission import write_submission
from benchmark.reports import leaderboard as lb
from benchmark.reports.browse import filter_counts, write_browser
from tests.evalkit import make_splits, make_submission

REPO = Path(__file__).resolve().parent.parent


def _full(sub: dict) -> dict:
    """A run that completed its profile's epochs (never flagged partial)."""
    training = sub["provenance"].get("training")
    if training is not None:
        training["epochs_completed"] = sub["profile"]["train"]["epochs"]
    return sub


@pytest.fixture(scope="module")
def toy():
    return make_splits(seed=11, name="toy", n_groups=6, queries_per_group=20)


@pytest.fixture
def board(tmp_path, toy):
    """good > twin (= good's rankings, another name: not different) > weak; an untrained control; a reported row."""
    good = _full(make_submission(toy, method="good", noise=0.3, seed=0))
    twin = _full(make_submission(toy, method="twin", noise=0.3, seed=0))
    weak = _full(make_submission(toy, method="weak", noise=4.0, seed=3))
    weak["provenance"]["seed"] = 0
    control = make_submission(toy, method="good", noise=4.0, seed=5)
    control["provenance"].pop("training")
    control["provenance"]["seed"] = 0
    good["provenance"]["inference"] = {
        "queries": 120,
        "gallery": 30,
        "pairs_scored": 0,
        "encode_query_s": 0.5,
        "encode_gallery_s": 0.2,
        "rank_s": 0.1,
        "queries_per_s": 200.0,
        "feature_cache": "miss",
        "threads": 1,
    }
    good["provenance"]["command"] = "run_benchmark.py --method good --dataset toy"
    for sub in (good, twin, weak, control):
        write_submission(sub, tmp_path)
    (tmp_path / "reported.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "rows": [
                    {
                        "method": "paper-method",
                        "variant": "",
                        "dataset": "toy",
                        "profile": "tiny",
                        "metrics": {"R1": 12.5, "R20": 40.0},
                        "protocol": "its own",
                        "source": "a paper (2020)",
                        "date": "2020",
                    }
                ],
            }
        )
    )
    return tmp_path, lb.regenerate(tmp_path, load_splits=lambda ds: toy if ds["name"] == "toy" else None)


def _section(md: str, title: str) -> str:
    start = md.index(f"\n**{title}")  # a table's title line (the header's bullets start with "- ")
    rest = md[start + 3 :]
    end = rest.find("\n**")
    return rest if end < 0 else rest[:end]


def test_tables_are_split_by_purpose_and_marked_by_the_paired_test(board):
    root, b = board
    rows = b.tables[("toy", "tiny")]
    ranked = [r for r in rows if r.source == "reproduced" and not r.analysis]
    assert [r.method for r in ranked][2] == "weak" and {r.method for r in ranked[:2]} == {"good", "twin"}
    pairs = b.pairs[("toy", "tiny")]
    # the pair (good, twin) is the same rankings: difference 0, p = 1; the next pair is far apart
    assert pairs[0]["R1"].diff == 0.0 and pairs[0]["R1"].p_value == 1.0
    assert pairs[1]["R1"].significant and pairs[1]["R1"].diff > 0
    # the pair values are the paired test of the rows' per-query values
    direct = sig.paired_tests(ranked[1].per_query, ranked[2].per_query)
    assert pairs[1]["R1"].p_value == direct["R1"].p_value and pairs[1]["mAP"].ci == direct["mAP"].ci
    md = (root / "leaderboard.md").read_text()
    ranked_md = _section(md, "Ranked")
    lines = [ln for ln in ranked_md.splitlines() if ln.startswith("| 1 ") or ln.startswith("| 2 ")]
    assert len(lines) == 2 and "†" in lines[0] and "†" not in lines[1]  # only the row not separated from the next
    assert "good, untrained" not in ranked_md and "paper-method" not in ranked_md
    assert "good, untrained" in _section(md, "Analysis (not ranked)") and "untrained control" in md
    reported = _section(md, "Reported")
    assert "paper-method" in reported and "40.00" in reported and "R20" in reported and "reported [" in reported
    paired = _section(md, "Paired comparisons")
    t = pairs[1]["R1"]
    assert "| 2 vs 3 " in paired and f"{t.diff:+.2f} [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}]" in paired
    assert sig.METHOD in md
    details = _section(md, "Run details")
    assert "Queries/s" in details
    qps = {ln.split("|")[2].strip(): ln.split("|")[5].strip() for ln in details.splitlines() if ln.startswith("| ")}
    assert qps["good"] == "200" and qps["weak"] == "–"  # recorded by the run / not recorded
    tex = (root / "leaderboard.tex").read_text()
    best = _section(md, "Each method against the best")
    t = b.vs_best[("toy", "tiny")][2]["R1"]
    assert (
        "| 3 " in best and f"{t.diff:+.2f} [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}]" in best and "queries only (1 seed)" in best
    )
    assert tex.count("\\begin{table}") == 6 and "\\textsuperscript{\\dag}" in tex and "$\\Delta$R1" in tex


def test_terminal_table_fits_80_columns_without_cutting_numbers(board):
    from rich.console import Console

    from benchmark.reports.publish import rich_tables

    _, b = board
    buf = io.StringIO()
    con = Console(file=buf, width=80, color_system=None)
    for t in rich_tables(b):
        con.print(t)
    text = buf.getvalue()
    assert max(len(ln) for ln in text.splitlines()) <= 80 and "…" not in text
    good = next(r for r in b.tables[("toy", "tiny")] if r.label == "good")
    assert lb.fmt_value(good, "R1") in text and "analysis" in text


def test_compare_any_two_rows(board):
    from benchmark.record.submission import SubmissionError
    from benchmark.reports.terminal_tables import compare_lines

    _, b = board
    lines = compare_lines(b, "toy__tiny__good__seed0.json", "weak")
    good, weak = (next(r for r in b.tables[("toy", "tiny")] if r.label == n) for n in ("good", "weak"))
    expect = sig.compare_rows(good, weak)
    assert lines[1] == expect["R1"].describe() and lines[2] == expect["mAP"].describe()
    with pytest.raises(SubmissionError, match="no rows match"):
        compare_lines(b, "nobody", "weak")


def test_plots_put_analysis_rows_in_their_own_figure(board):
    from PIL import Image

    root, _ = board
    main, analysis = root / "plots" / "toy__tiny.png", root / "plots" / "toy__tiny__analysis.png"
    width, height = Image.open(main).size
    assert 400 < width <= 1100 and height >= 400 and analysis.is_file()  # legend outside the axes, cropped to fit
    md = (root / "leaderboard.md").read_text()
    assert "[analysis rows](plots/toy__tiny__analysis.png)" in md


def _site_data(root: Path) -> dict:
    text = (root / "site" / "data.js").read_text()
    assert text.startswith("window.LPR_DATA = ") and text.endswith(";\n")
    return json.loads(text[len("window.LPR_DATA = ") : -2])


def test_site_holds_the_rows_pairs_hits_and_provenance_and_loads_nothing_remote(board, toy):
    root, b = board
    data = _site_data(root)
    (table,) = data["tables"]
    kinds = [r["kind"] for r in table["rows"]]
    assert kinds == ["ranked"] * 3 + ["analysis", "reported"]
    good = table["rows"][kinds.index("ranked")]
    row = next(r for r in b.tables[("toy", "tiny")] if r.label == good["label"])
    assert len(good["hits"]) == len(toy.queries) and good["hits"].count("1") == round(
        row.values["R1"] * len(toy.queries) / 100
    )
    assert good["provenance"]["file"] == row.path and good["provenance"]["packages"]
    assert good["provenance"]["command"] == "run_benchmark.py --method good --dataset toy"
    assert good["provenance"]["reproduce"] == f"run_benchmark.py reproduce results/{row.path}"
    assert good["provenance"]["inference"]["queries_per_s"] == 200.0
    assert set(good["breakdowns"]) == set(row.breakdowns) and good["curve"][0] == round(row.values["R1"], 2)
    shown, test = table["pairs"][1]["R1"], b.pairs[("toy", "tiny")][1]["R1"]
    assert shown["p"] == pytest.approx(test.p_value, rel=1e-3) and shown["n"] == test.n
    # rounded, so the last bits a thread count moves in the bootstrap never reach the committed file
    assert shown["diff"] == round(test.diff, 4) and shown["ci"] == [round(c, 4) for c in test.ci]
    assert shown["p"] == float(f"{test.p_value:.4g}")
    for name in ("index.html", "app.js", "style.css", "data.js"):
        text = (root / "site" / name).read_text()
        assert not re.search(
            r"""(src|href)\s*=\s*["']?https?:|@import|url\(\s*["']?https?:|fetch\(|XMLHttpRequest""", text
        ), name
    assert sum(p.stat().st_size for p in (root / "site").iterdir()) < 200_000


def test_committed_site_is_small_and_complete():
    site = REPO / "results" / "site"
    files = {p.name: p.stat().st_size for p in site.iterdir()}
    assert set(files) == {"index.html", "data.js", "app.js", "style.css"} and sum(files.values()) < 3_000_000


@pytest.mark.parametrize("against", [False, True])
def test_browse_pages_show_rescored_hits_and_filter_counts(tmp_path, synth_lpr4m, against):
    subs = []
    for method, noise in (("a-run", 0.5), ("b-run", 2.0)):
        sub = _full(
            make_submission(
                synth_lpr4m,
                method=method,
                noise=noise,
                dataset="lpr4m-synth",
                dataset_size="tiny",
                dataset_seed=0,
                topk=5,
            )
        )
        subs.append(write_submission(sub, tmp_path / "results"))
    out = tmp_path / "browse"
    index = write_browser(subs[0], out, against=subs[1] if against else None, splits=synth_lpr4m)
    text = (out / "data.js").read_text()
    data = json.loads(text[len("window.LPR_BROWSE = ") : -2])
    a = json.loads(subs[0].read_text())
    assert index == out / "index.html" and data["shown"] == len(synth_lpr4m.queries)
    hits = [q["a"] for q in data["queries"]]
    assert 100.0 * np.mean(hits) == pytest.approx(a["metrics"]["overall"]["R1"]["value"])
    for q, split_q in zip(data["queries"], synth_lpr4m.queries):
        assert [t["hit"] for t in q["top"]] == [t["id"] in split_q.gt_ids for t in q["top"]]
        assert q["a"] == bool(q["top"]) and q["top"][0]["hit"] or not q["a"]
        for name in q["frames"] + [t["thumb"] for t in q["top"] + q["gt"] if t["thumb"]]:
            assert (out / name).is_file()
    assert any(q["frames"] for q in data["queries"])
    counts = filter_counts(data)
    if against:
        b = json.loads(subs[1].read_text())
        b_hits = [
            qid_top[1][0] in q.gt_ids if qid_top[1] else False for qid_top, q in zip(b["rankings"], synth_lpr4m.queries)
        ]
        assert counts["a-right-b-wrong"] == sum(x and not y for x, y in zip(hits, b_hits))
        assert [[t["id"] for t in q["top_b"]] for q in data["queries"]] == [ids[:5] for _, ids in b["rankings"]]
        assert data["b"] == "b-run"
    else:
        assert "a-right-b-wrong" not in counts and data["b"] is None
