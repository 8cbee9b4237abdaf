"""benchmark.evaluation.metrics: R@k / mAP against sklearn and a plain per-query reference; CIs; breakdowns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from benchmark.evaluation.metrics import (
    average_precision,
    bootstrap_ci,
    compute_metrics,
    map_upper_bound,
    ranks_from_lists,
    recall_curve,
)
from benchmark.evaluation.retrieval import GT_ABSENT, pack_ground_truth, rank


@settings(max_examples=120, deadline=None)
@given(
    nq=st.integers(1, 15),
    ng=st.integers(3, 12),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    levels=st.integers(2, 6),
)
def test_recall_matches_sklearn_top_k_accuracy(nq, ng, k, seed, levels):
    """Single ground truth, one global gallery (>= 3 items: sklearn treats 2 as binary), many ties.

    sklearn ranks ties with the *higher* column first (reversed stable argsort), our rule
    puts the lower gallery position first: scoring sklearn on reversed columns makes the
    two tie rules identical, so the numbers must agree exactly.
    """
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(nq, 1)).astype(np.float32)
    g = rng.integers(-levels, levels + 1, size=(ng, 1)).astype(np.float32)
    y = rng.integers(0, ng, size=nq)
    k = min(k, ng - 1)  # k >= n_classes: sklearn warns and scores 100
    r = rank(torch.from_numpy(q), torch.from_numpy(g), k=k, gt_index=torch.from_numpy(y[:, None]))
    ours = compute_metrics(r.gt_rank, ks=(k,), bootstrap=0)["overall"][f"R{k}"]["value"]
    scores = (q @ g.T)[:, ::-1]
    theirs = 100.0 * top_k_accuracy_score(ng - 1 - y, scores, k=k, labels=np.arange(ng))
    assert ours == pytest.approx(theirs, abs=1e-9)


def reference_metrics(gts, groups_q, groups_g, scores, valid, ks, cutoff):
    """Plain per-query loop: the definitions in benchmark/evaluation/metrics.py, written out."""
    hits = {k: [] for k in ks}
    aps, aps_k = [], []
    for i in range(len(gts)):
        if valid[i]:
            cand = [j for j in range(len(groups_g)) if groups_g[j] == groups_q[i]]
            order = sorted(cand, key=lambda j: (-scores[i][j], j))
        else:
            order = []  # no prediction
        gt = set(gts[i])  # distinct ground truths, absent ones included (they count)
        for k in ks:
            hits[k].append(100.0 if any(j in gt for j in order[:k]) else 0.0)
        found, s, s_k = 0, 0.0, 0.0
        for pos, j in enumerate(order, start=1):
            if j in gt:
                found += 1
                s += found / pos
                if pos <= cutoff:
                    s_k += found / pos
        aps.append(100.0 * s / len(gt))
        aps_k.append(100.0 * s_k / len(gt))
    out = {f"R{k}": float(np.mean(hits[k])) for k in ks}
    out["mAP"] = float(np.mean(aps))
    out[f"mAP@{cutoff}"] = float(np.mean(aps_k))
    return out


@st.composite
def grouped_problems(draw):
    nq = draw(st.integers(1, 14))
    ng = draw(st.integers(1, 14))
    n_groups = draw(st.integers(1, 4))
    q = draw(st.lists(st.integers(-3, 3), min_size=nq, max_size=nq))
    g = draw(st.lists(st.integers(-3, 3), min_size=ng, max_size=ng))
    qg = draw(st.lists(st.integers(0, n_groups - 1), min_size=nq, max_size=nq))
    gg = draw(st.lists(st.integers(0, n_groups - 1), min_size=ng, max_size=ng))
    # several ground truths: gallery positions (maybe in another group) or absent ids
    gts = [
        draw(st.lists(st.one_of(st.integers(0, ng - 1), st.integers(1000, 1003)), min_size=1, max_size=4, unique=True))
        for _ in range(nq)
    ]
    valid = draw(st.lists(st.booleans(), min_size=nq, max_size=nq))
    cutoff = draw(st.integers(1, 6))
    return q, g, qg, gg, gts, valid, cutoff


@settings(max_examples=150, deadline=None)
@given(grouped_problems())
def test_metrics_match_plain_reference(p):
    q, g, qg, gg, gts, valid, cutoff = p
    ks = (1, 3, 5, 10)
    qt = torch.tensor(q, dtype=torch.float32)[:, None]
    gt_t = torch.tensor(g, dtype=torch.float32)[:, None]
    packed = pack_ground_truth([[j if j < 1000 else GT_ABSENT for j in row] for row in gts])
    r = rank(qt, gt_t, qg, gg, k=10, gt_index=packed, query_valid=torch.tensor(valid))
    m = compute_metrics(r.gt_rank, ks=ks, map_cutoff=cutoff, bootstrap=0)["overall"]
    scores = [[qi * gj for gj in g] for qi in q]
    ref = reference_metrics(gts, qg, gg, scores, valid, ks, cutoff)
    for name, value in ref.items():
        assert m[name]["value"] == pytest.approx(value, abs=1e-9), name
    # the same numbers from the top-10 id lists (what a submission stores) for R@k and mAP@K
    lists = [[j for j in row if j >= 0] for row in r.index.tolist()]
    truncated = ranks_from_lists(lists, gts)
    m2 = compute_metrics(truncated, ks=ks, map_cutoff=cutoff, full_map=False, bootstrap=0)["overall"]
    for name in [f"R{k}" for k in ks] + [f"mAP@{cutoff}"]:
        assert m2[name]["value"] == pytest.approx(ref[name], abs=1e-9), name
    # and the full mAP lies within the bounds the top-10 lists imply
    assert m2[f"mAP@{cutoff}"]["value"] <= ref["mAP"] + 1e-9
    lo = compute_metrics(truncated, ks=(1,), map_cutoff=10, full_map=False, bootstrap=0)["overall"]["mAP@10"]["value"]
    assert lo - 1e-9 <= ref["mAP"] <= map_upper_bound(truncated, 10) + 1e-9


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 25), seed=st.integers(0, 10_000))
def test_full_ap_equals_sklearn_average_precision_without_ties(n, seed):
    """With every ground truth in the ranking, AP is sklearn's average_precision_score."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n).astype(float)  # distinct: no ties
    labels = np.zeros(n, dtype=int)
    labels[rng.choice(n, size=rng.integers(1, n + 1), replace=False)] = 1
    order = np.argsort(-scores)
    ranks = np.flatnonzero(labels[order]) + 1
    ours = average_precision(ranks[None, :])[0]
    assert ours == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_hand_computed_example():
    # q0: gts at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; q1: one gt at rank 2 -> 1/2;
    # q2: missing clip (two gts, never ranked) -> 0; q3: gt ranked 12 -> R@10 miss, AP 1/12
    gt_rank = np.array([[1, 3], [2, -1], [0, 0], [12, -1]])
    m = compute_metrics(gt_rank, ks=(1, 3, 5, 10), map_cutoff=10, bootstrap=0)["overall"]
    assert m["R1"]["value"] == 25.0
    assert m["R3"]["value"] == 50.0
    assert m["R10"]["value"] == 50.0
    assert m["mAP"]["value"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5 + 0 + 1 / 12) / 4)
    assert m["mAP@10"]["value"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 4)
    assert recall_curve(gt_rank, 12).tolist()[:3] == [25.0, 50.0, 50.0]
    assert recall_curve(gt_rank, 12)[-1] == 75.0


