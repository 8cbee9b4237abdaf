"""The typed submission record (benchmark/record/record.py) is the JSON schema, key for key:
every TypedDict's keys are its schema object's properties, its required keys the schema's
``required``, and a committed submission loads with exactly the record's top-level keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.record import record as R
from benchmark.record.submission import SCHEMA_VERSION, load_schema, load_submission

SCHEMA = load_schema("submission", SCHEMA_VERSION)
PROV = SCHEMA["properties"]["provenance"]["properties"]
CASES = [
    (R.Submission, SCHEMA),
    (R.MethodRecord, SCHEMA["properties"]["method"]),
    (R.DatasetRecord, SCHEMA["properties"]["dataset"]),
    (R.ProfileRecord, SCHEMA["properties"]["profile"]),
    (R.ProtocolRecord, SCHEMA["properties"]["protocol"]),
    (R.MetricsRecord, SCHEMA["properties"]["metrics"]),
    (R.BootstrapRecord, SCHEMA["properties"]["metrics"]["properties"]["bootstrap"]),
    (R.ProvenanceRecord, SCHEMA["properties"]["provenance"]),
    (R.GitRecord, PROV["git"]),
    (R.InitialWeightsRecord, PROV["initial_weights"]),
    (R.IdentityRecord, PROV["identity"]),
    (R.InferenceRecord, PROV["inference"]),
    (R.LockRecord, PROV["lock"]),
    (R.ExternalRecord, PROV["external"]),
]


@pytest.mark.parametrize("typed, schema", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_typed_record_is_its_schema_object(typed, schema):
    assert set(typed.__annotations__) == set(schema["properties"])
    assert typed.__required_keys__ == set(schema.get("required", ()))


def test_a_committed_submission_has_the_records_keys():
    path = sorted((Path(__file__).resolve().parent.parent / "results" / "submissions").glob("*.json*"))[0]
    sub = load_submission(path)
    assert set(R.Submission.__required_keys__) <= set(sub) <= set(R.Submission.__annotations__)
    assert set(R.ProvenanceRecord.__required_keys__) <= set(sub["provenance"])
