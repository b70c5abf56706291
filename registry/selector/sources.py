"""Adapters: the store (variants, splits, codecs, measurements) + the predictors -> a CandidateTable.

The only module of the selector that knows the store and the predictor library. Per candidate:

- all-on-device: the whole variant on the device; nothing is sent.
- all-on-edge: the raw input (float32 tensor of the variant's input shape) is sent, codec ``fp32``.
- split: head on the device, one row per payload codec recorded for the split
  (``split.codecs[name] = {"bytes" | "payload_bytes", "accuracy_delta", "accuracy_source",
  "encode_ms", "decode_ms"}``); ``fp32`` with ``split.payload_bytes`` when no codec is recorded.

Latency comes, in this order, from a measurement of that exact artifact on the device's (edge's)
class in the store (``measured:<class>``) or from the champion predictor (device class, or
zero-shot from facts / k-shot from probe latencies for an unseen device). Device energy comes
from the predictor's energy model when the class has one (``predicted:class:<C> from`` the
energy_source of its training rows), else from the declared power model
(``estimated:power-model``: active_w x head time), and radio energy from ``radio_nj_per_byte``.
Accuracy is the variant's recorded accuracy plus the codec's measured delta; unknown stays NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from probes.agent import graph_level
from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.candidates import KIND_DEVICE, KIND_EDGE, KIND_SPLIT, CandidateTable


@dataclass(frozen=True)
class DeviceSpec:
    """The device (or edge) a recommendation is for."""

    name: str
    class_name: str | None  # a known device class (measured, predictor trained on it)
    facts: dict[str, Any] = field(default_factory=dict)
    probe_latencies: dict[str, float] | None = None

    @property
    def power(self) -> dict[str, Any]:
        p = self.facts.get("power") or {}
        return dict(p) if isinstance(p, Mapping) else {}

    @property
    def radio_nj_per_byte(self) -> float:
        v = self.power.get("radio_nj_per_byte")
        return float(v) if v is not None else 0.0

    def cache_key(self) -> str:
        return json.dumps([self.name, self.class_name, self.facts, self.probe_latencies], sort_keys=True, default=str)


def read_text(path: str | Path, what: str) -> tuple[Path, str]:
    """(path, its UTF-8 text); a missing file, a directory or bytes that are not UTF-8 are an error
    naming the file."""
    p = Path(path)
    if p.is_dir():
        raise EdgeatlasError(
            f"{what} file {p} is a directory",
            ErrorCode.INVALID_ARGUMENT,
            hint=f"pass the {what} file itself (JSON or TOML), not its folder",
        )
    if not p.is_file():
        raise EdgeatlasError(
            f"{what} file {p} does not exist",
            ErrorCode.NOT_FOUND,
            hint=f"pass an existing {what} file (JSON or TOML)",
        )
    data = p.read_bytes()
    try:
        return p, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EdgeatlasError(
            f"{p}:{line}: {what} file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            ErrorCode.INVALID_CONFIG,
            hint="save it as UTF-8 JSON or TOML (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON or TOML object from a file: ``.toml`` is TOML, ``.json`` JSON, any other name JSON
    first, then TOML."""
    return _read_mapping(path, what)[0]


def _read_mapping(path: str | Path, what: str) -> tuple[dict[str, Any], str]:
    """(:func:`read_mapping`, the file's text)."""
    import tomllib

    p, text = read_text(path, what)
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgeatlasError(
            f"{p}: cannot parse {what}: {exc}", ErrorCode.INVALID_CONFIG, hint="fix the JSON/TOML syntax"
        ) from None
    if not isinstance(data, dict):
        raise EdgeatlasError(
            f"{p}: {what} must be an object/table", ErrorCode.INVALID_CONFIG, hint='write {"key": value, ...}'
        )
    return data, text


def read_device_facts(path: str | Path) -> dict[str, Any]:
    """A ``--device-facts`` file (JSON or TOML), checked against the schema of a devices.toml class
    (registry.config.validate_device_facts): an error names the file, the line, the field and the fix."""
    from registry.config import validate_device_facts

    data, text = _read_mapping(path, "device facts")
    return validate_device_facts(data, path, text)


