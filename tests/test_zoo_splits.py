"""Split points: head∘tail == full in onnxruntime for several families, the ends, idempotent
builds, payload codecs with measured accuracy deltas, and bad artifacts leaving the store alone.

Real torch exports, real onnxruntime, real SQLite. The models are tiny (32x32 inputs, narrow
widths); one multi-task model is trained for two epochs on the generated shapes task so its
codec deltas are measured on that task's held-out split.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from registry.errors import EdgeatlasError, ErrorCode
from registry.store.api import Store
from registry.store.records import Split, Variant

RES = 32
FAMILIES = [("mobilenet_v2", 0.35), ("shufflenet_v2", 0.5), ("squeezenet", 1.0), ("multitask", 0.25)]
EVAL = 100  # held-out images per codec measurement in these tests


@dataclass(frozen=True)
class Built:
    variant: Variant
    splits: list[Split]
    model: onnx.ModelProto


def _export(family: str, width: float, trained: bool) -> bytes:
    import torch

    from registry.zoo.export import export_onnx
    from registry.zoo.families import build_model, output_names

    torch.manual_seed(0)
    model = build_model(family, width, 8)
    if trained:
        _train_briefly(model, family)
    out = Path(os.environ["EDGEATLAS_HOME"]) / f"export-{family}-{trained}.onnx"
    export_onnx(model, RES, output_names(family), out)
    return out.read_bytes()


def _train_briefly(model, family: str, epochs: int = 2, samples: int = 640) -> None:
    """Two short epochs on part of the shapes train split: the logits become task-shaped (colour
    is learnt first), which is all a codec-delta measurement needs; the test stays fast."""
    import torch

    from registry.zoo.dataset import TASKS, load_dataset

    data = load_dataset("shapes-v1", "train", RES)
    tasks = list(TASKS) if family == "multitask" else ["shape"]
    x = torch.from_numpy(np.array(data.x[:samples]))
    ys = {t: torch.from_numpy(data.labels[t][:samples]) for t in tasks}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            out = model(x[idx])
            outs = out if isinstance(out, tuple) else (out,)
            loss = sum(torch.nn.functional.cross_entropy(o, ys[t][idx]) for o, t in zip(outs, tasks, strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _quantized(fp32: bytes, precision: str, home: Path) -> bytes:
    from registry.zoo.dataset import load_dataset
    from registry.zoo.export import quantize_onnx

    src, dst = home / "q-src.onnx", home / f"q-{precision}.onnx"
    src.write_bytes(fp32)
    quantize_onnx(src, dst, precision, np.asarray(load_dataset("shapes-v1", "calib", RES).x[:16]))
    return dst.read_bytes()


def _add_variant(
    store: Store, family: str, width: float, data: bytes, recipe: dict | None, fmt: str = "onnx"
) -> Variant:
    from registry.paths import artifacts_dir
    from registry.zoo.export import onnx_stats

    sha = hashlib.sha256(data).hexdigest()
    (artifacts_dir() / f"{sha}.{fmt}").write_bytes(data)
    try:
        stats = onnx_stats(onnx.load_from_string(data))
    except Exception:  # a junk file (the bad-input tests): nothing to count
        stats = {"params": 0, "macs": 0}
    return store.add_variant(
        sha,
        family,
        fmt,
        f"{sha}.{fmt}",
        stats["params"],
        stats["macs"],
        len(data),
        [1, 3, RES, RES],
        "fp32",
        width=width,
        resolution=RES,
        recipe=recipe,
    )


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One data dir + store for the session: untrained variants of 4 families and a trained
    multi-task variant, each with its splits built once."""
    from registry.zoo.split_build import build_splits

    home = tmp_path_factory.mktemp("zoo-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEATLAS_HOME", str(home))
    try:
        store = Store.open(f"sqlite:///{home / 'zoo.db'}")
        built: dict[str, Built] = {}
        exports: dict[str, bytes] = {}
        for family, width in FAMILIES:
            data = _export(family, width, trained=False)
            exports[family] = data
            v = _add_variant(store, family, width, data, recipe={"weights": "random"})
            splits = build_splits(store, v.id, max_points=6, eval_samples=EVAL)
            built[family] = Built(v, splits, onnx.load_from_string(data))
        for precision in ("int8", "fp16"):  # QDQ int8 (static, calibrated) and fp16 graphs
            data = _quantized(exports["mobilenet_v2"], precision, home)
            v = _add_variant(store, "mobilenet_v2", 0.35, data, recipe={"weights": "random"})
            splits = build_splits(store, v.id, max_points=6, eval_samples=EVAL)
            built[f"mobilenet_v2_{precision}"] = Built(v, splits, onnx.load_from_string(data))
        data = _export("multitask", 0.25, trained=True)
        v = _add_variant(
            store, "multitask", 0.25, data, recipe={"dataset": "shapes-v1", "tasks": ["shape", "colour", "position"]}
        )
        built["trained"] = Built(
            v, build_splits(store, v.id, max_points=5, eval_samples=EVAL), onnx.load_from_string(data)
        )
        yield {"store": store, "built": built, "exports": exports, "home": home}
        store.dispose()
    finally:
        mp.undo()


