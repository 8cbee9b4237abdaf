"""The submission as one typed record: TypedDicts that mirror the JSON schema
(``benchmark/record/schemas/submission-v<SCHEMA_VERSION>.json``) key for key, so that every
reader (collect, leaderboard, publish, reproduce, browse) names the same fields the schema
validates. A submission stays a plain JSON object on disk and in memory (it is read and written
as JSON, and re-scored from its rankings); these types are what the readers annotate it with.
``tests/test_submission_record.py`` holds each TypedDict against the schema: its keys are the
schema's properties and its required keys the schema's ``required``.
"""

# no `from __future__ import annotations` here: TypedDict reads NotRequired[...] only from real annotations
from typing import Any, NotRequired, Optional, TypedDict


class MethodRecord(TypedDict):
    name: str
    variant: str
    config: Optional[dict[str, Any]]
    num_parameters: int


class DatasetRecord(TypedDict):
    name: str
    split: str
    annotation_checksum: str
    layout: str
    grouped: bool
    num_queries: int
    num_gallery: int
    num_queries_without_frames: NotRequired[int]
    size: NotRequired[Optional[str]]
    seed: NotRequired[Optional[int]]


class ProfileRecord(TypedDict):
    name: str
    data: NotRequired[dict[str, Any]]
    train: NotRequired[dict[str, Any]]
    eval: NotRequired[dict[str, Any]]
    method_recipe: NotRequired[dict[str, Any]]


class ProtocolRecord(TypedDict):
    score: str
    tie_break: str
    ks: list[int]
    topk_saved: int
    rerank: str
    rerank_topk: int
    pairs_scored: int


class BootstrapRecord(TypedDict):
    resamples: int
    seed: int
    confidence: float
    method: str


class MetricsRecord(TypedDict):
    num_queries: int
    ks: list[int]
    map_cutoff: Optional[int]
    bootstrap: BootstrapRecord
    overall: dict[str, Any]
    breakdowns: dict[str, Any]


class GitRecord(TypedDict):
    commit: Optional[str]
    dirty: Optional[bool]
    diff_sha256: NotRequired[str]
    diff_bytes: NotRequired[int]
    diff: NotRequired[str]
    diff_truncated: NotRequired[bool]
    untracked: NotRequired[dict[str, str]]


class InitialWeightsRecord(TypedDict):
    path: str
    sha256: str
    source: NotRequired[Optional[str]]
    unused_keys: NotRequired[int]


class IdentityRecord(TypedDict):
    dataset: str
    annotation_checksum: str
    custom_data_root: NotRequired[bool]
    profile: str
    method: str
    overrides: NotRequired[dict[str, str]]
    code: dict[str, Any]
    seed: int
    max_steps: NotRequired[Optional[int]]
    planned_steps: NotRequired[Optional[int]]
    partial: bool


class InferenceRecord(TypedDict):
    queries: int
    gallery: int
    pairs_scored: NotRequired[int]
    encode_query_s: NotRequired[Optional[float]]
    encode_gallery_s: NotRequired[Optional[float]]
    rank_s: NotRequired[Optional[float]]
    queries_per_s: Optional[float]
    feature_cache: Any
    threads: NotRequired[int]
    world_size: NotRequired[int]


class LockRecord(TypedDict):
    """The committed lock file the environment was installed from, and its SHA-256."""

    file: str
    sha256: str


class ExternalRecord(TypedDict):
    """What was submitted from outside the harness (source \"external\"): as declared, and its input files."""

    kind: str
    method: str
    paper: str
    recipe: str
    inputs: dict[str, Any]


class ProvenanceRecord(TypedDict):
    git: NotRequired[GitRecord]
    packages: dict[str, Any]
    lock: NotRequired[Optional[LockRecord]]
    python: NotRequired[str]
    platform: NotRequired[str]
    device: str
    world_size: NotRequired[int]
    seed: int
    wall_time_s: dict[str, Any]
    date: str
    initial_weights: NotRequired[InitialWeightsRecord]
    identity: NotRequired[IdentityRecord]
    inference: NotRequired[InferenceRecord]
    command: NotRequired[Optional[str]]
    external: NotRequired[ExternalRecord]
    weights_files: NotRequired[dict[str, Any]]


class Submission(TypedDict):
    """One submission file's content (schema v3): what ran, on what, how it scored, and its
    per-query rankings (``[query_id, [gallery ids, best first]]``)."""

    schema_version: int
    source: str
    method: MethodRecord
    dataset: DatasetRecord
    profile: ProfileRecord
    protocol: ProtocolRecord
    metrics: MetricsRecord
    rankings: list[Any]
    provenance: ProvenanceRecord
