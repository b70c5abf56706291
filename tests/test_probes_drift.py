"""The drift reference model (probes/drift.py): the same bytes on every controller, a real ONNX model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from probes.drift import REFERENCE_NAME, build_reference, reference_model
from probes.fleet import SweepConfig


def test_reference_is_built_once_and_deterministic(tmp_path):
    a, sha_a = reference_model(tmp_path / "a")
    b, sha_b = reference_model(tmp_path / "b")
    assert sha_a == sha_b and a.read_bytes() == b.read_bytes() and a.name == f"{REFERENCE_NAME}.onnx"
    mtime = a.stat().st_mtime_ns
    assert reference_model(tmp_path / "a") == (a, sha_a) and a.stat().st_mtime_ns == mtime  # cached, not rebuilt
    sess = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": np.ones((1, 3, 56, 56), np.float32)})
    assert out.shape == (1, 10) and np.isfinite(out).all()
    # rebuilding over a file gives the same bytes (the write is atomic: no .tmp is left)
    build_reference(a)
    assert a.read_bytes() == b.read_bytes() and not list((tmp_path / "a").glob("*.tmp"))


def test_drift_reference_keys_its_own_measurements(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    plain, with_ref = SweepConfig(), SweepConfig(drift_ref=True)
    # without the reference a job's key config is what it was before the option existed
    assert plain.model_config() == {"kind": "model", **plain.runtime_config()}
    assert with_ref.model_config() == {**plain.model_config(), "drift_ref": reference_model()[1]}
    with pytest.raises(ValueError, match="ONNX model"):
        SweepConfig(runtime="litert", drift_ref=True)
    from probes.queue import config_from_payload, config_payload

    assert config_from_payload(config_payload(with_ref), SweepConfig()).drift_ref is True
    old = {k: v for k, v in config_payload(with_ref).items() if k != "drift_ref"}
    assert config_from_payload(old, SweepConfig()).drift_ref is False  # queued before the option