def _ort(model: onnx.ModelProto | Path, optimize: bool = True):
    import onnxruntime as ort

    data = model.read_bytes() if isinstance(model, Path) else model.SerializeToString()
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _interior(splits: list[Split]) -> list[Split]:
    return [s for s in splits if s.cut_name not in ("input", "output")]


@pytest.mark.parametrize("family", [f for f, _ in FAMILIES] + ["mobilenet_v2_int8", "mobilenet_v2_fp16"])
def test_head_then_tail_matches_full_model(zoo, family: str) -> None:
    """In onnxruntime as a user runs it, graph optimisations on. A QDQ int8 tail starts with the
    cut's QuantizeLinear -> DequantizeLinear pair, so onnxruntime fuses its first conv to the same
    int8 kernel as in the whole model (a bare float input ran that conv in float instead)."""
    from registry.paths import artifacts_dir

    b: Built = zoo["built"][family]
    inner = _interior(b.splits)
    assert len(inner) >= 3, f"{family}: expected several interior cuts, got {[s.cut_name for s in b.splits]}"
    optimize = True
    rtol = 5e-2 if family.endswith("fp16") else 1e-4  # fp16 payloads round what float32 keeps
    full = _ort(b.model, optimize)
    x = np.random.default_rng(7).standard_normal((1, 3, RES, RES)).astype(np.float32)
    ref = full.run(None, {full.get_inputs()[0].name: x})
    for s in inner:
        head_file, tail_file = artifacts_dir() / s.head_path, artifacts_dir() / s.tail_path
        # content-addressed
        assert head_file.name == f"{hashlib.sha256(head_file.read_bytes()).hexdigest()}.onnx" == f"{s.head_sha256}.onnx"
        assert tail_file.name == f"{hashlib.sha256(tail_file.read_bytes()).hexdigest()}.onnx" == f"{s.tail_sha256}.onnx"
        head, tail = _ort(head_file, optimize), _ort(tail_file, optimize)
        assert len(head.get_outputs()) == 1 and len(tail.get_inputs()) == 1
        payload = head.run(None, {head.get_inputs()[0].name: x})[0]
        assert tuple(payload.shape) == s.payload_shape and payload.dtype.name == s.payload_dtype
        assert payload.nbytes == s.payload_bytes
        got = tail.run(None, {tail.get_inputs()[0].name: payload})
        assert len(got) == len(ref)
        for r, g in zip(ref, got, strict=True):
            floor = 2.0**-14 if family.endswith("fp16") else 0.0  # float16 flushes tinier values
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * float(np.max(np.abs(r))) + floor)
        assert s.head_macs is not None and s.tail_macs is not None
        assert s.head_macs + s.tail_macs == b.variant.macs


@pytest.mark.parametrize("family", [f for f, _ in FAMILIES])
def test_ends_are_present_and_ordered(zoo, family: str) -> None:
    b: Built = zoo["built"][family]
    first, last = b.splits[0], b.splits[-1]
    assert (first.cut_name, first.position, first.head_path) == ("input", 0, None)
    assert first.tail_path == b.variant.path and first.tail_sha256 == b.variant.id
    assert first.payload_shape == (1, 3, RES, RES) and first.payload_bytes == 3 * RES * RES * 4
    assert (last.cut_name, last.tail_path, last.head_path) == ("output", None, b.variant.path)
    assert last.position == len(b.model.graph.node)
    positions = [s.position for s in b.splits]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert len(b.splits) <= 6
    assert first.codecs == {} and last.codecs == {}


def test_multitask_cuts_only_in_shared_backbone_and_tail_keeps_every_head(zoo) -> None:
    from registry.paths import artifacts_dir

    for key in ("multitask", "trained"):
        b: Built = zoo["built"][key]
        for s in _interior(b.splits):
            assert s.cut_name.startswith("/backbone/"), s.cut_name
            tail = onnx.load(str(artifacts_dir() / s.tail_path))
            assert [o.name for o in tail.graph.output] == ["shape", "colour", "position"]
        # the all-on-device end carries the three heads' logits
        assert b.splits[-1].payload_bytes == (8 + 6 + 4) * 4


