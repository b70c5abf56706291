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


def _teacher_task(rng: np.random.Generator, n: int, in_dim: int):
    """A generated classification task: labels are the argmax of a fixed random linear teacher."""
    T = rng.standard_normal((in_dim, 10)).astype(np.float32)
    X = rng.standard_normal((n, in_dim)).astype(np.float32)
    return T, X, (X @ T).argmax(1)


@pytest.fixture(scope="session")
def selector_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite store with MLP variants whose accuracy is measured on a generated task
    (`measured:teacher-synth`) and whose whole-model and split latencies are measured in
    onnxruntime on this host (device class: 1 thread; edge class: 2 threads).

    Variant w: a random projection to w units (ReLU), two identity layers, and a last layer
    fitted by least squares to the teacher's logits, so wider variants are more accurate.
    """
    import hashlib

    import onnx

    from predictors.features import onnx_features
    from registry.paths import artifacts_dir
    from registry.store import Store

    url = f"sqlite:///{tmp_path_factory.mktemp('selector') / 'atlas.db'}"
    store = Store.open(url)
    power = {
        "idle_w": 2.2,
        "active_w": 5.4,
        "radio_nj_per_byte": 2265,
        "source": "devices.toml (Raspberry Pi 4; Huang et al. 2012)",
    }
    store.upsert_device_class("host-1t", {"cores": 1, "memory_mb": 1024, "power": power})
    store.upsert_device_class("host-2t", {"cores": 2, "memory_mb": 8192})
    store.upsert_board("dev-1", "host-1t", "127.0.0.1", 22201, "device")
    store.upsert_board("edge-1", "host-2t", "127.0.0.1", 22209, "edge")
    rng = np.random.default_rng(0)
    in_dim = 3 * 32 * 32
    T, X, y = _teacher_task(rng, 3000, in_dim)
    Xtr, Xte, yte = X[:2000], X[2000:], y[2000:]
    art = artifacts_dir()

    def save(model_bytes: bytes) -> tuple[str, str]:
        sha = hashlib.sha256(model_bytes).hexdigest()
        (art / f"{sha}.onnx").write_bytes(model_bytes)
        return f"{sha}.onnx", sha

    for width in (16, 128, 1024):
        R = (rng.standard_normal((in_dim, width)) / np.sqrt(in_dim)).astype(np.float32)
        H = np.maximum(Xtr @ R, 0)
        target = Xtr @ T
        target = target - target.min() + 1.0  # positive: the last ReLU keeps the argmax
        W4 = np.linalg.lstsq(H, target, rcond=None)[0].astype(np.float32)
        eye = np.eye(width, dtype=np.float32)
        weights = [R, eye, eye, W4]
        acc = float((np.maximum(np.maximum(Xte @ R, 0) @ W4, 0).argmax(1) == yte).mean())
        whole = _mlp_part(weights, in_dim)
        path, sha = save(whole)
        feats = onnx_features(onnx.load_from_string(whole)).to_dict()
        vid = f"mlp-w{width}"
        store.add_variant(
            vid,
            "mlp",
            "onnx",
            path,
            int(sum(w.size for w in weights)),
            int(sum(w.size for w in weights)),
            len(whole),
            (1, in_dim),
            "fp32",
            accuracy=acc,
            accuracy_source="measured:teacher-synth",
            features=feats,
        )
        dev_ms = _time_ms(whole, in_dim, 1)
        edge_ms = _time_ms(whole, in_dim, 2)
        store.add_measurement(
            store.measurement_key(sha, "dev-1", {"kind": "model"}),
            "dev-1",
            vid,
            "onnxruntime",
            {"kind": "model"},
            "ok",
            latency_ms=dev_ms,
            device_class="host-1t",
        )
        store.add_measurement(
            store.measurement_key(sha, "edge-1", {"kind": "model"}),
            "edge-1",
            vid,
            "onnxruntime",
            {"kind": "model"},
            "ok",
            latency_ms=edge_ms,
            device_class="host-2t",
        )
        dims = [in_dim, width, width, width, 10]
        for cut in (1, 2, 3):
            head, tail = _mlp_part(weights[:cut], in_dim), _mlp_part(weights[cut:], dims[cut])
            hp, hs = save(head)
            tp, ts = save(tail)
            sp = store.add_split(vid, f"relu{cut}", cut, hp, hs, tp, ts, (1, dims[cut]), "float32", dims[cut] * 4)
            cfg = {"kind": "split", "edge": "edge-1", "codec": "fp32"}
            stats = {
                "head_ms": _time_ms(head, in_dim, 1),
                "tail_ms": _time_ms(tail, dims[cut], 2),
                "encode_ms": 0.0,
                "decode_ms": 0.0,
                "payload_bytes": dims[cut] * 4,
            }
            store.add_measurement(
                store.measurement_key(hs, "dev-1", cfg),
                "dev-1",
                vid,
                "onnxruntime",
                cfg,
                "ok",
                latency_ms=stats["head_ms"] + stats["tail_ms"],
                stats=stats,
                split_id=sp.id,
                device_class="host-1t",
            )
    store.dispose()
    return url