def read_probe_latencies(source: Mapping[str, Any] | str | Path) -> dict[str, float]:
    """{probe variant id: ms} from a mapping or a JSON/TOML file (optionally under ``latencies_ms``).
    A value that is not a finite number > 0 is refused, naming the file, the id and the value."""
    where = "probe latencies"
    if isinstance(source, str | Path):
        where = f"{source}"
        raw = read_mapping(source, "probe latencies")
        source = raw.get("latencies_ms", raw)
        if not isinstance(source, Mapping):
            raise EdgeatlasError(
                f"{where}: 'latencies_ms' must be a table of {{probe variant id: ms}}",
                ErrorCode.INVALID_CONFIG,
                hint='write {"latencies_ms": {"<probe id>": 12.3, ...}} or {"<probe id>": 12.3, ...}',
            )
    out: dict[str, float] = {}
    for k, v in source.items():
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if not ok:
            raise EdgeatlasError(
                f"{where}: probe {k!r}: latency {v!r} is not a finite number of ms > 0",
                ErrorCode.INVALID_ARGUMENT,
                hint='give each probe model\'s measured p50 in ms, e.g. {"<probe id>": 12.3}; leave out a probe '
                "that was not measured (3 of the probe set are enough)",
            )
        out[str(k)] = float(v)
    return out


def resolve_device(
    store: Any,
    name: str | None = None,
    facts: Mapping[str, Any] | str | Path | None = None,
    probe_latencies: Mapping[str, float] | str | Path | None = None,
    role: str = "device",
) -> DeviceSpec:
    """A board or device-class name from the store, or an unseen device from facts / probe latencies."""
    if name is None and facts is None and probe_latencies is None:
        raise EdgeatlasError(
            f"no {role} given",
            ErrorCode.INVALID_ARGUMENT,
            hint=f"pass --{role} NAME (a board or device class) or --device-facts FILE",
        )
    if isinstance(facts, str | Path):
        facts = read_device_facts(facts)
    elif facts is not None:  # a mapping (the HTTP API's device_facts): the same schema as a file
        from registry.config import validate_device_facts

        if name is None:
            facts = validate_device_facts(facts, "request")
        else:  # facts over a known device's class: each one given is checked, none is required
            given = dict(facts)
            checked = validate_device_facts({"cores": 1, "freq_mhz": 1.0, "memory_mb": 1, **given}, "request")
            facts = {k: checked[k] for k in given}
    if probe_latencies is not None:
        probe_latencies = read_probe_latencies(probe_latencies)
    if name is not None:
        klass = None
        cls_facts: dict[str, Any] = {}
        boards = {b.name: b for b in store.list_boards()}
        classes = {c.name: c for c in store.list_device_classes()}
        if name in boards:
            klass = boards[name].class_name
            if role == "device" and boards[name].role != "device" or role == "edge" and boards[name].role != "edge":
                pass  # a board can be used in either role; the class decides the predictions
        elif name in classes:
            klass = name
        else:
            known = sorted(boards) + sorted(classes)
            raise EdgeatlasError(
                f"unknown {role} {name!r}",
                ErrorCode.NOT_FOUND,
                hint=(
                    f"known boards/classes: {', '.join(known) or 'none (run `edgeatlas fleet up` or `fleet check`)'}; "
                    "for a device nobody has measured, pass --device-facts FILE (and --probe-latencies FILE)"
                ),
            )
        if klass in classes:
            cls_facts = dict(classes[klass].facts or {})
        merged = {**cls_facts, **dict(facts or {})}
        return DeviceSpec(name=name, class_name=klass, facts=merged, probe_latencies=probe_latencies)
    return DeviceSpec(
        name=str((facts or {}).get("name", "unseen-device")),
        class_name=None,
        facts=dict(facts or {}),
        probe_latencies=probe_latencies,
    )


# --- features ---------------------------------------------------------------------------------


def _artifact(path: str) -> Path:
    from registry.paths import artifacts_dir

    p = Path(path)
    return p if p.is_absolute() else artifacts_dir() / p


def onnx_feature_vector(path: str, sha256: str | None) -> np.ndarray:
    """Graph features of an ONNX file (a split head or tail), cached by sha256 in the cache dir."""
    from predictors.features import FEATURES_VERSION, features_from_dict, onnx_features
    from registry.paths import cache_dir

    cache = cache_dir() / "selector-features"
    cache.mkdir(parents=True, exist_ok=True)
    if sha256:
        f = cache / f"{sha256}.json"
        if f.is_file():
            cached = json.loads(f.read_text())
            if cached.get("features_version") == FEATURES_VERSION:  # an older feature set is recomputed
                return features_from_dict(cached, path).vector()
    p = _artifact(path)
    if not p.is_file():
        raise EdgeatlasError(
            f"artifact {p} is missing", ErrorCode.NOT_FOUND, hint="rebuild it with `edgeatlas zoo build`"
        )
    feats = onnx_features(str(p))
    if sha256:
        (cache / f"{sha256}.json").write_text(json.dumps(feats.to_dict()))
    return feats.vector()


