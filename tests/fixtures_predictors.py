"""Fixtures of the predictors room: a real SQLite store holding a slice of real HELP NB201
measurements (pixel3, samsung_a50, silver_4114; development devices) with NB201 graph features."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from predictors import nb201
from predictors.features import feature_dict

HELP_CSV = "/work/shared/datasets/help/nb201_latency_ms.csv"
DEVICES = ("pixel3", "samsung_a50", "silver_4114")


@pytest.fixture(scope="session")
def help_slice(tmp_path_factory) -> tuple[list[dict], np.ndarray]:
    """The first 160 HELP NB201 rows and their graph features, computed once per session."""
    rows = []
    with open(HELP_CSV) as fh:
        for i, r in enumerate(csv.DictReader(fh)):
            if i >= 160:
                break
            rows.append(r)
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEATLAS_HOME", str(tmp_path_factory.mktemp("help-slice-home")))
    try:
        feats = nb201.features_table([r["arch_str"] for r in rows])
    finally:
        mp.undo()
    return rows, feats


@pytest.fixture()
def pred_store(tmp_path, monkeypatch, help_slice):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from registry.store import Store

    s = Store.open(f"sqlite:///{tmp_path / 'atlas.db'}")
    rows, feats = help_slice
    for dev in DEVICES:
        s.upsert_device_class(dev, {"cores": 4, "freq_mhz": 2000 if dev != "silver_4114" else 2200, "memory_mb": 4096})
    meas = []
    for r, f in zip(rows, feats, strict=True):
        if np.isnan(f[0]):
            continue
        vid = f"nb201:{r['nb201_idx']}"
        fd = feature_dict(f)
        s.add_variant(
            id=vid,
            family="nb201",
            format="onnx",
            path="",
            params=int(fd["params"]),
            macs=int(fd["macs"]),
            size_bytes=int(fd["weight_bytes"]),
            input_shape=(1, 3, 32, 32),
            precision="fp32",
            features=fd,
        )
        for dev in DEVICES:
            meas.append(
                {
                    "key": hashlib.sha256(f"{vid}{dev}".encode()).hexdigest(),
                    "board": dev,
                    "variant_id": vid,
                    "runtime": "help",
                    "config": {},
                    "status": "ok",
                    "latency_ms": float(r[dev]),
                    "device_class": dev,
                    "source": "dataset:help-nb201",
                }
            )
    s.add_measurements_bulk(meas)
    return s


def add_featureless_variant(store, vid: str, features: dict | None = None) -> None:
    """A variant with no artifact (path ""): by default no features either, what a predictor must
    refuse; or the given feature dict (e.g. one of an older feature set)."""
    store.add_variant(
        id=vid,
        family="x",
        format="onnx",
        path="",
        params=1,
        macs=1,
        size_bytes=1,
        input_shape=(1, 3, 8, 8),
        precision="fp32",
        features=features,
    )


POWER_MODEL = "estimated:power-model-active_w"


def new_class_rows(store, cls: str, scale: float, *, tag: str = "", watts: float | None = None) -> list[dict]:
    """A board class measured on every variant: latency from the pixel3 rows times ``scale`` (``tag``
    makes other keys: a second run); with ``watts``, energy_mj = watts x latency (POWER_MODEL)."""
    base = {m.variant_id: m.latency_ms for m in store.list_measurements(device_class="pixel3", source="dataset:*")}
    energy = {"energy_source": POWER_MODEL} if watts is not None else {}
    return [
        {
            "key": hashlib.sha256(f"{vid}|{cls}{tag}".encode()).hexdigest(),
            "board": f"{cls}-1",
            "variant_id": vid,
            "runtime": "onnxruntime",
            "config": {},
            "status": "ok",
            "latency_ms": scale * ms,
            "device_class": cls,
            "source": "probe",
            **({"energy_mj": watts * scale * ms, **energy} if watts is not None else {}),
        }
        for vid, ms in base.items()
    ]
