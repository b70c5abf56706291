"""Export torch models to ONNX / TFLite at a precision, and count params / MACs from the graph.

ONNX: ``torch.onnx.export(dynamo=False)``, opset :data:`OPSET`, batch 1, input ``input``.
- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` (fp16 weights and compute,
  float32 inputs/outputs so every runtime feeds it the same tensors);
- int8 (static): ``onnxruntime.quantization.quantize_static``, QDQ, per-channel int8 weights,
  uint8 activations, calibrated on the generated data set's ``calib`` split;
- int8_dynamic: ``quantize_dynamic`` (int8 weights, activations quantised at run time; fits
  MatMul/Gemm-heavy models, runs ConvInteger for CNNs and is slow there: measured, not guessed).
TFLite: ``litert_torch.convert``; fp16 and int8 with ai-edge-quantizer (fp16: weight-only
FLOAT_CASTING; int8: ``static_wi8_ai8`` calibrated on the same data, int8 inputs/outputs;
int8_dynamic: ``dynamic_wi8_afp32``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from registry.errors import EdgeatlasError, ErrorCode

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8", "int8_dynamic")
FORMATS = ("onnx", "tflite")


@contextlib.contextmanager
def _quiet():
    """Silence the converters' chatter on stdout/stderr (they print progress bars and notices)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def export_onnx(model: torch.nn.Module, resolution: int, out_names: list[str], path: Path) -> None:
    x = torch.zeros(1, 3, resolution, resolution)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                model.eval(),
                (x,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=out_names,
                do_constant_folding=True,
            )
    except Exception as exc:  # torch raises many types here
        raise EdgeatlasError(f"ONNX export failed: {exc}", code=ErrorCode.BUILD_ERROR) from exc


