"""Graph features: exact composition of NB201/FBNet features, op categories, precision, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from predictors import fbnet, nb201
from predictors.features import FEATURE_NAMES, FEATURES_VERSION, facts_vector, onnx_features, probe_embedding
from registry.errors import EdgeatlasError


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))


def _diff(a, b):
    return [
        (n, x, y)
        for n, x, y in zip(FEATURE_NAMES, a.vector(), b.vector(), strict=True)
        if abs(x - y) > 1e-6 * max(1, abs(x))
    ]


def test_341_disconnected_archs():
    archs = nb201.all_archs()
    assert len(archs) == 15625
    assert sum(not nb201.is_connected(a) for a in archs) == 341


@pytest.mark.parametrize("task", ["cifar10", "darcy"])
def test_nb201_composed_features_equal_full_export(task):
    lib = nb201.BlockLibrary(task)
    rng = np.random.default_rng(7)
    connected = [a for a in nb201.all_archs() if nb201.is_connected(a)]
    # hand-picked traps: shared ReLU / AvgPool (exporter CSE), conv output fused with the head BN
    picks = [
        ("nor_conv_1x1", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1", "none"),
        ("avg_pool_3x3", "avg_pool_3x3", "skip_connect", "avg_pool_3x3", "skip_connect", "skip_connect"),
        ("skip_connect", "nor_conv_3x3", "none", "none", "nor_conv_1x1", "none"),
    ] + [connected[i] for i in rng.choice(len(connected), 3, replace=False)]
    for ops in picks:
        assert _diff(nb201.full_features(ops, task), lib.features(ops)) == [], ops


def test_nb201_disconnected_is_refused():
    with pytest.raises(EdgeatlasError, match="disconnected"):
        nb201.build_model(("none",) * 6)
    with pytest.raises(EdgeatlasError, match="arch string"):
        nb201.parse_arch("|conv~0|")


def test_nb201_features_table_cached(tmp_path):
    archs = [nb201.arch_str(a) for a in nb201.all_archs()[:40]]
    t1 = nb201.features_table(archs)
    assert t1.shape == (40, len(FEATURE_NAMES))
    assert np.isnan(t1[0]).all()  # all-none arch
    assert (tmp_path / "cache" / f"nb201_features_cifar10_v3_f{FEATURES_VERSION}.json").exists()
    np.testing.assert_array_equal(nb201.features_table(archs), t1)


def test_fbnet_composed_features_equal_full_export():
    lib = fbnet.BlockLibrary()
    rng = np.random.default_rng(3)
    for _ in range(2):
        ops = [fbnet.PRIMITIVES[i] for i in rng.integers(0, 9, 22)]
        assert _diff(fbnet.full_features(ops), lib.features(ops)) == []
    f = lib.features(["k3_e6"] * 22)
    assert f.values["depthwise_count"] == 22 and f.values["fc_count"] == 1


def _tiny_graph(quant: bool = False, fp16: bool = False) -> onnx.ModelProto:
    dt = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    npdt = np.float16 if fp16 else np.float32
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), npdt), "w")
    dw = numpy_helper.from_array(np.ones((8, 1, 3, 3), npdt), "dw")
    fc = numpy_helper.from_array(np.ones((8, 4), npdt), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Add", ["c2", "r1"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    inits = [w, dw, fc]
    if quant:
        inits += [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
        nodes = [
            helper.make_node("QuantizeLinear", ["x0", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["x"]),
        ] + nodes
        inp = helper.make_tensor_value_info("x0", dt, [1, 3, 16, 16])
    else:
        inp = helper.make_tensor_value_info("x", dt, [1, 3, 16, 16])
    g = helper.make_graph(nodes, "tiny", [inp], [helper.make_tensor_value_info("y", dt, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_features_categories_and_precision(tmp_path):
    f = onnx_features(_tiny_graph())
    v = f.values
    assert v["conv_count"] == 1 and v["conv_macs"] == 16 * 16 * 8 * 27
    assert v["depthwise_count"] == 1 and v["depthwise_macs"] == 16 * 16 * 8 * 9
    assert v["fc_count"] == 1 and v["fc_macs"] == 32
    assert v["add_count"] == 1 and v["activation_count"] == 1 and v["pool_count"] == 1
    assert v["input_h"] == 16 and v["input_c"] == 3 and v["depth"] == 7
    assert v["params"] == 8 * 27 + 8 * 9 + 32
    assert f.precision == "fp32"
    assert onnx_features(_tiny_graph(quant=True)).precision == "int8"
    assert onnx_features(_tiny_graph(fp16=True)).precision == "fp16"
    path = tmp_path / "m.onnx"
    onnx.save(_tiny_graph(), str(path))
    assert onnx_features(path).values == v


def test_onnx_features_bad_file(tmp_path):
    with pytest.raises(EdgeatlasError, match="no such ONNX"):
        onnx_features(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EdgeatlasError):
        onnx_features(bad)


def test_device_features():
    v = facts_vector({"cores": 4, "freq_mhz": 1500, "memory_mb": 4096, "arch": "aarch64", "accelerator": None})
    assert v.shape == (10,) and v[3] == 1.0
    with pytest.raises(EdgeatlasError, match="freq_mhz"):
        facts_vector({"cores": 4, "memory_mb": 1})
    emb = probe_embedding({"a": 1.0, "b": np.e}, ["a", "b"])
    np.testing.assert_allclose(emb, [0.0, 1.0])
    with pytest.raises(EdgeatlasError, match="lack 1"):
        probe_embedding({"a": 1.0}, ["a", "b"])
    with pytest.raises(EdgeatlasError, match="finite"):
        probe_embedding({"a": float("nan")}, ["a"])
