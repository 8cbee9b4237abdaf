"""An independent check of the board: every committed submission's rankings, exported as TREC
files (benchmark.record.trec), recomputed with ranx, agree with the harness's re-scoring to 1e-9;
and the harness's paired test agrees with ranx's Fisher randomization test.

ranx reads the files itself (``Qrels.from_file`` / ``Run.from_file``, kind ``trec``): R@k is its
``hit_rate@k``; the harness's mAP@K (AP over the saved depth K, divided by the query's number of
distinct ground truths, found or not) is its ``map@K``, whose denominator is the qrels' count of
relevant documents per query, the same number. The ground truth is the synthetic sets regenerated
as the leaderboard's drift test does (``registry_loader``; cached for the session).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.evaluation.metrics import per_query_values
from benchmark.evaluation.scoring import SplitIndex
from benchmark.evaluation.significance import paired_tests
from benchmark.record import trec
from benchmark.record.rescore import rescore
from benchmark.record.submission import load_submission
from benchmark.reports import leaderboard as lb

ranx = pytest.importorskip("ranx")

SUBMISSIONS = Path(__file__).resolve().parents[1] / "results" / "submissions"
KS = (1, 5, 10)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{submission path: (per-query harness values, per-query ranx values)} for every committed file."""
    out = tmp_path_factory.mktemp("trec")
    load = lb.registry_loader()
    cache: dict[tuple, tuple] = {}
    result = {}
    paths = sorted(p for p in SUBMISSIONS.iterdir() if p.name.endswith((".json", ".json.gz")))
    assert paths, "no committed submissions"
    for path in paths:
        sub = load_submission(path)
        key = (sub["dataset"]["name"], sub["dataset"]["annotation_checksum"])
        if key not in cache:
            splits = load(sub["dataset"])
            cache[key] = (splits, SplitIndex.from_splits(splits))
        splits, index = cache[key]
        report = rescore(path, splits, loaded=sub)
        depth = report.topk
        harness = per_query_values(report.gt_rank, KS, depth, full_map=False)
        qrels_file, run_file = trec.export(sub, path, index, out)
        qrels = ranx.Qrels.from_file(str(qrels_file), kind="trec")
        run = ranx.Run.from_file(str(run_file), kind="trec")
        metrics = [f"hit_rate@{k}" for k in KS] + [f"map@{depth}"]
        per_query = ranx.evaluate(qrels, run, metrics, return_mean=False, make_comparable=True)
        # ranx orders queries as the qrels do; the harness as the split does
        order = {q: i for i, q in enumerate(qrels.keys())}
        pos = [order[q] for q in index.query_ids]
        ours = {f"hit_rate@{k}": harness[f"R{k}"] / 100.0 for k in KS} | {
            f"map@{depth}": harness[f"mAP@{depth}"] / 100.0
        }
        theirs = {m: np.asarray(per_query[m], dtype=np.float64)[pos] for m in metrics}
        result[path] = (ours, theirs, report)
    return result


def test_every_committed_submission_recomputes_with_ranx_to_1e_9(exported):
    for path, (ours, theirs, report) in exported.items():
        for metric, values in ours.items():
            assert np.abs(values - theirs[metric]).max() <= 1e-9, (path.name, metric)
            shown = report.metrics["overall"][
                "R" + metric.split("@")[1] if metric.startswith("hit") else f"mAP@{report.topk}"
            ]
            assert abs(100.0 * theirs[metric].mean() - shown["value"]) <= 1e-9, (path.name, metric)


def test_the_paired_test_agrees_with_ranx_fisher_randomization(exported):
    """The same sign-flip null, two Monte-Carlo samplers: p-values agree within sampling error.
    Two pairs: rows far apart (both p < 0.001) and rows close together (p well above 0.05)."""
    from ranx.statistical_tests import fisher_randomization_test

    by_name = {p.name: v for p, v in exported.items()}
    pairs = [
        ("lpr4m-synth__tiny__rice-icl+pmd+pfr-ln+ipd+text__seed0.json.gz", "lpr4m-synth__tiny__nvan__seed0.json.gz"),
        ("lpr4m-synth__tiny__mgh__seed0.json.gz", "lpr4m-synth__tiny__mgh-windows-1_2_3__seed0.json.gz"),
    ]
    for a, b in pairs:
        (oa, ta, ra), (ob, tb, _) = by_name[a], by_name[b]
        m = f"map@{ra.topk}"
        ours = paired_tests(
            {"R1": 100 * oa["hit_rate@1"], "mAP": 100 * oa[m]},
            {"R1": 100 * ob["hit_rate@1"], "mAP": 100 * ob[m]},
            resamples=10_000,
            seed=0,
        )
        for name, metric in (("R1", "hit_rate@1"), ("mAP", m)):
            p_ranx, _ = fisher_randomization_test(ta[metric], tb[metric], 10_000, 0.05, 42)
            p_ours = ours[name].p_value
            sd = np.sqrt(max(p_ours * (1 - p_ours), 1e-4) / 10_000)
            assert abs(p_ours - p_ranx) <= 5 * sd + 2e-4, (a, b, name, p_ours, p_ranx)
            assert (p_ours < 0.05) == (p_ranx < 0.05), (a, b, name, p_ours, p_ranx)