def test_codec_bytes_order_and_pca_basis_ships(zoo) -> None:
    from registry.paths import artifacts_dir
    from registry.zoo.codecs import PcaBasis

    for key, b in zoo["built"].items():
        for s in _interior(b.splits):
            c = s.codecs
            assert set(c) == {"fp32", "fp16", "int8", "pca"}, (key, s.cut_name, set(c))
            if s.payload_bytes >= 1024:  # below that the 60-100 byte JSON header dominates
                assert c["pca"]["bytes"] < c["int8"]["bytes"] < c["fp16"]["bytes"] < c["fp32"]["bytes"], (
                    key,
                    s.cut_name,
                )
            assert min(i["bytes"] for i in c.values()) > 0
            # the fp32 payload is the raw tensor plus the self-describing header
            if not key.endswith(("int8", "fp16")):  # an fp32 graph: fp32 is its raw payload, lossless
                assert 0 < c["fp32"]["bytes"] - s.payload_bytes < 200
                assert c["fp32"]["fidelity"] <= 1e-5 and 0 <= c["int8"]["fidelity"] < 0.1
            path = artifacts_dir() / c["pca"]["basis"]
            raw = path.read_bytes()
            assert hashlib.sha256(raw).hexdigest() == c["pca"]["basis_sha256"] == path.stem
            basis = PcaBasis.from_bytes(raw)
            assert basis.k == c["pca"]["k"] and basis.channels == s.payload_shape[1]


def test_trained_variant_has_measured_deltas(zoo) -> None:
    b: Built = zoo["built"]["trained"]
    inner = _interior(b.splits)
    assert inner
    for s in inner:
        for name, info in s.codecs.items():
            assert info["accuracy_source"] == "measured:shapes-v1", (s.cut_name, name)
            assert info["accuracy_samples"] == EVAL
            d = info["accuracy_delta"]
            assert isinstance(d, float) and math.isfinite(d) and -1.0 <= d <= 1.0
            assert set(info["accuracy_delta_per_task"]) == {"shape", "colour", "position"}
        # fp32 is lossless: head -> fp32 -> tail predicts exactly what the full model predicts
        assert s.codecs["fp32"]["accuracy_delta"] == 0.0
    # a lossy codec changes some logits: its fidelity error is measured, not zero
    assert any(s.codecs["pca"]["fidelity"] > 0 for s in inner)


def test_untrained_variant_has_bytes_but_unknown_accuracy(zoo) -> None:
    for family, _ in FAMILIES:
        for s in _interior(zoo["built"][family].splits):
            for info in s.codecs.values():
                assert info["accuracy_delta"] is None and info["accuracy_source"] == "unknown"
                assert info["bytes"] > 0


def test_build_twice_is_a_noop(zoo) -> None:
    from registry.paths import artifacts_dir
    from registry.zoo.split_build import build_splits

    store: Store = zoo["store"]
    b: Built = zoo["built"]["mobilenet_v2"]
    files = sorted(p.name for p in artifacts_dir().iterdir())
    again = build_splits(store, b.variant.id, max_points=6, eval_samples=EVAL)
    assert again == b.splits == store.list_splits(b.variant.id)
    assert sorted(p.name for p in artifacts_dir().iterdir()) == files


def test_roundtrip_batch_matches_the_codec_sample_by_sample() -> None:
    from registry.zoo import codecs as C
    from registry.zoo.split_build import roundtrip_batch

    rng = np.random.default_rng(3)
    y = (rng.standard_normal((5, 8, 4, 4)) * np.arange(1, 6)[:, None, None, None]).astype(np.float32)
    pca = C.fit_pca(y, k=3)
    for codec in C.CODECS:
        out, size = roundtrip_batch(y, codec, pca)
        for i in range(len(y)):
            ref, n = C.roundtrip(y[i : i + 1], codec, pca)
            np.testing.assert_allclose(out[i : i + 1], ref, rtol=0, atol=2e-3 * float(np.max(np.abs(ref))))
            if i == 0:
                assert n == size


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def mobilenet_bytes(zoo) -> bytes:
    return zoo["exports"]["mobilenet_v2"]