# --- latency sources --------------------------------------------------------------------------


@dataclass
class _Side:
    """Latency (and energy) for the rows of one side (device or edge)."""

    ms: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    energy: np.ndarray | None
    energy_lo: np.ndarray | None
    energy_hi: np.ndarray | None
    method: str
    energy_source: str | None = None  # predicted:<method> from <the training rows' energy_source>


def _measured_lookup(
    store: Any, class_name: str | None, graph_opt: str = "all"
) -> tuple[dict[str, tuple[float, float | None]], dict[tuple[int, str], dict[str, Any]]]:
    """Measured whole-model latencies {variant_id: (ms, energy)} and split stats {(split_id, codec): stats},
    at one onnxruntime graph level (a row that names none was measured at the default, ``all``)."""
    if class_name is None:
        return {}, {}
    whole: dict[str, tuple[float, float | None]] = {}
    split: dict[tuple[int, str], dict[str, Any]] = {}
    for m in store.list_measurements(device_class=class_name, status="ok"):
        if m.latency_ms is None or graph_level(m.config) != graph_opt:
            continue
        kind = (m.config or {}).get("kind", "model")
        if m.split_id is None and kind == "model":
            whole[m.variant_id] = (float(m.latency_ms), m.energy_mj)
        elif m.split_id is not None and m.stats:
            split[(m.split_id, str((m.config or {}).get("codec", "fp32")))] = {**m.stats, "energy_mj": m.energy_mj}
    return whole, split


class PredictorSource:
    """Wraps the champion predictor set (loaded once) for vectorised side predictions."""

    def __init__(self, store: Any, name: str = "default"):
        from predictors.training import load_champion

        self.record, self.pset = load_champion(store, name)
        self.version = f"{self.record.name} v{self.record.version}"

    def predict(self, F: np.ndarray, spec: DeviceSpec, variant_ids: list[str | None] | None = None) -> _Side:
        """``variant_ids`` (aligned with ``F``; None for split heads/tails): k-shot uses the reference
        classes' own measurements of those variants (PredictorSet.predict)."""
        from predictors.training import predict_matrix

        known = spec.class_name is not None and spec.class_name in self.pset.classes
        if known:
            p = predict_matrix(self.pset, F, device_class=spec.class_name)
        elif spec.probe_latencies:
            p = predict_matrix(self.pset, F, probe_latencies=spec.probe_latencies, variant_ids=variant_ids)
        elif spec.facts:
            p = predict_matrix(self.pset, F, facts=spec.facts)
        else:
            raise EdgeatlasError(
                f"{spec.name}: the predictor knows nothing about this device",
                ErrorCode.INSUFFICIENT_DATA,
                hint="pass --device-facts FILE (cores, freq_mhz, memory_mb) or --probe-latencies FILE",
            )
        return _Side(
            p.latency_ms, p.latency_lo, p.latency_hi, p.energy_mj, p.energy_lo, p.energy_hi, p.method, p.energy_source
        )


#: k-shot needs at least this many probe models measured on the device (as PredictorSet does)
MIN_PROBES = 3


def _with_stored_probes(
    spec: DeviceSpec, pred: PredictorSource, measured: dict[str, tuple[float, float | None]]
) -> DeviceSpec:
    """k-shot from the store: a board whose class the predictors never saw, with no probe
    latencies given, uses its class's stored whole-model measurements of the probe set."""
    if spec.probe_latencies or spec.class_name is None or spec.class_name in pred.pset.classes:
        return spec
    probes = {vid: measured[vid][0] for vid in pred.pset.probe_ids if vid in measured and measured[vid][0] > 0}
    if len(probes) < MIN_PROBES:
        return spec
    return replace(spec, probe_latencies=probes)


def _graph_level(store: Any, predictor: PredictorSource | None | str) -> str:
    """The onnxruntime graph level the predictor was trained at (``predictors train --graph-opt``):
    measurements are read at the same level, so one table never mixes two runtime configs."""
    if predictor is None:
        return "all"
    rec = predictor.record if isinstance(predictor, PredictorSource) else store.champion(predictor or "default")
    return graph_level(rec.metrics) if rec is not None else "all"


