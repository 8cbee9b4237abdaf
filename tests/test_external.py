"""Outputs made outside the harness: embedding files and TREC run files ranked as the harness
ranks its own (benchmark.evaluation.external), and every bad file refused with one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.core.config import PROFILES
from benchmark.evaluation import external as X
from benchmark.evaluation.external_inputs import ExternalInputError, read_embeddings, read_run
from benchmark.evaluation.retrieval import rank
from benchmark.evaluation.scoring import SplitIndex
from datasets.records import ClipSource, TrainPair
from tests.evalkit import embeddings, make_splits

EV = PROFILES["tiny"].eval


@pytest.fixture(scope="module")
def toy():
    s = make_splits(seed=3, missing=1)
    train = TrainPair(
        clip=ClipSource(clip_id="train-clip-0"),
        image_id="train-img-0",
        image_path=Path("/nonexistent/t.jpg"),
        product_id="p0",
    )
    return dataclasses.replace(s, train=[train])


@pytest.fixture(scope="module")
def emb(toy):
    return embeddings(toy, noise=1.0, seed=5)


def harness_ranking(toy, q, g):
    idx = SplitIndex.from_splits(toy)
    return rank(
        q,
        g,
        idx.query_groups,
        idx.gallery_groups,
        k=X.ranking_depth(EV),
        gt_index=idx.gt_index(),
        query_valid=idx.valid,
    )


def present(toy):
    return [i for i, x in enumerate(toy.queries) if not x.missing]


def write_npz(path, ids, matrix):
    np.savez(path, ids=np.array(ids), embeddings=np.asarray(matrix))
    return path


def files(toy, emb, tmp_path, *, q_ids=None, q_mat=None, g_ids=None, g_mat=None):
    q, g = emb
    rows = present(toy)
    qf = write_npz(
        tmp_path / "q.npz",
        q_ids if q_ids is not None else [toy.queries[i].query_id for i in rows],
        q_mat if q_mat is not None else q.numpy()[rows],
    )
    gf = write_npz(
        tmp_path / "g.npz",
        g_ids if g_ids is not None else [x.image_id for x in toy.gallery],
        g_mat if g_mat is not None else g.numpy(),
    )
    return qf, gf


def test_embeddings_rank_exactly_as_the_harness_in_any_row_order_and_precision(toy, emb, tmp_path):
    q, g = emb
    ref = harness_ranking(toy, q, g)
    rows = present(toy)[::-1]  # another row order, float64, unnormalised: same ranking
    qf = write_npz(tmp_path / "q.npz", [toy.queries[i].query_id for i in rows], 3.0 * q.double().numpy()[rows])
    scale = np.linspace(0.2, 5.0, len(toy.gallery))[:, None]  # L2 normalisation undoes any row's scale
    gf = write_npz(tmp_path / "g.npz", [x.image_id for x in toy.gallery][::-1], (scale * g.double().numpy())[::-1])
    out = X.rank_embeddings(toy, read_embeddings(qf), read_embeddings(gf), EV)
    assert torch.equal(out.ranking.index, ref.index) and torch.equal(out.ranking.gt_rank, ref.gt_rank)
    assert out.ranking.index[0].eq(-1).all()  # the query without frames is never ranked: a miss
    assert out.notice is None


def test_npy_and_safetensors_with_id_lists_read_as_the_npz(toy, emb, tmp_path):
    from safetensors.numpy import save_file

    q, _ = emb
    ids = [toy.queries[i].query_id for i in present(toy)]
    mat = q.numpy()[present(toy)]
    np.save(tmp_path / "q.npy", mat)
    (tmp_path / "q.ids.txt").write_text("\n".join(ids) + "\n")
    save_file({"embeddings": mat}, str(tmp_path / "q.safetensors"))
    (tmp_path / "other.txt").write_text("\n".join(ids))
    npz = read_embeddings(write_npz(tmp_path / "q.npz", ids, mat))
    for f in (read_embeddings(tmp_path / "q.npy"), read_embeddings(tmp_path / "q.safetensors", tmp_path / "other.txt")):
        assert f.ids == npz.ids and np.array_equal(f.matrix, npz.matrix) and len(f.files) == 2


def _bad_embedding_cases(toy, emb):
    q, g = emb
    rows = present(toy)
    qids = [toy.queries[i].query_id for i in rows]
    gids = [x.image_id for x in toy.gallery]
    qm, gm = q.numpy()[rows], g.numpy()
    nan, inf = qm.copy(), gm.copy()
    nan[3, 2] = np.nan
    inf[5, 0] = np.inf
    return {
        "missing query": (dict(q_ids=qids[1:], q_mat=qm[1:]), "q.npz", f"no embedding for query {qids[0]!r}"),
        "duplicate id": (dict(g_ids=gids[:2] + [gids[0]] + gids[3:]), "g.npz", f"duplicate id {gids[0]!r}"),
        "wrong dimension": (
            dict(g_mat=gm[:, :-1]),
            "g.npz",
            f"are 15-dimensional but the query file's are 16 (first gallery id {gids[0]!r}",
        ),
        "1-d array": (dict(q_mat=qm[:, 0]), "q.npz", "2-D array"),
        "rows and ids": (dict(q_mat=qm[:-1]), "q.npz", f"{len(qids) - 1} rows of embeddings but {len(qids)} ids"),
        "nan": (dict(q_mat=nan), "q.npz", f"NaN or infinity) in the embedding of id {qids[3]!r}"),
        "inf": (dict(g_mat=inf), "g.npz", f"NaN or infinity) in the embedding of id {gids[5]!r}"),
        "training split": (
            dict(g_ids=gids[:-1] + ["train-img-0"]),
            "g.npz",
            "'train-img-0' is an id of the training split",
        ),
        "unknown id": (
            dict(q_ids=qids[:-1] + ["nowhere"]),
            "q.npz",
            "query id 'nowhere' is not a query of the test split",
        ),
        "missing clip": (
            dict(q_ids=[toy.queries[0].query_id] + qids[1:]),
            "q.npz",
            f"query {toy.queries[0].query_id!r} has no frames in the release",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing query",
        "duplicate id",
        "wrong dimension",
        "1-d array",
        "rows and ids",
        "nan",
        "inf",
        "training split",
        "unknown id",
        "missing clip",
    ],
)
def test_each_bad_embedding_file_is_one_line_naming_the_file_and_the_first_bad_id(toy, emb, tmp_path, case):
    kwargs, name, needle = _bad_embedding_cases(toy, emb)[case]
    qf, gf = files(toy, emb, tmp_path, **kwargs)
    with pytest.raises(ExternalInputError) as err:
        X.rank_embeddings(toy, read_embeddings(qf), read_embeddings(gf), EV)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / name)) and needle in msg, msg


def test_unreadable_embedding_files_are_one_line(tmp_path):
    np.savez(tmp_path / "obj.npz", ids=np.array(["a", "b"], dtype=object), embeddings=np.zeros((2, 3)))
    np.savez(tmp_path / "noids.npz", embeddings=np.zeros((2, 3)))
    np.save(tmp_path / "lonely.npy", np.zeros((2, 3)))
    np.save(tmp_path / "blank.npy", np.zeros((2, 3)))
    (tmp_path / "blank.ids.txt").write_text("a\n\nb\n")
    (tmp_path / "x.pt").write_bytes(b"")
    cases = {
        "obj.npz": "cannot be read as .npz",
        "noids.npz": "no array named 'ids'",
        "lonely.npy": "lonely.ids.txt does not exist",
        "blank.npy": "blank.ids.txt:2: blank id",
        "x.pt": "unknown embedding format",
        "absent.npz": "no such file",
    }
    for name, needle in cases.items():
        with pytest.raises(ExternalInputError) as err:
            read_embeddings(tmp_path / name)
        assert "\n" not in str(err.value) and str(tmp_path) in str(err.value) and needle in str(err.value), str(
            err.value
        )


# --- run files ---------------------------------------------------------------------------------


def run_text(toy, scores, *, keep=None, order=None):
    """A run file listing every (query, gallery item of its group) pair with ``scores[q, g]``."""
    lines = []
    for qi, x in enumerate(toy.queries):
        if x.missing or (keep is not None and qi not in keep):
            continue
        items = [gj for gj, it in enumerate(toy.gallery) if it.group == x.group]
        for n, gj in enumerate(order(items) if order else items, 1):
            lines.append(f"{x.query_id} Q0 {toy.gallery[gj].image_id} {n} {float(scores[qi, gj])!r} mine")
    return "\n".join(lines) + "\n"


def test_a_run_of_cosine_scores_ranks_as_the_embeddings(toy, emb, tmp_path):
    q, g = emb
    ref = harness_ranking(toy, q, g)
    path = tmp_path / "r.run"
    path.write_text(run_text(toy, (q @ g.T).numpy(), order=lambda items: items[::-1]))  # file order does not matter
    out = X.rank_run(toy, read_run(path), path, EV)
    assert torch.equal(out.ranking.index, ref.index) and torch.equal(out.ranking.gt_rank, ref.gt_rank)
    assert out.ranking.pairs_scored == 0 and out.notice is None


def test_equal_scores_follow_gallery_order_not_the_file_or_the_docid(toy, tmp_path):
    scores = np.ones((len(toy.queries), len(toy.gallery)))
    path = tmp_path / "ties.run"
    path.write_text(run_text(toy, scores, order=lambda items: items[::-1]))
    out = X.rank_run(toy, read_run(path), path, EV)
    qi = present(toy)[0]
    group = [gj for gj, it in enumerate(toy.gallery) if it.group == toy.queries[qi].group]
    assert out.ranking.index[qi, : len(group)].tolist() == group


def test_omitted_queries_are_misses_and_unlisted_images_are_not_retrieved(toy, emb, tmp_path):
    q, g = emb
    scores = (q @ g.T).numpy()
    keep = set(present(toy)[:5])
    path = tmp_path / "part.run"
    path.write_text(
        run_text(toy, scores, keep=keep, order=lambda items: sorted(items, key=lambda j: -scores[0, j])[:3])
    )
    out = X.rank_run(toy, read_run(path), path, EV)
    omitted = len(present(toy)) - 5
    assert out.notice.startswith(str(path)) and f"{omitted} of the {len(present(toy))} queries" in out.notice
    assert "counted as a miss" in out.notice
    listed = (out.ranking.index >= 0).sum(1)
    assert set(listed.tolist()) == {0, 3} and int((listed == 3).sum()) == 5
    assert int(out.ranking.gt_rank.max()) <= 3  # a ground truth the run does not list is not found
    omitted_rows = [i for i in range(len(toy.queries)) if i not in keep]
    assert out.ranking.gt_rank[omitted_rows].le(0).all()


@pytest.mark.parametrize(
    "line,needle",
    [
        ("live00-001 Q0 img-01-000 1 0.5 t", "ranks image 'img-01-000', which is outside its gallery group 'live00'"),
        ("live00-001 Q0 img-99-000 1 0.5 t", "gallery image id 'img-99-000' is not a gallery image of the test split"),
        ("live00-001 Q0 train-img-0 1 0.5 t", "'train-img-0' is an id of the training split"),
        ("train-clip-0 Q0 img-00-000 1 0.5 t", "query id 'train-clip-0' is an id of the training split"),
        ("live00-000 Q0 img-00-000 1 0.5 t", "query 'live00-000' has no frames in the release"),
        ("live00-001 Q0 img-00-000 1 nan t", "score 'nan' is not finite"),
        ("live00-001 Q0 img-00-000 1 high t", "score 'high' is not a number"),
        ("live00-001 Q0 img-00-000 0 0.5 t", "rank '0' is not a positive integer"),
        ("live00-001 Q0 img-00-000 1 0.5", "expected 6 fields"),
        ("live00-001 Q0 img-00-001 2 0.4 t", "ranks 'img-00-001' twice"),
    ],
)
def test_each_bad_run_line_is_one_line_naming_the_file_and_line(toy, tmp_path, line, needle):
    path = tmp_path / "bad.run"
    path.write_text(f"live00-001 Q0 img-00-001 1 0.9 t\n{line}\n")
    with pytest.raises(ExternalInputError) as err:
        X.rank_run(toy, read_run(path), path, EV)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}:2: ") and needle in msg, msg


def test_an_empty_or_missing_run_file_is_refused(tmp_path):
    (tmp_path / "empty.run").write_text("\n")
    for name, needle in (("empty.run", "has no lines"), ("none.run", "no such file")):
        with pytest.raises(ExternalInputError, match=needle):
            read_run(tmp_path / name)


def test_the_v3_schema_says_external_submissions_claim_no_commit():
    from benchmark.record.submission import load_schema

    schema = load_schema("submission", 3)
    assert schema["properties"]["source"]["enum"] == ["reproduced", "external"]
    rules = json.dumps(schema["allOf"])
    assert '"not": {"required": ["git"]}' in rules and '"required": ["external"]' in rules


def test_v2_submissions_still_load_and_ids_with_spaces_are_not_exported(toy, tmp_path):
    from benchmark.record import trec
    from benchmark.record.submission import dumps_submission, load_submission
    from tests.evalkit import make_submission

    sub = make_submission(toy, method="m", noise=0.3)
    assert sub["schema_version"] == 3
    v2 = {**sub, "schema_version": 2}
    (tmp_path / "v2.json").write_text(dumps_submission(v2))
    assert load_submission(tmp_path / "v2.json")["schema_version"] == 2
    lines = list(trec.run_lines(sub, "m"))
    assert lines[0].split()[1:5:3] == ["Q0", str(sub["protocol"]["topk_saved"])] and len(lines) == sum(
        len(r[1]) for r in sub["rankings"]
    )
    sub["rankings"][1][1][0] = "an image"
    with pytest.raises(trec.TrecExportError, match="image id 'an image' cannot be a TREC field"):
        list(trec.run_lines(sub, "m"))