def test_altered_artifact_is_refused_and_nothing_written(ea_home: Path, mobilenet_bytes: bytes) -> None:
    from registry.paths import artifacts_dir
    from registry.zoo.split_build import build_splits

    store = Store.open(f"sqlite:///{ea_home / 'a.db'}")
    v = _add_variant(store, "mobilenet_v2", 0.35, mobilenet_bytes, recipe=None)
    path = artifacts_dir() / v.path
    path.write_bytes(mobilenet_bytes[: len(mobilenet_bytes) // 2])  # truncated on disk
    with pytest.raises(EdgeatlasError) as err:
        build_splits(store, v.id, max_points=4, eval_samples=10)
    assert err.value.code == ErrorCode.BAD_DATA and str(path) in err.value.message
    assert store.list_splits(v.id) == []


def test_invalid_onnx_is_refused_and_nothing_written(ea_home: Path) -> None:
    from registry.zoo.split_build import build_splits

    store = Store.open(f"sqlite:///{ea_home / 'b.db'}")
    junk = b"\x08\x07this is not an onnx model" * 10
    v = _add_variant(store, "user", 1.0, junk, recipe=None)  # its id is its own sha256
    with pytest.raises(EdgeatlasError) as err:
        build_splits(store, v.id)
    assert err.value.code == ErrorCode.BAD_DATA and "not a valid ONNX model" in err.value.message
    assert store.list_splits(v.id) == []


def test_a_cut_that_breaks_head_tail_equality_fails_loudly(
    ea_home: Path, mobilenet_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection (named as such): the extractor returns a tail whose first weight is
    perturbed, so head∘tail != full; the build must fail and write no split row."""
    from onnx import numpy_helper

    from registry.zoo import split_build
    from registry.zoo.splits import SplitExtractor

    real = SplitExtractor.extract

    def corrupted_extract(self, point):
        head, tail = real(self, point)
        init = next(i for i in tail.graph.initializer if len(i.dims) == 4)
        w = numpy_helper.to_array(init) + 1.0
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
        return head, tail

    monkeypatch.setattr(SplitExtractor, "extract", corrupted_extract)
    store = Store.open(f"sqlite:///{ea_home / 'c.db'}")
    v = _add_variant(store, "mobilenet_v2", 0.35, mobilenet_bytes, recipe=None)
    with pytest.raises(EdgeatlasError) as err:
        split_build.build_splits(store, v.id, max_points=4, eval_samples=10)
    assert err.value.code == ErrorCode.BUILD_ERROR and "differs from the full model" in err.value.message
    assert store.list_splits(v.id) == []


def test_max_points_bounds_and_validation(ea_home: Path, mobilenet_bytes: bytes) -> None:
    from registry.zoo.split_build import build_splits

    store = Store.open(f"sqlite:///{ea_home / 'd.db'}")
    v = _add_variant(store, "mobilenet_v2", 0.35, mobilenet_bytes, recipe=None)
    with pytest.raises(EdgeatlasError) as err:
        build_splits(store, v.id, max_points=1)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(EdgeatlasError):
        build_splits(store, v.id, codecs=("zstd",))
    assert store.list_splits(v.id) == []
    ends = build_splits(store, v.id, max_points=2)
    assert [s.cut_name for s in ends] == ["input", "output"]


def test_tflite_variant_has_no_onnx_splits(ea_home: Path) -> None:
    from registry.zoo.split_build import build_splits

    store = Store.open(f"sqlite:///{ea_home / 'e.db'}")
    v = _add_variant(store, "user", 1.0, b"TFL3 not really", recipe=None, fmt="tflite")
    assert build_splits(store, v.id) == []
    assert store.list_splits(v.id) == []


def test_quantized_graphs_cut_where_the_codecs_can_feed_the_tail(zoo) -> None:
    """QDQ int8: the DequantizeLinear output (float) is kept over the uint8 tensor of the same
    run; fp16: the payload is the graph's own float16 tensor; every codec is measured for both."""
    q = _interior(zoo["built"]["mobilenet_v2_int8"].splits)
    assert q and all(s.payload_dtype == "float32" for s in q)
    assert any("DequantizeLinear" in s.cut_name for s in q)
    h = _interior(zoo["built"]["mobilenet_v2_fp16"].splits)
    assert any(s.payload_dtype == "float16" for s in h)
    for s in q + h:
        assert set(s.codecs) == {"fp32", "fp16", "int8", "pca"}


def test_qdq_int8_head_then_tail_is_exact_with_optimisations_on(tmp_path: Path) -> None:
    """A small CNN quantised by onnxruntime (QDQ, as the zoo's int8 variants): at every interior
    cut, head + tail give exactly the whole model's outputs in an optimised session."""
    import onnxruntime as ort
    from fixtures_models import export_tiny_cnn
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from registry.zoo.splits import SplitExtractor, list_split_points

    fp32, int8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    export_tiny_cnn(fp32)
    rng = np.random.default_rng(0)

    class Calib(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(fp32), str(int8), Calib(), quant_format=QuantFormat.QDQ, per_channel=True,
        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
    )  # fmt: skip
    model = onnx.load(str(int8))

    def sess(m: onnx.ModelProto):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    full, ex = sess(model), SplitExtractor(model)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = full.run(None, {"input": x})[0]
    inner = [p for p in list_split_points(model) if not p.is_end]
    assert len(inner) >= 3
    for p in inner:
        head, tail = (sess(m) for m in ex.extract(p))
        payload = head.run(None, {"input": x})[0]
        got = tail.run(None, {tail.get_inputs()[0].name: payload})[0]
        np.testing.assert_array_equal(got, ref, err_msg=p.name)