def test_bootstrap_is_seeded_contains_the_mean_and_has_binomial_width():
    rng = np.random.default_rng(1)
    n = 4000
    hits = (rng.random(n) < 0.3).astype(float) * 100
    ci1 = bootstrap_ci({"R1": hits}, 1000, seed=7)["R1"]
    ci2 = bootstrap_ci({"R1": hits}, 1000, seed=7)["R1"]
    ci3 = bootstrap_ci({"R1": hits}, 1000, seed=8)["R1"]
    assert ci1 == ci2 and ci1 != ci3
    mean = hits.mean()
    assert ci1[0] < mean < ci1[1]
    p = mean / 100
    half_width = 1.96 * np.sqrt(p * (1 - p) / n) * 100  # normal approximation
    assert (ci1[1] - ci1[0]) / 2 == pytest.approx(half_width, rel=0.12)
    # a constant vector has a degenerate interval
    assert bootstrap_ci({"x": np.full(50, 40.0)}, 200, seed=0)["x"] == pytest.approx((40.0, 40.0))


def test_breakdowns_cover_every_query_with_unknown_bucket():
    gt_rank = np.array([[1], [2], [0], [1], [5]])
    attrs = [
        {"scale": "small", "category": "shoe"},
        {"scale": "small"},
        {"scale": "large", "category": "shoe"},
        {"scale": "large", "category": ""},
        {"scale": "small", "category": "dress"},
    ]
    m = compute_metrics(gt_rank, ks=(1, 5), attributes=attrs, bootstrap=50, seed=0)
    b = m["breakdowns"]
    assert set(b) == {"scale", "category"}
    assert {v: e["n"] for v, e in b["scale"].items()} == {"small": 3, "large": 2}
    assert {v: e["n"] for v, e in b["category"].items()} == {"shoe": 2, "unknown": 2, "dress": 1}
    assert b["scale"]["small"]["R1"]["value"] == pytest.approx(100 / 3)
    assert b["scale"]["large"]["R1"]["value"] == 50.0
    assert b["category"]["dress"]["R5"]["value"] == 100.0
    assert b["scale"]["small"]["R1"]["ci95"] is not None
    m = compute_metrics(gt_rank, ks=(1,), attributes=attrs, bootstrap=50, seed=0, breakdown_ci=False)
    assert m["breakdowns"]["scale"]["small"]["R1"]["ci95"] is None
    assert m["overall"]["R1"]["ci95"] is not None


