"""The drift reference: a fixed small CNN the agent interleaves with a model's timed runs.

A shared or virtual host changes speed from second to second (another tenant, frequency, the
hypervisor), and a measurement taken minutes later can differ by 30 % or more while the model is the
same. With ``bench run --drift-ref`` the agent runs this reference for 10 ms after every 50 ms of the
model (``probes.agent.measure``) and reports its p50 beside the model's: ``stats.ref_p50_ms`` and
``stats.p50_per_ref`` (the model's p50 in reference units), and likewise ``stats.ref_min_ms`` and
``stats.min_per_ref`` for the fastest runs. A drift that slows the host slows both,
so the ratio repeats where the raw p50 does not (README, Benchmarks: the drift reference).

The model is built here, deterministically (fixed opset, IR version and seeded weights), so every
controller makes the same bytes and a board caches it once, like any artifact. Its sha256 is part
of the measurement key of a run that uses it: another reference is another measurement.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

REFERENCE_NAME = "drift-ref-v1"


def build_reference(path: Path) -> Path:
    """Write the reference model to ``path``: 3x3 conv (3->16, 56 px), depthwise 3x3, 1x1 conv
    (16->32), ReLU after each, global average pool and a 10-way Gemm (about 1 ms on one x86 core)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(20261201)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    inits = [w("w1", 16, 3, 3, 3), w("w2", 16, 1, 3, 3), w("w3", 32, 16, 1, 1), w("fc", 32, 10), w("b", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "b"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        REFERENCE_NAME,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 56, 56])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, producer_name="edgeatlas", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return path


def reference_model(directory: Path | None = None) -> tuple[Path, str]:
    """The reference model's file (built once into the cache) and its sha256."""
    if directory is None:
        from registry.paths import cache_dir

        directory = cache_dir()
    path = Path(directory) / f"{REFERENCE_NAME}.onnx"
    if not path.exists():
        build_reference(path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()
