"""benchmark.evaluation.retrieval: grouped ranking, stable ties, exact ground-truth ranks, re-ranking."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.evaluation.retrieval import GT_ABSENT, encode_groups, l2_normalize, pack_ground_truth, rank


def reference(q, g, qg, gg, k, gts, valid=None, score=None):
    """Per-query Python reference: score every gallery item of the query's group, sort by
    (-score, gallery index), take k; full-list rank of each ground truth (0 if absent)."""
    score = score or (lambda i, j: float(q[i] @ g[j]))
    tops, ranks = [], []
    for i in range(len(qg)):
        if valid is not None and not valid[i]:
            tops.append([-1] * k)
            ranks.append([0] * len(gts[i]))
            continue
        cand = [j for j in range(len(gg)) if gg[j] == qg[i]]
        order = [j for _, j in sorted(((score(i, j), j) for j in cand), key=lambda t: (-t[0], t[1]))]
        tops.append(order[:k] + [-1] * (k - len(order[:k])))
        ranks.append([order.index(j) + 1 if j >= 0 and j in order else 0 for j in gts[i]])
    return tops, ranks


@st.composite
def problems(draw):
    """Small integer embeddings (exact dot products, many ties), random groups and gts."""
    nq = draw(st.integers(1, 12))
    ng = draw(st.integers(1, 16))
    d = draw(st.integers(1, 3))
    n_groups = draw(st.integers(1, 4))
    vals = st.integers(-2, 2)
    q = torch.tensor(
        draw(st.lists(st.lists(vals, min_size=d, max_size=d), min_size=nq, max_size=nq)), dtype=torch.float32
    )
    g = torch.tensor(
        draw(st.lists(st.lists(vals, min_size=d, max_size=d), min_size=ng, max_size=ng)), dtype=torch.float32
    )
    qg = draw(st.lists(st.integers(0, n_groups - 1), min_size=nq, max_size=nq))
    gg = draw(st.lists(st.integers(0, n_groups - 1), min_size=ng, max_size=ng))
    gts = [
        draw(st.lists(st.one_of(st.integers(0, ng - 1), st.just(GT_ABSENT)), min_size=1, max_size=3, unique=True))
        for _ in range(nq)
    ]
    valid = draw(st.lists(st.booleans(), min_size=nq, max_size=nq))
    k = draw(st.integers(1, 8))
    chunk = draw(st.sampled_from([1, 5, 1 << 20]))
    return q, g, qg, gg, gts, valid, k, chunk


@settings(max_examples=150, deadline=None)
@given(problems())
def test_rank_matches_per_query_reference(p):
    q, g, qg, gg, gts, valid, k, chunk = p
    r = rank(q, g, qg, gg, k=k, gt_index=pack_ground_truth(gts), query_valid=torch.tensor(valid), max_elements=chunk)
    tops, ranks = reference(q, g, qg, gg, k, gts, valid)
    assert r.index.tolist() == tops
    for i, gi in enumerate(gts):
        assert r.gt_rank[i, : len(gi)].tolist() == ranks[i]
        assert (r.gt_rank[i, len(gi) :] == -1).all()
    assert r.group_size.tolist() == [sum(1 for x in gg if x == c) for c in qg]
    # returned scores are the dot products of the returned items, -inf padding
    for i in range(len(qg)):
        for pos, j in enumerate(r.index[i].tolist()):
            expected = float(q[i] @ g[j]) if j >= 0 else float("-inf")
            assert r.score[i, pos].item() == expected


def test_ties_broken_by_gallery_order_even_across_the_cut():
    # six identical gallery items: every score ties; k=3 must return gallery positions 0,1,2
    g = torch.ones(6, 2)
    q = torch.ones(2, 2)
    r = rank(q, g, k=3, gt_index=pack_ground_truth([[5], [2]]))
    assert r.index.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert r.gt_rank[:, 0].tolist() == [6, 3]


def test_global_gallery_and_group_smaller_than_k():
    q = l2_normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    g = l2_normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]]))
    r = rank(q, g, ["a", "b"], ["a", "b", "a"], k=4, gt_index=pack_ground_truth([[2], [1]]))
    assert r.index.tolist() == [[0, 2, -1, -1], [1, -1, -1, -1]]
    assert r.gt_rank[:, 0].tolist() == [2, 1]
    assert torch.isinf(r.score[0, 2:]).all()
    r = rank(q, g, k=2)  # one global gallery
    assert r.index.tolist() == [[0, 1], [1, 0]]


def test_query_group_without_gallery_and_gt_in_other_group():
    q = torch.eye(2)
    g = torch.eye(2)
    r = rank(q, g, ["x", "nobody"], ["x", "y"], k=2, gt_index=pack_ground_truth([[1, GT_ABSENT], [1]]))
    assert r.index.tolist() == [[0, -1], [-1, -1]]
    # gt 1 lives in group y: it cannot be found from group x (rank 0), nor can an absent id
    assert r.gt_rank.tolist() == [[0, 0], [0, -1]]
    assert r.group_size.tolist() == [1, 0]


def test_pack_ground_truth_dedupes_indices_but_keeps_each_absent_id():
    packed = pack_ground_truth([[3, 3, GT_ABSENT, GT_ABSENT], [1]])
    assert packed.tolist() == [[3, GT_ABSENT, GT_ABSENT], [1, -1, -1]]
    with pytest.raises(ValueError, match="GT_ABSENT"):
        pack_ground_truth([[-1]])


@settings(max_examples=80, deadline=None)
@given(problems(), st.integers(0, 10_000))
def test_rerank_all_uses_the_pair_scores_for_every_pair(p, salt):
    q, g, qg, gg, gts, valid, k, chunk = p

    def pair_score(i: int, j: int) -> float:  # an arbitrary deterministic second stage with ties
        return float((i * 7 + j * 3 + salt) % 5)

    calls = []

    def score_pairs(qi, gi):
        calls.append(len(qi))
        return torch.tensor([pair_score(a, b) for a, b in zip(qi.tolist(), gi.tolist())])

    r = rank(
        q,
        g,
        qg,
        gg,
        k=k,
        gt_index=pack_ground_truth(gts),
        query_valid=torch.tensor(valid),
        score_pairs=score_pairs,
        mode="all",
        pair_batch=7,
        max_elements=chunk,
    )
    tops, ranks = reference(q, g, qg, gg, k, gts, valid, score=pair_score)
    assert r.index.tolist() == tops
    for i, gi in enumerate(gts):
        assert r.gt_rank[i, : len(gi)].tolist() == ranks[i]
    expected_pairs = sum(sum(1 for x in gg if x == qg[i]) for i in range(len(qg)) if valid[i])
    assert r.pairs_scored == expected_pairs == sum(calls)
    assert all(c <= 7 for c in calls)


@settings(max_examples=80, deadline=None)
@given(problems(), st.integers(1, 6), st.integers(0, 10_000))
def test_rerank_topk_reorders_the_head_and_keeps_the_tail(p, rtop, salt):
    q, g, qg, gg, gts, valid, k, chunk = p

    def pair_score(i: int, j: int) -> float:
        return float((i * 5 + j * 11 + salt) % 4)

    def score_pairs(qi, gi):
        return torch.tensor([pair_score(a, b) for a, b in zip(qi.tolist(), gi.tolist())])

    r = rank(
        q,
        g,
        qg,
        gg,
        k=k,
        gt_index=pack_ground_truth(gts),
        query_valid=torch.tensor(valid),
        score_pairs=score_pairs,
        mode="topk",
        rerank_topk=rtop,
        max_elements=chunk,
    )
    # reference: full first-stage order; head re-sorted by (-pair score, gallery index)
    full, _ = reference(q, g, qg, gg, len(gg), gts, valid)
    pairs = 0
    for i in range(len(qg)):
        order = [j for j in full[i] if j >= 0]
        head = sorted(order[:rtop], key=lambda j: (-pair_score(i, j), j))
        pairs += len(head)
        final = head + order[rtop:]
        assert r.index[i].tolist() == (final[:k] + [-1] * (k - len(final[:k])))
        for s, gt in enumerate(gts[i]):
            want = final.index(gt) + 1 if gt >= 0 and gt in final else 0
            assert r.gt_rank[i, s].item() == want
    assert r.pairs_scored == pairs


def test_rerank_all_with_dot_product_equals_first_stage():
    gen = torch.Generator().manual_seed(0)
    q = l2_normalize(torch.randn(30, 8, generator=gen))
    g = l2_normalize(torch.randn(50, 8, generator=gen))
    qg = [i % 3 for i in range(30)]
    gg = [i % 3 for i in range(50)]
    gt = pack_ground_truth([[i % 50] for i in range(30)])
    base = rank(q, g, qg, gg, k=10, gt_index=gt)
    again = rank(q, g, qg, gg, k=10, gt_index=gt, mode="all", score_pairs=lambda a, b: (q[a] * g[b]).sum(1))
    assert torch.equal(base.index, again.index)
    assert torch.equal(base.gt_rank, again.gt_rank)


def test_errors_are_clear():
    q, g = torch.eye(2), torch.eye(2)
    with pytest.raises(ValueError, match="needs a score_pairs"):
        rank(q, g, k=1, mode="topk")
    with pytest.raises(ValueError, match="rerank mode"):
        rank(q, g, k=1, mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        rank(q, g, k=0)
    with pytest.raises(ValueError, match="embeddings must be"):
        rank(q, torch.eye(3), k=1)
    with pytest.raises(ValueError, match="both queries and gallery"):
        rank(q, g, ["a", "b"], None, k=1)
    with pytest.raises(ValueError, match="NaN"):
        rank(torch.full((2, 2), float("nan")), g, k=1)
    with pytest.raises(ValueError, match="shape"):
        rank(q, g, k=1, mode="all", score_pairs=lambda a, b: torch.zeros(1, 1))
    with pytest.raises(ValueError, match="outside"):
        rank(q, g, k=1, gt_index=torch.tensor([[5], [0]]))


def test_encode_groups_accepts_tensors_and_labels():
    qg, gg = encode_groups(["b", "a"], ["a", "a", "b"], 2, 3)
    assert qg.tolist() == [gg[2].item(), gg[0].item()]
    t = torch.tensor([0, 1])
    qg2, gg2 = encode_groups(t, torch.tensor([1, 1, 0]), 2, 3)
    assert qg2.tolist() == [0, 1] and gg2.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="group labels"):
        encode_groups(["a"], ["a"], 2, 1)


def test_negative_zero_ties_with_positive_zero():
    # scores -0.0 and +0.0 compare equal: the gallery order decides, whatever the sign bit
    q = torch.tensor([[1.0, -1.0]])
    g = torch.tensor([[0.0, 1.0], [0.0, 0.0], [-0.0, 0.0], [1.0, 0.0]])  # scores -1, 0, -0, 1
    r = rank(q, g, k=4, gt_index=pack_ground_truth([[2, 1]]))
    assert r.index.tolist() == [[3, 1, 2, 0]]
    assert r.gt_rank.tolist() == [[3, 2]]
    r = rank(q, g, k=2, gt_index=pack_ground_truth([[2]]))
    assert r.index.tolist() == [[3, 1]]
