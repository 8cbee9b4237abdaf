"""benchmark.record.submission: schema, atomic writes, safe loading and re-scoring with clear failures."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from benchmark.core import safe_json
from benchmark.record.rescore import rescore
from benchmark.record.submission import (
    METRIC_TOLERANCE,
    SubmissionError,
    build_submission,
    dumps_submission,
    load_submission,
    schema_errors,
    submission_filename,
    write_submission,
)
from tests.evalkit import make_splits, make_submission


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=3)


@pytest.fixture(scope="module")
def sub(splits):
    return make_submission(splits, method="toy", variant="v1", bootstrap=100)


def write_raw(path: Path, obj) -> Path:
    """Write a (possibly invalid) submission the way an outsider could."""
    path.write_text(dumps_submission(obj) if isinstance(obj, dict) and "rankings" in obj else json.dumps(obj))
    return path


def test_round_trip_json_and_gzip_rescore_exactly(tmp_path, splits, sub):
    path = write_submission(sub, tmp_path)
    assert path == tmp_path / "submissions" / "toy__tiny__toy-v1__seed0.json"
    report = rescore(path, splits)
    assert report.verified == ["R1", "R3", "R5", "R10", "mAP@10"]
    for name in report.verified:
        assert report.metrics["overall"][name]["value"] == pytest.approx(
            sub["metrics"]["overall"][name]["value"], abs=1e-12
        )
        assert report.metrics["overall"][name]["ci95"] == pytest.approx(
            sub["metrics"]["overall"][name]["ci95"], abs=1e-9
        )
    assert report.curve[0] == pytest.approx(sub["metrics"]["overall"]["R1"]["value"])
    assert report.curve[9] == pytest.approx(sub["metrics"]["overall"]["R10"]["value"])
    lo, hi = report.bounded["mAP"]
    assert lo <= sub["metrics"]["overall"]["mAP"]["value"] <= hi
    assert "verified exactly" in report.summary()
    # the breakdowns were re-scored too (bucket sizes come from the data)
    assert report.metrics["breakdowns"]["scale"].keys() == sub["metrics"]["breakdowns"]["scale"].keys()

    gz = write_submission(sub, tmp_path, gzip_over=1000)
    assert gz.name.endswith(".json.gz") and not path.exists()  # the stale plain copy is gone
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert rescore(gz, splits).metrics["overall"]["R1"] == report.metrics["overall"]["R1"]
    again = write_submission(sub, tmp_path, gzip_over=1000).read_bytes()
    assert again == gz.read_bytes()  # deterministic bytes (gzip mtime 0)


def test_submission_content(splits, sub):
    assert sub["schema_version"] == 3 and sub["source"] == "reproduced"
    assert sub["dataset"]["annotation_checksum"] == splits.annotation_checksum
    assert sub["protocol"]["tie_break"] == "gallery-order" and sub["protocol"]["topk_saved"] == 10
    assert len(sub["rankings"]) == len(splits.queries)
    missing = next(q for q in splits.queries if q.missing)
    assert dict((q, ids) for q, ids in sub["rankings"])[missing.query_id] == []
    assert sub["provenance"]["seed"] == 0 and sub["provenance"]["wall_time_s"]["train"] == 125.0
    assert submission_filename(sub) == "toy__tiny__toy-v1__seed0.json"
    assert schema_errors(sub) == []


def test_a_reranked_evaluation_gets_its_own_file(sub):
    topk = tampered(sub, lambda s: s["protocol"].update(rerank="topk", rerank_topk=20))
    full = tampered(sub, lambda s: s["protocol"].update(rerank="all"))
    assert submission_filename(topk) == "toy__tiny__toy-v1__rerank-top20__seed0.json"
    assert submission_filename(full) == "toy__tiny__toy-v1__rerank-all__seed0.json"


def tampered(sub, edit):
    obj = copy.deepcopy(sub)
    edit(obj)
    return obj


def _first_present(obj):
    return next(i for i, (_, ids) in enumerate(obj["rankings"]) if ids)


CASES = {
    "schema: missing method": (lambda o: o.pop("method"), "schema violations"),
    "schema: metric over 100": (
        lambda o: o["metrics"]["overall"]["R1"].update(value=100.5),
        "greater than the maximum of 100",
    ),
    "schema: negative metric": (
        lambda o: o["metrics"]["overall"]["R5"].update(value=-1.0),
        "less than the minimum of 0",
    ),
    "schema: bad checksum format": (lambda o: o["dataset"].update(annotation_checksum="xyz"), "annotation_checksum"),
    "ranking not a pair": (
        lambda o: o["rankings"].__setitem__(3, ["only-id"]),
        "rankings/3: must be a [query_id, [gallery ids]] pair",
    ),
    "gallery id not a string": (
        lambda o: o["rankings"][_first_present(o)][1].__setitem__(0, 17),
        "gallery ids must be strings",
    ),
    "unknown query": (lambda o: o["rankings"].__setitem__(0, ["nope-query", []]), "unknown query id 'nope-query'"),
    "duplicate query": (lambda o: o["rankings"].__setitem__(1, copy.deepcopy(o["rankings"][2])), "duplicate query id"),
    "missing query": (
        lambda o: o["rankings"][-1].__setitem__(0, "ghost"),
        "1 queries of the split are missing, e.g. ['live03-009']",
    ),
    "query count": (
        lambda o: (
            o["rankings"].pop(),
            o["dataset"].update(num_queries=o["dataset"]["num_queries"] - 1),
            o["metrics"].update(num_queries=o["metrics"]["num_queries"] - 1),
        ),
        "the data has 40 / 48",
    ),
    "unknown gallery id": (
        lambda o: o["rankings"][_first_present(o)][1].__setitem__(0, "img-99-999"),
        "unknown gallery id 'img-99-999'",
    ),
    "id outside group": (
        lambda o: o["rankings"][_first_present(o)][1].__setitem__(0, "img-03-000"),
        "outside the query's gallery group",
    ),
    "duplicate gallery id": (
        lambda o: o["rankings"][_first_present(o)][1].__setitem__(1, o["rankings"][_first_present(o)][1][0]),
        "listed twice",
    ),
    "list longer than topk": (lambda o: o["protocol"].update(topk_saved=2), "more than topk_saved=2"),
    "claimed R1 off": (
        lambda o: o["metrics"]["overall"]["R1"].update(value=o["metrics"]["overall"]["R1"]["value"] + 0.01),
        "metrics.overall.R1: claimed",
    ),
    "claimed CI off": (
        lambda o: o["metrics"]["overall"]["R5"]["ci95"].__setitem__(0, o["metrics"]["overall"]["R5"]["ci95"][0] - 1),
        "R5.ci95",
    ),
    "claimed breakdown off": (
        lambda o: o["metrics"]["breakdowns"]["scale"]["small"]["R1"].update(value=0.0),
        "breakdowns.scale.small.R1",
    ),
    "breakdown n off": (lambda o: o["metrics"]["breakdowns"]["scale"]["small"].update(n=1), "breakdowns.scale.small.n"),
    "full mAP outside bounds": (lambda o: o["metrics"]["overall"]["mAP"].update(value=99.0), "outside"),
    "missing clip ranked": (lambda o: o["rankings"][0][1].append("img-00-000"), "clip is missing"),
    "annotation checksum": (lambda o: o["dataset"].update(annotation_checksum="0" * 64), "other annotations"),
    "ci not an interval": (lambda o: o["metrics"]["overall"]["R3"].update(ci95=[50.0, 40.0]), "not an interval"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rescore_rejects_with_clear_message(tmp_path, splits, sub, case):
    edit, message = CASES[case]
    path = write_raw(tmp_path / "bad.json", tampered(sub, edit))
    with pytest.raises(SubmissionError) as err:
        rescore(path, splits)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_tolerance_is_tight_but_absorbs_float_noise(tmp_path, splits, sub):
    ok = tampered(
        sub,
        lambda o: o["metrics"]["overall"]["R1"].update(
            value=o["metrics"]["overall"]["R1"]["value"] + METRIC_TOLERANCE / 10
        ),
    )
    rescore(write_raw(tmp_path / "ok.json", ok), splits)
    one_query = 100.0 / len(splits.queries)
    assert one_query > 1000 * METRIC_TOLERANCE  # a one-query difference is always caught at LPR4M scale too
    assert 100.0 / 20079 > 10 * METRIC_TOLERANCE


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": NaN}', "NaN is not allowed"),
        ('{"a": Infinity}', "Infinity is not allowed"),
        ('{"a": 1e999}', "overflows"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"a": [1, 2', "invalid JSON"),
        ("[" * 40 + "]" * 40, "nested 40 deep"),
        ('["' + "[" * 100 + '"]', None),  # brackets inside a string do not count
    ],
)
def test_untrusted_json_limits(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    if message is None:
        assert safe_json.load(path) == ["[" * 100]
        return
    with pytest.raises(safe_json.UntrustedJSONError, match=message):
        safe_json.load(path)


def test_size_limits_before_parsing(tmp_path, splits, sub):
    path = write_submission(sub, tmp_path)
    size = path.stat().st_size
    with pytest.raises(SubmissionError, match=f"{size} bytes, more than the limit of 1000"):
        load_submission(path, max_bytes=1000)
    bomb = tmp_path / "bomb.json.gz"  # 50 MB of spaces compress to ~50 KB
    bomb.write_bytes(gzip.compress(b"[" + b" " * 50_000_000 + b"]"))
    with pytest.raises(SubmissionError, match="decompresses to more than the limit of 1000000"):
        load_submission(bomb, max_bytes=1_000_000)
    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(SubmissionError, match="corrupt gzip"):
        load_submission(corrupt)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(SubmissionError, match="not UTF-8"):
        load_submission(latin)
    with pytest.raises(SubmissionError, match="no such file"):
        load_submission(tmp_path / "absent.json")
    arr = tmp_path / "array.json"
    arr.write_text("[]")
    with pytest.raises(SubmissionError, match="top level must be a JSON object"):
        load_submission(arr)


def test_unsupported_schema_version(tmp_path, sub):
    path = write_raw(tmp_path / "v4.json", tampered(sub, lambda o: o.update(schema_version=4)))
    with pytest.raises(SubmissionError, match="schema_version 4 is not supported"):
        load_submission(path)


def test_unverifiable_metrics_are_reported(tmp_path, splits):
    sub = make_submission(splits, topk=4, bootstrap=0)
    report = rescore(write_submission(sub, tmp_path), splits)
    assert report.verified == ["R1", "R3", "mAP@4"]
    assert report.unverifiable == ["R5", "R10"]
    assert "not verifiable from top-4 lists: R5, R10" in report.summary()


def test_global_gallery_dataset(tmp_path):
    splits = make_splits(grouped=False, seed=5, name="toy-global")
    sub = make_submission(splits, bootstrap=50)
    assert sub["dataset"]["grouped"] is False
    report = rescore(write_submission(sub, tmp_path), splits)
    assert report.metrics["overall"]["R10"]["value"] == pytest.approx(sub["metrics"]["overall"]["R10"]["value"])
    grouped = make_splits(seed=5, name="toy-global")
    with pytest.raises(SubmissionError, match="grouped"):
        rescore(write_submission(sub, tmp_path), grouped)


def test_build_refuses_invalid_input(splits, sub):
    with pytest.raises(SubmissionError, match="method/name"):
        build_submission(
            method="bad name!",
            variant="",
            method_config={},
            num_parameters=1,
            dataset="toy",
            splits=splits,
            profile=__import__("benchmark.core.config", fromlist=["PROFILES"]).PROFILES["tiny"],
            metrics=sub["metrics"],
            rankings=sub["rankings"],
            provenance=sub["provenance"],
            seed=0,
            wall_time_s={"train": 1.0},
        )


def test_write_failure_leaves_previous_submission_whole(tmp_path, sub, monkeypatch):
    path = write_submission(sub, tmp_path)
    before = path.read_bytes()
    import os

    def boom(*a, **k):
        raise KeyboardInterrupt  # interrupted between the temporary file and the rename

    monkeypatch.setattr(os, "replace", boom)
    changed = tampered(sub, lambda o: o["method"].update(num_parameters=999))
    with pytest.raises(KeyboardInterrupt):
        write_submission(changed, tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind
