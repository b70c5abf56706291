"""SQLAlchemy 2 ORM models. The schema is created and changed only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DeviceClassRow(Base):
    __tablename__ = "device_classes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class BoardRow(Base):
    __tablename__ = "boards"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(128), ForeignKey("device_classes.name"))
    host: Mapped[str] = mapped_column(String(256))
    port: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    emulate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    energy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VariantRow(Base):
    __tablename__ = "variants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(128), index=True)
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    params: Mapped[int] = mapped_column(BigInteger)
    macs: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    precision: Mapped[str] = mapped_column(String(16))
    width: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolution: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prune: Mapped[float | None] = mapped_column(Float, nullable=True)
    opset: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runtime_needs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    accuracy_source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SplitRow(Base):
    __tablename__ = "splits"
    __table_args__ = (UniqueConstraint("variant_id", "cut_name", name="uq_split_variant_cut"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    variant_id: Mapped[str] = mapped_column(String(64), ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    cut_name: Mapped[str] = mapped_column(String(512))
    position: Mapped[int] = mapped_column(Integer)
    head_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    head_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tail_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    tail_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload_shape: Mapped[list[Any]] = mapped_column(JSON)
    payload_dtype: Mapped[str] = mapped_column(String(16))
    payload_bytes: Mapped[int] = mapped_column(BigInteger)
    head_macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tail_macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    codecs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MeasurementRow(Base):
    __tablename__ = "measurements"
    __table_args__ = (
        Index("ix_measurements_board_variant", "board", "variant_id"),
        Index("ix_measurements_class_source", "device_class", "source"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    board: Mapped[str] = mapped_column(String(256))
    device_class: Mapped[str | None] = mapped_column(String(128), nullable=True)
    variant_id: Mapped[str] = mapped_column(String(128))
    split_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runtime: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    energy_mj: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    system: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(128), default="probe")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PredictorRow(Base):
    __tablename__ = "predictors"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_predictor_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(32))
    device_class: Mapped[str | None] = mapped_column(String(128), nullable=True)
    path: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64))
    data_hash: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    libs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    chosen: Mapped[dict[str, Any]] = mapped_column(JSON)
    other: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rating: Mapped[float | None] = mapped_column(Float, nullable=True)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QoEWeightsRow(Base):
    __tablename__ = "qoe_weights"
    __table_args__ = (UniqueConstraint("app", "version", name="uq_qoe_app_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    weights: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_board_status", "board", "status"),
        Index("ix_jobs_edge_status", "edge", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    board: Mapped[str | None] = mapped_column(String(256), nullable=True)
    edge: Mapped[str | None] = mapped_column(String(256), nullable=True)  # a split job's edge board
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    measurement_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
