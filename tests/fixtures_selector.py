"""Selector fixtures: candidate tables whose latencies are real onnxruntime measurements.

`measured_mlp_table` builds small MLPs with onnx.helper, cuts each after every layer, and times
every head (the "device": one thread) and tail (the "edge": two threads) in onnxruntime on this
machine. Payloads are the real activation sizes (float32). Accuracy is unknown (NaN): nothing
here was evaluated on data, so nothing claims an accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from registry.selector.candidates import KIND_DEVICE, KIND_EDGE, KIND_SPLIT, CandidateTable


def _mlp_part(weights: list[np.ndarray], in_dim: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "x"
    for k, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        out = f"h{k}" if k < len(weights) - 1 else "y"
        mm = f"m{k}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{k}"], [mm]))
        nodes.append(helper.make_node("Relu", [mm], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "part",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _time_ms(model_bytes: bytes, in_dim: int, threads: int, runs: int = 30) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    x = np.ones((1, in_dim), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        sess.run(None, {"x": x})
        ts.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(ts))


@pytest.fixture(scope="session")
def measured_mlp_table() -> CandidateTable:
    rng = np.random.default_rng(0)
    in_dim = 3 * 32 * 32
    cols: dict[str, list] = {
        k: [] for k in ("variant_id", "family", "split", "codec", "kind", "head_ms", "tail_ms", "payload_bytes")
    }
    for width in (64, 512, 2048):
        dims = [in_dim, width, width, width, 10]
        weights = [rng.standard_normal((dims[i], dims[i + 1])).astype(np.float32) * 0.01 for i in range(4)]
        for cut in range(0, 5):  # cut 0 = all-on-edge, cut 4 = all-on-device
            head = _time_ms(_mlp_part(weights[:cut], in_dim), in_dim, 1) if cut > 0 else 0.0
            tail = _time_ms(_mlp_part(weights[cut:], dims[cut]), dims[cut], 2) if cut < 4 else 0.0
            kind = KIND_EDGE if cut == 0 else KIND_DEVICE if cut == 4 else KIND_SPLIT
            cols["variant_id"].append(f"mlp-w{width}")
            cols["family"].append("mlp")
            cols["split"].append("all-on-edge" if cut == 0 else "all-on-device" if cut == 4 else f"relu{cut}")
            cols["codec"].append("fp32")
            cols["kind"].append(kind)
            cols["head_ms"].append(head)
            cols["tail_ms"].append(tail)
            cols["payload_bytes"].append(0.0 if cut == 4 else dims[cut] * 4.0)
    return CandidateTable.from_columns(
        **cols,
        head_energy_mj=np.zeros(len(cols["kind"])),
        device="this-host-1-thread",
        edge="this-host-2-threads",
        meta={"source": "measured:onnxruntime on this host (median of 30 runs)"},
    )