def load_candidates(
    store: Any,
    device: DeviceSpec,
    edge: DeviceSpec,
    predictor: PredictorSource | None | str = "default",
    use_measurements: bool = True,
    variants: list[Any] | None = None,
) -> CandidateTable:
    """Every stored variant x split x codec for this device/edge pair, with predictions."""
    # deployable variants only: imported dataset architectures train the predictors, they are not candidates
    variants = variants if variants is not None else store.list_variants(artifacts_only=True)
    variants = [v for v in variants if v.format == "onnx"] or variants
    if not variants:
        raise EdgeatlasError(
            "the store has no model variants", ErrorCode.NOT_FOUND, hint="build some with `edgeatlas zoo build`"
        )
    level = _graph_level(store, predictor) if use_measurements else "all"
    dev_whole, dev_split = _measured_lookup(store, device.class_name, level) if use_measurements else ({}, {})
    edge_whole, _ = _measured_lookup(store, edge.class_name, level) if use_measurements else ({}, {})

    rows: list[dict[str, Any]] = []  # one per candidate, with the feature-row index on each side
    dev_feats: list[np.ndarray] = []
    edge_feats: list[np.ndarray] = []
    dev_ids: list[str | None] = []  # aligned with the feature rows: a whole variant's id, else None
    edge_ids: list[str | None] = []

    def need(feats: list[np.ndarray], ids: list[str | None], vec: np.ndarray | None, vid: str | None = None) -> int:
        if vec is None:
            return -1
        feats.append(vec)
        ids.append(vid)
        return len(feats) - 1

    from predictors.features import features_from_dict

    for v in variants:
        fv = features_from_dict(v.features, f"variant {v.id}").vector() if v.features else None
        acc = float(v.accuracy) if v.accuracy is not None else math.nan
        in_bytes = float(np.prod(v.input_shape)) * 4.0
        base = {"variant_id": v.id, "family": v.family, "acc_src": v.accuracy_source}
        rows.append(
            {
                **base,
                "split": "all-on-device",
                "codec": "none",
                "kind": KIND_DEVICE,
                "payload": 0.0,
                "acc": acc,
                "dev_meas": dev_whole.get(v.id),
                "dev_row": -1 if v.id in dev_whole else need(dev_feats, dev_ids, fv, v.id),
                "edge_meas": None,
                "edge_row": -1,
                "enc": 0.0,
                "dec": 0.0,
            }
        )
        rows.append(
            {
                **base,
                "split": "all-on-edge",
                "codec": "fp32",
                "kind": KIND_EDGE,
                "payload": in_bytes,
                "acc": acc,
                "dev_meas": None,
                "dev_row": -1,
                "edge_meas": edge_whole.get(v.id),
                "edge_row": -1 if v.id in edge_whole else need(edge_feats, edge_ids, fv, v.id),
                "enc": 0.0,
                "dec": 0.0,
            }
        )
        for s in store.list_splits(v.id):
            if not (s.head_path and s.tail_path):
                continue
            codecs = dict(s.codecs or {}) or {"fp32": {"bytes": s.payload_bytes, "accuracy_delta": 0.0}}
            head_vec = tail_vec = None
            for codec, info in sorted(codecs.items()):
                info = dict(info or {})
                meas = dev_split.get((s.id, codec))
                payload = float(info.get("bytes", info.get("payload_bytes", s.payload_bytes)))
                delta = info.get("accuracy_delta", 0.0 if codec == "fp32" else None)
                row = {
                    **base,
                    "split": s.cut_name,
                    "codec": codec,
                    "kind": KIND_SPLIT,
                    "payload": float(meas["payload_bytes"]) if meas and meas.get("payload_bytes") else payload,
                    "acc": acc + float(delta) if delta is not None else math.nan,
                    "acc_src": (
                        v.accuracy_source
                        if delta in (None, 0.0)
                        else f"{v.accuracy_source}+{info.get('accuracy_source', 'codec delta')}"
                    ),
                    "enc": float((meas or info).get("encode_ms") or 0.0),
                    "dec": float((meas or info).get("decode_ms") or 0.0),
                }
                if meas:
                    row.update(
                        dev_meas=(meas["head_ms"], meas.get("energy_mj")),
                        dev_row=-1,
                        edge_meas=(meas["tail_ms"], None),
                        edge_row=-1,
                    )
                else:
                    if head_vec is None:
                        head_vec = onnx_feature_vector(s.head_path, s.head_sha256)
                        tail_vec = onnx_feature_vector(s.tail_path, s.tail_sha256)
                    row.update(
                        dev_meas=None,
                        dev_row=need(dev_feats, dev_ids, head_vec),
                        edge_meas=None,
                        edge_row=need(edge_feats, edge_ids, tail_vec),
                    )
                rows.append(row)

    missing_feats = [r for r in rows if (r["dev_row"] == -1 and r["dev_meas"] is None and r["kind"] != KIND_EDGE)]
    if missing_feats:
        r = missing_feats[0]
        raise EdgeatlasError(
            f"variant {r['variant_id']} has neither ONNX features nor a measurement on {device.name}",
            ErrorCode.BAD_DATA,
            hint="re-run `edgeatlas zoo build` (it stores features) or measure it with `edgeatlas bench run`",
        )
    pred: PredictorSource | None = None
    if dev_feats or edge_feats:
        pred = predictor if isinstance(predictor, PredictorSource) else PredictorSource(store, predictor or "default")
    if pred is not None:
        device = _with_stored_probes(device, pred, dev_whole)
        edge = _with_stored_probes(edge, pred, edge_whole)
    dev = pred.predict(np.vstack(dev_feats), device, dev_ids) if dev_feats and pred else None
    edg = pred.predict(np.vstack(edge_feats), edge, edge_ids) if edge_feats and pred else None

    n = len(rows)
    col = {k: np.zeros(n) for k in ("head", "head_lo", "head_hi", "tail", "tail_lo", "tail_hi", "en", "en_lo", "en_hi")}
    active_w = device.power.get("active_w")
    energy_sources: set[str] = set()
    energy_known = np.ones(n, dtype=bool)
    for i, r in enumerate(rows):
        if r["dev_meas"] is not None:
            ms, e = r["dev_meas"]
            col["head"][i] = col["head_lo"][i] = col["head_hi"][i] = ms
            if e is not None:
                col["en"][i] = col["en_lo"][i] = col["en_hi"][i] = e
                energy_sources.add("measured")
        elif r["dev_row"] >= 0 and dev is not None:
            j = r["dev_row"]
            col["head"][i], col["head_lo"][i], col["head_hi"][i] = dev.ms[j], dev.lo[j], dev.hi[j]
            if dev.energy is not None:
                col["en"][i], col["en_lo"][i], col["en_hi"][i] = dev.energy[j], dev.energy_lo[j], dev.energy_hi[j]
                energy_sources.add(dev.energy_source or f"predicted:{dev.method}")
        if r["kind"] != KIND_EDGE and col["en"][i] == 0 and col["head"][i] > 0:
            if active_w is not None:  # W x ms = mJ
                w = float(active_w)
                col["en"][i], col["en_lo"][i], col["en_hi"][i] = (
                    w * (col["head"][i] + r["enc"]),
                    w * (col["head_lo"][i] + r["enc"]),
                    w * (col["head_hi"][i] + r["enc"]),
                )
                energy_sources.add("estimated:power-model(active_w x device time)")
            else:
                energy_known[i] = False
        if r["edge_meas"] is not None:
            ms = r["edge_meas"][0]
            col["tail"][i] = col["tail_lo"][i] = col["tail_hi"][i] = ms
        elif r["edge_row"] >= 0 and edg is not None:
            j = r["edge_row"]
            col["tail"][i], col["tail_lo"][i], col["tail_hi"][i] = edg.ms[j], edg.lo[j], edg.hi[j]
    if device.radio_nj_per_byte:
        energy_sources.add("estimated:radio_nj_per_byte")
    methods = sorted({m for m in (dev.method if dev else None, edg.method if edg else None) if m})
    if dev_whole or dev_split or edge_whole:
        methods.append("measured")
    version = (pred.version if pred else "measurements-only") + (f" ({', '.join(methods)})" if methods else "")
    return CandidateTable.from_columns(
        variant_id=[r["variant_id"] for r in rows],
        family=[r["family"] for r in rows],
        split=[r["split"] for r in rows],
        codec=[r["codec"] for r in rows],
        kind=[r["kind"] for r in rows],
        head_ms=np.maximum(col["head"], 0),
        head_ms_lo=np.maximum(col["head_lo"], 0),
        head_ms_hi=np.maximum(col["head_hi"], 0),
        tail_ms=np.maximum(col["tail"], 0),
        tail_ms_lo=np.maximum(col["tail_lo"], 0),
        tail_ms_hi=np.maximum(col["tail_hi"], 0),
        encode_ms=[r["enc"] for r in rows],
        decode_ms=[r["dec"] for r in rows],
        payload_bytes=[r["payload"] for r in rows],
        head_energy_mj=np.maximum(col["en"], 0),
        head_energy_mj_lo=np.maximum(col["en_lo"], 0),
        head_energy_mj_hi=np.maximum(col["en_hi"], 0),
        accuracy=[r["acc"] for r in rows],
        accuracy_source=[r["acc_src"] for r in rows],
        energy_known=energy_known,
        device=device.name,
        edge=edge.name,
        predictor_version=version,
        energy_source=" + ".join(sorted(energy_sources)) or None,
        meta={"methods": methods},
    )
