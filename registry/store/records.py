"""Frozen records the Store API returns. They cross module boundaries; ORM rows never do."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class DeviceClass:
    name: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class Board:
    name: str
    class_name: str
    host: str
    port: int
    role: str
    emulate: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None
    tags: tuple[str, ...] = ()
    facts: dict[str, Any] | None = None
    checked_at: datetime | None = None


@dataclass(frozen=True)
class Variant:
    id: str
    family: str
    format: str
    path: str
    params: int
    macs: int
    size_bytes: int
    input_shape: tuple[int, ...]
    precision: str
    width: float | None = None
    resolution: int | None = None
    prune: float | None = None
    opset: int | None = None
    runtime_needs: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    accuracy: float | None = None
    accuracy_source: str | None = None
    features: dict[str, Any] | None = None
    parent_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Split:
    id: int
    variant_id: str
    cut_name: str
    position: int
    head_path: str | None
    head_sha256: str | None
    tail_path: str | None
    tail_sha256: str | None
    payload_shape: tuple[int, ...]
    payload_dtype: str
    payload_bytes: int
    head_macs: int | None = None
    tail_macs: int | None = None
    codecs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    config: dict[str, Any]
    status: str
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Measurement:
    id: int
    key: str
    board: str
    variant_id: str
    runtime: str
    config: dict[str, Any]
    status: str
    latency_ms: float | None = None
    stats: dict[str, Any] | None = None
    energy_mj: float | None = None
    energy_source: str | None = None
    system: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    split_id: int | None = None
    device_class: str | None = None
    run_id: int | None = None
    source: str = "probe"
    created_at: datetime | None = None


@dataclass(frozen=True)
class PredictorVersion:
    id: int
    name: str
    version: int
    target: str
    device_class: str | None
    path: str
    file_sha256: str
    data_hash: str
    metrics: dict[str, Any]
    libs: dict[str, Any]
    status: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Feedback:
    id: int
    app: str
    kind: str
    chosen: dict[str, Any]
    other: dict[str, Any] | None
    rating: float | None
    context: dict[str, Any] | None
    created_at: datetime | None = None


@dataclass(frozen=True)
class QoEWeights:
    id: int
    app: str
    version: int
    weights: dict[str, float]
    metrics: dict[str, Any]
    created_at: datetime | None = None


@dataclass(frozen=True)
class Job:
    id: int
    run_id: int | None
    key: str
    payload: dict[str, Any]
    status: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    measurement_id: int | None
    error: str | None
    board: str | None = None
    edge: str | None = None
