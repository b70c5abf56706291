"""Measure an artifact's accuracy on the generated task, in the artifact's own runtime
(onnxruntime for .onnx, ai-edge-litert for .tflite). Nothing here runs the torch model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from registry.zoo.dataset import load_dataset

EVAL_BATCH = 100


def session(model: onnx.ModelProto | bytes | str, threads: int = 2):
    """An onnxruntime CPU session over a model (proto, bytes or path), quiet logs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose input/output batch dimension is symbolic, so the test split runs in batches.
    (The artifact itself keeps batch 1; callers fall back to batch 1 if the copy fails.)"""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    del m.graph.value_info[:]
    return m


class OnnxRunner:
    """Runs an ONNX model over many samples (batched when the graph allows it)."""

    def __init__(self, model: onnx.ModelProto, threads: int = 2):
        self._single = session(model, threads)
        self._batched = None
        try:
            s = session(batchable(model), threads)
            probe = np.zeros([2] + list(self._shape(model))[1:], self._dtype(model))
            s.run(None, {s.get_inputs()[0].name: probe})
            self._batched = s
        except Exception:
            self._batched = None
        self.input_name = self._single.get_inputs()[0].name
        self.output_names = [o.name for o in self._single.get_outputs()]

    @staticmethod
    def _shape(model: onnx.ModelProto) -> list[int]:
        inits = {i.name for i in model.graph.initializer}
        vi = next(i for i in model.graph.input if i.name not in inits)
        return [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]

    @staticmethod
    def _dtype(model: onnx.ModelProto):
        inits = {i.name for i in model.graph.initializer}
        vi = next(i for i in model.graph.input if i.name not in inits)
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        chunks: list[list[np.ndarray]] = []
        if self._batched is not None:
            for i in range(0, len(x), EVAL_BATCH):
                chunks.append(self._batched.run(None, {self.input_name: x[i : i + EVAL_BATCH]}))
        else:
            for i in range(len(x)):
                chunks.append(self._single.run(None, {self.input_name: x[i : i + 1]}))
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(self.output_names))]


def run_tflite(path: Path, x: np.ndarray, threads: int = 2) -> list[np.ndarray]:
    """Run a .tflite over samples one by one; int8 I/O is (de)quantised with the model's params."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in outs]
    scale, zp = inp["quantization"]
    for i in range(len(x)):
        xi = x[i : i + 1]
        if np.issubdtype(inp["dtype"], np.integer) and scale:
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / scale) + zp, info.min, info.max)
        it.set_tensor(inp["index"], xi.astype(inp["dtype"]))
        it.invoke()
        for k, o in enumerate(outs):
            y = it.get_tensor(o["index"])
            s, z = o["quantization"]
            if np.issubdtype(o["dtype"], np.integer) and s:
                y = (y.astype(np.float32) - z) * s
            results[k].append(np.array(y, np.float32))
    return [np.concatenate(r) for r in results]


def tflite_output_order(path: Path, expected: Sequence[int]) -> list[int]:
    """Map TFLite outputs to the expected class counts (litert-torch may reorder outputs)."""
    from ai_edge_litert.interpreter import Interpreter

    outs = Interpreter(model_path=str(path)).get_output_details()
    sizes = [int(o["shape"][-1]) for o in outs]
    order: list[int] = []
    for n in expected:
        k = next((i for i, s in enumerate(sizes) if s == n and i not in order), None)
        if k is None:
            raise ValueError(f"no TFLite output with {n} classes (outputs: {sizes})")
        order.append(k)
    return order


def accuracy_from_outputs(outputs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[float]:
    """Top-1 accuracy (fraction) per output."""
    return [float(np.mean(np.argmax(o.reshape(len(y), -1), axis=1) == y)) for o, y in zip(outputs, labels, strict=True)]


def evaluate_artifact(
    path: Path, fmt: str, tasks: Sequence[str], dataset: str, resolution: int, split: str = "test"
) -> dict[str, float]:
    """Accuracy (fraction) per task of an artifact on ``dataset``'s ``split``."""
    data = load_dataset(dataset, split, resolution)
    labels = [data.labels[t] for t in tasks]
    x = np.ascontiguousarray(data.x)
    if fmt == "onnx":
        outs = OnnxRunner(onnx.load(str(path))).run(x)
    else:
        raw = run_tflite(path, x)
        from registry.zoo.dataset import TASKS

        order = tflite_output_order(path, [len(TASKS[t]) for t in tasks])
        outs = [raw[k] for k in order]
    return dict(zip(tasks, accuracy_from_outputs(outs, labels), strict=True))