def test_ranks_from_lists_and_validation():
    out = ranks_from_lists([["a", "b", "c"], [], ["x"]], [["c", "z", "c"], ["a"], ["x"]])
    assert out.tolist() == [[3, 0], [0, -1], [1, -1]]
    with pytest.raises(ValueError, match="ranked lists"):
        ranks_from_lists([["a"]], [])
    with pytest.raises(ValueError, match="gt_rank"):
        compute_metrics(np.array([1, 2]))
    with pytest.raises(ValueError, match="attributes"):
        compute_metrics(np.array([[1]]), attributes=[{}, {}])


def test_breakdown_cis_share_the_overall_resamples():
    rng = np.random.default_rng(4)
    gt_rank = rng.integers(0, 8, size=(300, 2))
    attrs = [{"all": "same", "half": "a" if i % 2 else "b"} for i in range(300)]
    m = compute_metrics(gt_rank, ks=(1, 5), map_cutoff=5, attributes=attrs, bootstrap=300, seed=9)
    # a bucket holding every query is resampled exactly like the whole split
    for name, entry in m["overall"].items():
        assert m["breakdowns"]["all"]["same"][name]["ci95"] == pytest.approx(entry["ci95"], abs=1e-9)
        assert m["breakdowns"]["all"]["same"][name]["value"] == pytest.approx(entry["value"])
    # half the data: a wider interval around its own mean
    a = m["breakdowns"]["half"]["a"]["R5"]
    assert a["ci95"][0] < a["value"] < a["ci95"][1]
    assert a["ci95"][1] - a["ci95"][0] > m["overall"]["R5"]["ci95"][1] - m["overall"]["R5"]["ci95"][0]