class _Reader:
    """onnxruntime CalibrationDataReader over calibration images."""

    def __init__(self, name: str, images: np.ndarray):
        self._it = iter([{name: images[i : i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - part of the interface
        pass


def quantize_onnx(src: Path, dst: Path, precision: str, calib: np.ndarray) -> dict:
    """Write ``src`` at ``precision`` to ``dst``; returns the recipe details."""
    if precision == "fp32":
        dst.write_bytes(src.read_bytes())
        return {"tool": "torch.onnx.export"}
    try:
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            with _quiet():
                m16 = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
            toposort(m16.graph)  # the converter appends its input casts at the end
            onnx.save(m16, str(dst))
            return {"tool": "onnxruntime.transformers.float16", "keep_io_types": True}
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        if precision == "int8":
            with _quiet():
                quantize_static(
                    str(src),
                    str(dst),
                    _Reader("input", calib),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            return {
                "tool": "onnxruntime.quantization.quantize_static",
                "format": "QDQ",
                "per_channel": True,
                "activations": "uint8",
                "weights": "int8",
                "calibration": {"method": "MinMax", "samples": int(len(calib))},
            }
        if precision == "int8_dynamic":
            with _quiet():
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
            return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "uint8"}
    except EdgeatlasError:
        raise
    except Exception as exc:
        raise EdgeatlasError(f"ONNX {precision} conversion failed: {exc}", code=ErrorCode.BUILD_ERROR) from exc
    raise EdgeatlasError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")


def export_tflite(model: torch.nn.Module, resolution: int, path: Path) -> None:
    """Convert with litert-torch; an op it cannot lower gives an UNSUPPORTED error."""
    try:
        import litert_torch
    except ImportError as exc:  # pragma: no cover - environment
        raise EdgeatlasError(
            "litert-torch is not installed", code=ErrorCode.ENVIRONMENT, hint="pip install litert-torch"
        ) from exc
    x = torch.zeros(1, 3, resolution, resolution)
    try:
        with _quiet():
            litert_torch.convert(model.eval(), (x,)).export(str(path))
    except Exception as exc:
        text = " ".join(str(exc).split())[:400]
        raise EdgeatlasError(
            f"TFLite conversion failed (an op litert-torch cannot lower?): {type(exc).__name__}: {text}",
            code=ErrorCode.UNSUPPORTED,
            hint="use --format onnx for this model, or replace the unsupported op",
        ) from exc
    if not path.exists() or path.stat().st_size == 0:
        raise EdgeatlasError("TFLite conversion wrote no file", code=ErrorCode.BUILD_ERROR)


def quantize_tflite(src: Path, dst: Path, precision: str, calib: np.ndarray) -> dict:
    if precision == "fp32":
        dst.write_bytes(src.read_bytes())
        return {"tool": "litert_torch.convert"}
    try:
        from ai_edge_quantizer import quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        with _quiet():
            if precision == "fp16":
                q = quantizer.Quantizer(str(src))
                q.add_weight_only_config(
                    regex=".*",
                    operation_name=TFLOperationName.ALL_SUPPORTED,
                    num_bits=16,
                    algorithm_key=AlgorithmName.FLOAT_CASTING,
                )
                q.quantize(enable_progress_report=False).export_model(str(dst), overwrite=True)
                return {"tool": "ai_edge_quantizer", "recipe": "weight_only fp16 (FLOAT_CASTING)"}
            if precision == "int8":
                q = quantizer.Quantizer(str(src), recipe.static_wi8_ai8())
                from ai_edge_litert.interpreter import Interpreter

                sigs = Interpreter(str(src)).get_signature_list()
                sig = next(iter(sigs))
                in_name = sigs[sig]["inputs"][0]
                cal = q.calibrate({sig: [{in_name: calib[i : i + 1]} for i in range(len(calib))]})
                q.quantize(cal, enable_progress_report=False).export_model(str(dst), overwrite=True)
                return {
                    "tool": "ai_edge_quantizer",
                    "recipe": "static_wi8_ai8",
                    "io": "int8 (use the input/output quantization parameters)",
                    "calibration": {"samples": int(len(calib))},
                }
            if precision == "int8_dynamic":
                q = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
                q.quantize(enable_progress_report=False).export_model(str(dst), overwrite=True)
                return {"tool": "ai_edge_quantizer", "recipe": "dynamic_wi8_afp32"}
    except Exception as exc:
        raise EdgeatlasError(f"TFLite {precision} quantisation failed: {exc}", code=ErrorCode.BUILD_ERROR) from exc
    raise EdgeatlasError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")


# ---------------------------------------------------------------------------------------------
# Graph statistics


def load_onnx_checked(path: Path, data: bytes | None = None) -> onnx.ModelProto:
    """Load (from ``data`` when given, else the file) and check an ONNX model; a corrupt one
    gives a BAD_DATA error naming ``path``."""
    try:
        model = onnx.load(str(path)) if data is None else onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EdgeatlasError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
            code=ErrorCode.BAD_DATA,
            hint="re-export the model (torch.onnx.export) and check it with onnx.checker",
        ) from exc
    return model


def toposort(graph: onnx.GraphProto) -> None:
    """Sort ``graph.node`` topologically in place (stable: keeps the original order where free)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        progressed = False
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise EdgeatlasError("ONNX graph has a cycle or a dangling input", code=ErrorCode.BAD_DATA)
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _shape(vi) -> list[int] | None:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return dims


def onnx_stats(model: onnx.ModelProto) -> dict:
    """Params (initializer elements, excluding scalars/shape tensors), MACs of Conv/Gemm/MatMul
    (and their integer/QLinear forms), input shape and opset, from the graph."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    shapes: dict[str, list[int] | None] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _shape(vi)
    inits = {i.name: i for i in g.initializer}
    for name, init in inits.items():
        shapes[name] = list(init.dims)
    # quantisation parameters (scales / zero points of Q/DQ nodes) are not model parameters
    qparams = {
        name for node in g.node if node.op_type in ("QuantizeLinear", "DequantizeLinear") for name in node.input[1:]
    }
    params = 0
    for init in g.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        if n > 1 and init.data_type not in (onnx.TensorProto.INT64,) and init.name not in qparams:
            params += n
    macs = 0
    for node in g.node:
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w_idx = 3 if op == "QLinearConv" else 1
            w = shapes.get(node.input[w_idx]) if len(node.input) > w_idx else None
            y = shapes.get(node.output[0])
            if w and y:
                macs += int(np.prod(y)) * int(np.prod(w[1:]))
        elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a_idx, b_idx = (0, 3) if op == "QLinearMatMul" else (0, 1)
            a, b = shapes.get(node.input[a_idx]), shapes.get(node.input[b_idx])
            y = shapes.get(node.output[0])
            if a and y and b:
                k = a[-1] if not (op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)) else a[0]
                macs += int(np.prod(y)) * int(k)
    inp = [i for i in g.input if i.name not in inits]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "params": int(params),
        "macs": int(macs),
        "input_shape": _shape(inp[0]) if inp else None,
        "input_names": [i.name for i in inp],
        "output_names": [o.name for o in g.output],
        "opset": opset,
        "op_types": sorted({n.op_type for n in g.node}),
    }


def initializer_params(model: onnx.ModelProto) -> int:
    return int(sum(numpy_helper.to_array(i).size for i in model.graph.initializer))


def tflite_stats(path: Path) -> dict:
    """Params (constant tensors' elements) and MACs of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with _quiet():
            it = Interpreter(model_path=str(path))
            it.allocate_tensors()
    except Exception as exc:
        raise EdgeatlasError(
            f"{path}: not a loadable TFLite model ({' '.join(str(exc).split())[:200]})",
            code=ErrorCode.BAD_DATA,
            hint="re-convert the model (litert-torch) and check it loads in ai-edge-litert",
        ) from exc
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    produced = {o for op in ops for o in op["outputs"]}
    consumed_inputs = {i for op in ops for i in op["inputs"] if i >= 0}
    params = 0
    for idx in consumed_inputs - produced:
        t = tensors.get(idx)
        if t is None or idx in {d["index"] for d in it.get_input_details()}:
            continue
        n = int(np.prod(t["shape"])) if len(t["shape"]) else 1
        if n > 1:
            params += n
    macs = 0
    for op in ops:
        name = op["op_name"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) > 1:
            w = tensors[op["inputs"][1]]["shape"]
            y = tensors[op["outputs"][0]]["shape"]
            if name == "CONV_2D":
                macs += int(np.prod(y)) * int(np.prod(w[1:]))
            elif name == "DEPTHWISE_CONV_2D":
                macs += int(np.prod(y)) * int(w[1] * w[2])
            else:
                macs += int(np.prod(y)) * int(w[-1])
    inp = it.get_input_details()[0]
    return {
        "params": int(params),
        "macs": int(macs),
        "input_shape": [int(s) for s in inp["shape"]],
        "input_dtype": np.dtype(inp["dtype"]).name,
        "op_types": sorted({op["op_name"] for op in ops}),
    }


def tmpdir(prefix: str = "edgeatlas-zoo-") -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)


__all__ = [
    "FORMATS",
    "OPSET",
    "PRECISIONS",
    "export_onnx",
    "export_tflite",
    "load_onnx_checked",
    "onnx_stats",
    "quantize_onnx",
    "quantize_tflite",
    "tflite_stats",
]
