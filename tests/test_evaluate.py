"""Evaluation: extraction order and normalisation, missing queries, grouping, re-ranking."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import Tensor

from benchmark.core.config import DataConfig, EvalConfig
from benchmark.evaluation import scoring
from benchmark.evaluation.evaluate import EvaluationError, evaluate, extract
from benchmark.record import rescore as rescore_module
from benchmark.training.distributed import DistEnv
from datasets.lpr4m import load_lpr4m
from methods.base import DataInfo, Encoded, Method
from tests.data_fixtures import make_lpr4m_release
from tests.toy_methods import RegressionData, ToyRegression

DATA = DataConfig(num_frames=4, image_size=32, resize_size=36, num_workers=0)
EVAL = EvalConfig(batch_size=4, ks=(1, 3, 5, 10), topk_saved=4, bootstrap=0)


class Oracle(Method):
    """Query embedding = one-hot of its first ground truth's gallery position (knows the answers).

    ``extras["neg"]`` is minus the embedding, so a second stage scoring ``q.neg . g.neg``
    would agree, and one scoring ``-(q.neg . g.neg)`` reverses the order.
    """

    supports_rerank = True

    def __init__(self, query_targets: Tensor, num_gallery: int, reverse: bool = False) -> None:
        super().__init__(None, DataInfo(1, 0, 4, 32))
        self.register_buffer("targets", query_targets)
        self.num_gallery = num_gallery
        self.reverse = reverse
        self.seen_frames: list[Tensor] = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        self.seen_frames.append(batch["frame_mask"].sum(1))
        emb = 3.0 * self.targets[batch["index"]] + 0.1  # not normalised: the evaluator does it
        return Encoded(emb, {"neg": -emb})

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        emb = torch.nn.functional.one_hot(batch["index"], self.num_gallery).float()
        return Encoded(emb, {"neg": -emb})

    def rerank(self, query: Encoded, gallery: Encoded) -> Tensor:
        s = (query.extras["neg"] * gallery.extras["neg"]).sum(1)
        return -s if self.reverse else s


@pytest.fixture(scope="module")
def lpr(tmp_path_factory):
    man = make_lpr4m_release(tmp_path_factory.mktemp("lpr") / "root", num_lives=2, clips_per_live=3, images_per_live=4)
    return load_lpr4m(man.root)


def _oracle(splits, present, reverse=False) -> Oracle:
    pos = {(g.group, g.image_id): i for i, g in enumerate(splits.gallery)}
    t = torch.zeros(len(present), len(splits.gallery))
    for i, q in enumerate(present):
        t[i, pos[(q.group, q.gt_ids[0])]] = 1.0
    return Oracle(t, len(splits.gallery), reverse)


def test_extract_keeps_order_and_normalises():
    torch.manual_seed(0)
    m = ToyRegression()
    ds = RegressionData(11)
    enc = extract(m, ds, "query", env=DistEnv(), batch_size=4, show_progress=False)
    want = torch.nn.functional.normalize(m.encoder(ds.x), dim=1)
    torch.testing.assert_close(enc.embedding, want.detach())
    assert enc.embedding.dtype == torch.float32 and not enc.extras
    with pytest.raises(ValueError, match="side must be"):
        extract(m, ds, "video", env=DistEnv(), batch_size=4)


def test_oracle_gets_every_query_right(lpr):
    m = _oracle(lpr, lpr.queries)
    out = evaluate(m, lpr, DATA, EVAL, env=DistEnv(), show_progress=False)
    assert out is not None and out.rerank == "none"
    r = out.ranking
    # each query is ranked only inside its livestream's gallery (4 items)
    assert r.group_size.tolist() == [4] * len(lpr.queries)
    for qi, q in enumerate(lpr.queries):
        ranked = [lpr.gallery[j] for j in r.index[qi].tolist() if j >= 0]
        assert ranked[0].image_id == q.gt_ids[0]
        assert {g.group for g in ranked} == {q.group}
    metrics = scoring.metrics_for_ranking(r, out.index, EVAL)
    assert metrics["overall"]["R1"]["value"] == 100.0
    assert set(out.timings) == {"encode_query_s", "encode_gallery_s", "rank_s"}


def test_missing_query_is_a_miss_and_is_not_encoded(lpr):
    queries = list(lpr.queries)
    queries[1] = dataclasses.replace(queries[1], missing=True)
    splits = dataclasses.replace(lpr, queries=queries)
    present = [q for q in queries if not q.missing]
    m = _oracle(splits, present)
    out = evaluate(m, splits, DATA, EVAL, env=DistEnv(), show_progress=False)
    assert sum(len(s) for s in m.seen_frames) == len(present)  # the missing clip never reached the method
    assert all(int(n) >= 1 for s in m.seen_frames for n in s)
    assert out.ranking.index.shape[1] == 10 and out.ranking.index[1].tolist() == [-1] * 10
    metrics = scoring.metrics_for_ranking(out.ranking, out.index, EVAL)
    assert metrics["num_queries"] == len(queries)
    assert metrics["overall"]["R1"]["value"] == pytest.approx(100.0 * (len(queries) - 1) / len(queries))
    ids = scoring.ranked_ids(out.ranking, out.index, EVAL.topk_saved)
    assert ids[1] == [queries[1].query_id, []]
    # the cost record counts the encoded queries only; the submission counts the missing one
    assert out.inference["queries"] == len(present) and out.inference["gallery"] == len(splits.gallery)
    sub_dataset = _submission_dataset(splits, out)
    assert sub_dataset["num_queries"] == len(queries) and sub_dataset["num_queries_without_frames"] == 1


def _submission_dataset(splits, out) -> dict:
    from benchmark.core.config import get_profile
    from benchmark.record import submission

    profile = get_profile("tiny")
    metrics = scoring.metrics_for_ranking(out.ranking, out.index, profile.eval)
    sub = submission.build_submission(
        method="oracle",
        variant="",
        method_config=None,
        num_parameters=1,
        dataset="lpr4m",
        splits=splits,
        profile=profile,
        metrics=metrics,
        rankings=scoring.ranked_ids(out.ranking, out.index, profile.eval.topk_saved),
        provenance={
            "git": {"commit": None, "dirty": None},
            "packages": {},
            "device": "cpu",
            "inference": out.inference,
        },
        seed=0,
        wall_time_s={"eval": 1.0},
    )
    assert sub["provenance"]["inference"] == out.inference  # the schema takes it
    assert not rescore_module._dataset_faults(sub, splits)
    wrong = {
        **sub,
        "dataset": {**sub["dataset"], "num_queries_without_frames": sub["dataset"]["num_queries_without_frames"] + 1},
    }
    assert any("num_queries_without_frames" in f for f in rescore_module._dataset_faults(wrong, splits))
    return sub["dataset"]


def test_inference_cost_counts_query_encoding_and_ranking(lpr):
    ev = dataclasses.replace(EVAL, rerank="topk", rerank_topk=4)
    out = evaluate(_oracle(lpr, lpr.queries), lpr, DATA, ev, env=DistEnv(), show_progress=False)
    inf = out.inference
    assert inf["pairs_scored"] == 4 * len(lpr.queries) and inf["feature_cache"] == "off"
    seconds = out.timings["encode_query_s"] + out.timings["rank_s"]
    assert inf["queries_per_s"] == pytest.approx(len(lpr.queries) / seconds, rel=1e-2)
    assert inf["threads"] == torch.get_num_threads()
    from benchmark.evaluation.evaluate import inference_cost

    cached = inference_cost({"encode_query_s": 0.0, "encode_gallery_s": 0.0, "rank_s": 0.5}, 6, 8, 0, "hit")
    assert cached["queries_per_s"] is None and cached["feature_cache"] == "hit"
    assert (
        inference_cost({"encode_query_s": 1.5, "encode_gallery_s": 9.0, "rank_s": 0.5}, 6, 8, 0, "miss")[
            "queries_per_s"
        ]
        == 3.0
    )  # gallery encoding is not a query's cost


def test_rerank_uses_the_method_second_stage_and_extras(lpr):
    ev = dataclasses.replace(EVAL, rerank="topk", rerank_topk=4)
    same = evaluate(_oracle(lpr, lpr.queries), lpr, DATA, ev, env=DistEnv(), show_progress=False)
    rev = evaluate(_oracle(lpr, lpr.queries, reverse=True), lpr, DATA, ev, env=DistEnv(), show_progress=False)
    assert same.rerank == "topk" and same.ranking.pairs_scored == 4 * len(lpr.queries)
    first_stage = evaluate(_oracle(lpr, lpr.queries), lpr, DATA, EVAL, env=DistEnv(), show_progress=False)
    assert torch.equal(same.ranking.index, first_stage.ranking.index)
    # the reversed second stage scores the ground truth -3.1 and every other item -0.1 (a tie,
    # broken by gallery order): the ground truth comes last of its 4-item group
    pos = {(g.group, g.image_id): i for i, g in enumerate(lpr.gallery)}
    for qi, q in enumerate(lpr.queries):
        gt = pos[(q.group, q.gt_ids[0])]
        others = [i for i, g in enumerate(lpr.gallery) if g.group == q.group and i != gt]
        assert rev.ranking.index[qi, :4].tolist() == others + [gt]
    assert scoring.metrics_for_ranking(rev.ranking, rev.index, ev)["overall"]["R1"]["value"] == 0.0
    ev_all = dataclasses.replace(EVAL, rerank="all")
    all_mode = evaluate(_oracle(lpr, lpr.queries, reverse=True), lpr, DATA, ev_all, env=DistEnv(), show_progress=False)
    assert torch.equal(all_mode.ranking.index, rev.ranking.index)


def test_rerank_needs_a_second_stage(lpr):
    with pytest.raises(EvaluationError, match="has no second stage"):
        evaluate(ToyRegression(), lpr, DATA, dataclasses.replace(EVAL, rerank="topk"), env=DistEnv())


def test_empty_gallery_is_a_clear_error(lpr):
    with pytest.raises(EvaluationError, match="0 gallery images"):
        evaluate(_oracle(lpr, lpr.queries), dataclasses.replace(lpr, gallery=[]), DATA, EVAL, env=DistEnv())
