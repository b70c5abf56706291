"""TFLite split points: head and tail .tflite converted with litert-torch at a module boundary,
run in ai-edge-litert, head∘tail == the full .tflite. Slow (three conversions, ~1-2 min on the
busy 2-core host), so one variant and one interior cut."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from registry.errors import EdgeatlasError, ErrorCode
from registry.store.api import Store


def test_tflite_head_then_tail_matches_full_model(ea_home: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from registry.paths import artifacts_dir
    from registry.zoo.build import VariantSpec, build
    from registry.zoo.split_build import build_splits

    store = Store.open(f"sqlite:///{ea_home / 't.db'}")
    spec = VariantSpec("mobilenet_v2", width=0.35, resolution=32, format="tflite", dataset=None)
    v = build(store, spec, splits=False).variant
    assert build_splits(store, v.id) == []  # TFLite splits are opt-in (slow)
    splits = build_splits(store, v.id, max_points=3, tflite=True)
    assert [s.cut_name for s in splits][0] == "input" and splits[-1].cut_name == "output"
    inner = splits[1:-1]
    assert len(inner) == 1
    s = inner[0]
    head_file, tail_file = artifacts_dir() / s.head_path, artifacts_dir() / s.tail_path
    assert head_file.suffix == tail_file.suffix == ".tflite"
    assert hashlib.sha256(head_file.read_bytes()).hexdigest() == s.head_sha256 == head_file.stem

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return np.array(it.get_tensor(it.get_output_details()[0]["index"]))

    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    payload = run(head_file, x)
    assert tuple(payload.shape) == s.payload_shape
    full = run(artifacts_dir() / v.path, x)
    got = run(tail_file, payload)
    np.testing.assert_allclose(got, full, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(full))))
    # codecs measured in ai-edge-litert; a random-init model has no task: accuracy unknown
    assert set(s.codecs) <= {"fp32", "fp16", "int8", "pca"} and {"fp32", "fp16", "int8"} <= set(s.codecs)
    for info in s.codecs.values():
        assert info["runtime"] == "ai-edge-litert" and info["bytes"] > 0
        assert info["accuracy_delta"] is None and info["accuracy_source"] == "unknown"
    assert build_splits(store, v.id, max_points=3, tflite=True) == splits  # idempotent


def test_quantised_tflite_variant_is_refused(ea_home: Path) -> None:
    from registry.zoo.split_build import build_tflite_splits

    store = Store.open(f"sqlite:///{ea_home / 'q.db'}")
    store.add_variant(
        "ab" * 32, "mobilenet_v2", "tflite", "x.tflite", 1, 1, 1, [1, 3, 32, 32], "int8", recipe={"spec": {}}
    )
    with pytest.raises(EdgeatlasError) as err:
        build_tflite_splits(store, "ab" * 32)
    assert err.value.code == ErrorCode.UNSUPPORTED
    assert store.list_splits("ab" * 32) == []
