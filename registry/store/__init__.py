"""The system of record: SQLAlchemy 2 models, Alembic migrations, and the Store API."""

from registry.store.api import Store
from registry.store.records import (
    Board,
    DeviceClass,
    Feedback,
    Job,
    Measurement,
    PredictorVersion,
    QoEWeights,
    Run,
    Split,
    Variant,
)

__all__ = [
    "Board",
    "DeviceClass",
    "Feedback",
    "Job",
    "Measurement",
    "PredictorVersion",
    "QoEWeights",
    "Run",
    "Split",
    "Store",
    "Variant",
]
