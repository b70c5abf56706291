"""Importers for external measurement datasets (read in place from ../shared/datasets).

Each loader returns a :class:`Table`: one row per architecture (graph features from the ONNX export,
see nb201.py / fbnet.py), one column per device, latencies in **ms** (NaN = not measured), plus an
optional energy table in mJ. :func:`import_dataset` writes the rows into the store with provenance
``source="dataset:<name>"``.

Evaluation devices (README.md of the datasets) are listed in :data:`EVAL_DEVICES`; the predictors
use them only through the k-shot protocol.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictors.features import FEATURE_NAMES
from registry.errors import EdgeatlasError, ErrorCode

DEFAULT_ROOT = Path(os.environ.get("EDGEATLAS_DATASETS", "/work/shared/datasets"))

EVAL_DEVICES: dict[str, tuple[str, ...]] = {
    "help-nb201": ("pixel2", "raspi4", "eyeriss", "fpga", "gold_6226", "titan_rtx_256"),
    "help-fbnet": ("pixel2", "raspi4", "eyeriss", "fpga", "gold_6226", "titan_rtx_256"),
    "latbench": (
        "embedded-gpu-jetson-nano-fp16",
        "mobile-dsp-snapdragon-855-hexagon-690-int8",
        "mobile-gpu-snapdragon-855-adreno-640-int8",
    ),
    # hwnasbench360: pi5 rows of task cifar100 (all runtimes) are evaluation data
    "hwnasbench360": ("pi5-litert", "pi5-onnx", "pi5-torchmobile"),
    "mobile-ml-benchmark": ("pixel4", "iphonexs"),
}
HELP_META_TEST = {
    "help-nb201": ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"),
    "help-fbnet": ("fpga", "raspi4", "eyeriss"),
}
# HELP README (Tables 3 and 2): Spearman rho, 10 target samples
HELP_PUBLISHED = {
    "help-nb201": {
        "titan_rtx_256": 0.987,
        "gold_6226": 0.989,
        "pixel2": 0.802,
        "raspi4": 0.890,
        "eyeriss": 0.940,
        "fpga": 0.985,
        "mean": 0.932,
    },
    "help-fbnet": {"raspi4": 0.887, "eyeriss": 0.943, "fpga": 0.892, "mean": 0.910},
}
DATASETS = ("help-nb201", "help-fbnet", "latbench", "hwnasbench360", "mobile-ml-benchmark")


@dataclass(frozen=True)
class Table:
    """Latency (ms) [and energy (mJ)] of architectures (rows) on devices (columns)."""

    name: str
    keys: tuple[str, ...]  # variant ids, e.g. "nb201:123"
    index: np.ndarray  # dataset index of each row (nb201 idx, fbnet idx, ...)
    features: np.ndarray  # (n, len(FEATURE_NAMES))
    devices: tuple[str, ...]
    latency_ms: np.ndarray  # (n, n_devices), NaN = missing
    energy_mj: np.ndarray | None = None
    group: np.ndarray | None = None  # e.g. task per row (hwnasbench360)
    meta: dict = field(default_factory=dict)
    extra: np.ndarray | None = None  # (n, e) cell encoding of NB201-space rows (nb201.cell_encoding)

    def inputs(self) -> np.ndarray:
        """What the reference regressors see: graph features [| cell encoding]."""
        return self.features if self.extra is None else np.hstack([self.features, self.extra])

    def column(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise EdgeatlasError(
                f"unknown device {device!r} in dataset {self.name}",
                code=ErrorCode.NOT_FOUND,
                hint=f"choose one of: {', '.join(self.devices)}",
            )
        return self.latency_ms[:, self.devices.index(device)]


def _root(path: str | Path | None, sub: str) -> Path:
    base = Path(path) if path else DEFAULT_ROOT / sub
    if not base.exists():
        raise EdgeatlasError(
            f"dataset directory {base} does not exist",
            code=ErrorCode.NOT_FOUND,
            hint=f"pass --path to the folder holding the {sub} files (see ../shared/datasets/README.md)",
        )
    return base


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise EdgeatlasError(f"{path}: missing dataset file", code=ErrorCode.NOT_FOUND)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    return header, rows


def _float(v: str, where: str) -> float:
    if v == "" or v.lower() == "nan":
        return math.nan
    try:
        return float(v)
    except ValueError as exc:
        raise EdgeatlasError(f"{where}: {v!r} is not a number", code=ErrorCode.BAD_DATA) from exc


def load_help_nb201(path: str | Path | None = None, graph: str = "eager", encoding: bool = False) -> Table:
    from predictors import nb201

    root = _root(path, "help")
    header, rows = _read_csv(root / "nb201_latency_ms.csv")
    devs = header[8:]
    archs = [r[1] for r in rows]
    idx = np.array([int(r[0]) for r in rows])
    lat = np.array(
        [[_float(v, f"nb201_latency_ms.csv line {i + 2}") for v in r[8:]] for i, r in enumerate(rows)], dtype=np.float64
    )
    feats = nb201.features_table(archs, "cifar10", graph=graph)
    keep = ~np.isnan(feats[:, 0])  # drops the 341 disconnected archs
    return Table(
        "help-nb201",
        tuple(f"nb201:{i}" for i in idx[keep]),
        idx[keep],
        feats[keep],
        tuple(devs),
        lat[keep],
        meta={
            "arch_str": [a for a, k in zip(archs, keep, strict=True) if k],
            "excluded_disconnected": int((~keep).sum()),
            "graph": graph,
        },
        extra=nb201.cell_encoding([a for a, k in zip(archs, keep, strict=True) if k], live=graph == "live")
        if encoding
        else None,
    )


def load_help_fbnet(path: str | Path | None = None) -> Table:
    from predictors import fbnet

    root = _root(path, "help")
    header, rows = _read_csv(root / "fbnet_latency_ms.csv")
    devs = header[23:]
    ops = [r[1:23] for r in rows]
    idx = np.array([int(r[0]) for r in rows])
    lat = np.array(
        [[_float(v, f"fbnet_latency_ms.csv line {i + 2}") for v in r[23:]] for i, r in enumerate(rows)],
        dtype=np.float64,
    )
    feats = fbnet.features_table(ops)
    return Table("help-fbnet", tuple(f"fbnet:{i}" for i in idx), idx, feats, tuple(devs), lat, meta={"ops": ops})


def help_reference_indices(space: str, path: str | Path | None = None) -> list[int]:
    """HELP's 10 hardware-embedding reference archs (help/hardware_embedding_index.csv)."""
    root = _root(path, "help")
    _, rows = _read_csv(root / "hardware_embedding_index.csv")
    for r in rows:
        if r[0] == space:
            return [int(x) for x in r[1].split()]
    raise EdgeatlasError(f"no reference indices for space {space!r}", code=ErrorCode.NOT_FOUND)


def load_latbench(path: str | Path | None = None, graph: str = "live", encoding: bool = False) -> Table:
    """LatBench NB201 latencies. ``graph="live"``: the benchmarked cells are pruned (BRP-NAS measured
    only the 15284 connected archs); the choice was made on development devices (bench --tune)."""
    from predictors import nb201

    root = _root(path, "latbench")
    header, rows = _read_csv(root / "latbench_nb201_ms.csv")
    devs = [h[:-3] for h in header[9:]]
    # desktop-gpu-gtx-1080ti-fp32 duplicates desktop-cpu-core-i7-7820x (SOURCE.md): keep one;
    # embedded-tpu-edgetpu-large has unknown provenance (not in the eagle README): not a reference
    drop = {"desktop-gpu-gtx-1080ti-fp32", "embedded-tpu-edgetpu-large"}
    cols = [i for i, d in enumerate(devs) if d not in drop]
    archs = [r[1] for r in rows]
    idx = np.array([int(r[2]) for r in rows])
    lat = np.array(
        [[_float(r[9 + c], f"latbench_nb201_ms.csv line {i + 2}") for c in cols] for i, r in enumerate(rows)],
        dtype=np.float64,
    )
    feats = nb201.features_table(archs, "cifar10", graph=graph)
    keep = ~np.isnan(feats[:, 0])
    kept = [a for a, k in zip(archs, keep, strict=True) if k]
    return Table(
        "latbench",
        tuple(f"nb201:{i}" for i in idx[keep]),
        idx[keep],
        feats[keep],
        tuple(devs[c] for c in cols),
        lat[keep],
        meta={"dropped_duplicate_devices": sorted(drop), "graph": graph},
        extra=nb201.cell_encoding(kept, live=graph == "live") if encoding else None,
    )


def load_hwnasbench360(path: str | Path | None = None, graph: str = "live", encoding: bool = True) -> Table:
    """Rows = (arch, task); devices = '<device>-<framework>'; energy (pi5 only) in a parallel table.

    ``graph="live"``: HW-NAS-Bench-360 builds pruned cells (isomorphic archs share one measurement);
    on the development rows (pi5 ninapro) live features rank latency at Spearman ~0.93-0.97 against
    ~0.83 for the eager graph (bench/predictor_quality.py --tune)."""
    from predictors import nb201

    root = _root(path, "hwnasbench360")
    header, rows = _read_csv(root / "dataset.csv.gz")
    col = {h: i for i, h in enumerate(header)}
    devs = sorted({f"{r[col['device']]}-{r[col['framework']]}" for r in rows})
    keys: dict[tuple[int, str], int] = {}
    arch_of: dict[tuple[int, str], str] = {}
    for r in rows:
        k = (int(r[col["arch_idx"]]), r[col["task"]])
        if k not in keys:
            keys[k] = len(keys)
            arch_of[k] = r[col["arch_str"]]
    n = len(keys)
    lat = np.full((n, len(devs)), np.nan)
    en = np.full((n, len(devs)), np.nan)
    for i, r in enumerate(rows):
        k = (int(r[col["arch_idx"]]), r[col["task"]])
        d = devs.index(f"{r[col['device']]}-{r[col['framework']]}")
        lat[keys[k], d] = _float(r[col["lat_ms_median"]], f"dataset.csv.gz line {i + 2}")
        en[keys[k], d] = _float(r[col["energy_mj"]], f"dataset.csv.gz line {i + 2}")
    order = sorted(keys, key=lambda k: keys[k])
    tasks = np.array([k[1] for k in order])
    feats = np.full((n, len(FEATURE_NAMES)), np.nan)
    for task in sorted(set(tasks)):
        m = tasks == task
        feats[m] = nb201.features_table([arch_of[k] for k in order if k[1] == task], task, graph=graph)
    keep = ~np.isnan(feats[:, 0])
    enc = (
        nb201.cell_encoding([arch_of[k] for k, kp in zip(order, keep, strict=True) if kp], live=graph == "live")
        if encoding
        else None
    )
    return Table(
        "hwnasbench360",
        tuple(f"nb201-{k[1]}:{k[0]}" for k, kp in zip(order, keep, strict=True) if kp),
        np.array([k[0] for k in order])[keep],
        feats[keep],
        tuple(devs),
        lat[keep],
        energy_mj=en[keep],
        group=tasks[keep],
        meta={"graph": graph},
        extra=enc,
    )


# --------------------------------------------------------------------------- mobile-ml-benchmark


def _mmb_layer_features(layers: list[tuple[str, dict]]) -> np.ndarray:
    """Features from a TFLite layer list (CONV_2D, DEPTHWISE_CONV_2D, ...), same names as the ONNX ones."""
    v = dict.fromkeys(FEATURE_NAMES, 0.0)
    for op, f in layers:
        out = f.get("Output_shape") or [1, 1, 1, 1]
        out_elems = float(np.prod(out))
        k = f.get("Kernel") or [1, 1]
        k = k if isinstance(k, list | tuple) else [k, k]
        cin = float(f.get("Input_channel") or 1)
        group = float(f.get("Group") or 1)
        flops = float(f.get("FLOPS") or 0.0)
        if op in ("CONV_2D", "CONV_2D_GROUP", "DEPTHWISE_CONV_2D"):
            kk = float(np.prod(k))
            if op == "DEPTHWISE_CONV_2D":
                cat, macs, params = "depthwise", out_elems * kk, float(out[-1]) * kk
            else:
                cat = "pointwise" if kk == 1 and group == 1 else "conv"
                macs = out_elems * kk * cin / group
                params = float(out[-1]) * kk * cin / group
        elif op == "FULLY_CONNECTED":
            cat, macs, params = "fc", out_elems * cin, out_elems * cin
        elif op in ("MEAN", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            cat, macs, params = "pool", flops or out_elems, 0.0
        elif op == "CONCATENATION":
            cat, macs, params = "concat", 0.0, 0.0
        else:
            cat, macs, params = "other", flops, 0.0
        v[f"{cat}_count"] += 1
        v[f"{cat}_macs"] += macs
        v[f"{cat}_params"] += params
        v[f"{cat}_out_elems"] += out_elems
        if cat in ("conv", "depthwise", "pointwise", "fc"):
            v["macs"] += macs
        v["params"] += params
        v["weight_bytes"] += 4 * params
        v["act_bytes"] += 4 * out_elems
        v["n_nodes"] += 1
        v["depth"] += 1
    first = layers[0][1] if layers else {}
    ins = first.get("Input_shape") or [1, 224, 224, 3]
    v["batch"], v["input_h"], v["input_w"], v["input_c"] = 1.0, float(ins[1]), float(ins[2]), float(ins[3])
    v["input_elems"] = float(np.prod(ins))
    v["precision_fp32"] = 1.0
    return np.array([v[n] for n in FEATURE_NAMES])


def load_mobile_ml_benchmark(path: str | Path | None = None, framework: str = "tflite") -> Table:
    """Real CNNs: features from the per-op layer lists (GPU op files), e2e latency (us -> ms)."""
    root = _root(path, "mobile-ml-benchmark")
    raw = root / "raw" if (root / "raw").exists() else root
    h_ops, ops_rows = _read_csv(raw / f"{framework}_cnn_ops_gpu.csv")
    layers: dict[str, list[tuple[str, dict]]] = {}
    for i, r in enumerate(ops_rows):
        try:
            feat = ast.literal_eval(r[2])
        except (ValueError, SyntaxError) as exc:
            raise EdgeatlasError(
                f"{framework}_cnn_ops_gpu.csv line {i + 2}: bad feature dict", code=ErrorCode.BAD_DATA
            ) from exc
        layers.setdefault(r[0], []).append((r[1], feat))
    header, rows = _read_csv(raw / f"{framework}_cnn_e2e.csv")
    mean_cols = [(i, h[: -len("|mean")]) for i, h in enumerate(header) if h.endswith("|mean")]
    models = [r[0] for r in rows if r[0] in layers]
    lat = np.array(
        [[_float(r[i], f"{framework}_cnn_e2e.csv") / 1000.0 for i, _ in mean_cols] for r in rows if r[0] in layers]
    )
    feats = np.array([_mmb_layer_features(layers[m]) for m in models])
    return Table(
        "mobile-ml-benchmark",
        tuple(f"mmb-{framework}:{m}" for m in models),
        np.arange(len(models)),
        feats,
        tuple(d for _, d in mean_cols),
        lat,
        meta={"units": "us in the files, ms here"},
    )


LOADERS: dict[str, Callable[..., Table]] = {
    "help-nb201": load_help_nb201,
    "help-fbnet": load_help_fbnet,
    "latbench": load_latbench,
    "hwnasbench360": load_hwnasbench360,
    "mobile-ml-benchmark": load_mobile_ml_benchmark,
}
ALIASES = {"help": "help-nb201", "nb201": "help-nb201", "fbnet": "help-fbnet", "mmb": "mobile-ml-benchmark"}


def load(name: str, path: str | Path | None = None) -> Table:
    key = ALIASES.get(name, name)
    if key not in LOADERS:
        raise EdgeatlasError(
            f"unknown dataset {name!r}", code=ErrorCode.NOT_FOUND, hint=f"choose one of: {', '.join(DATASETS)}"
        )
    return LOADERS[key](path)


def import_dataset(
    store, name: str, path: str | Path | None = None, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Write a dataset's rows into the store: device classes, variants (with graph features) and
    measurements with ``source="dataset:<name>"``. Idempotent (measurement keys are content hashes)."""
    table = load(name, path)
    source = f"dataset:{table.name}"
    for d in table.devices:
        store.upsert_device_class(
            f"{table.name}/{d}",
            {"dataset": table.name, "device": d, "evaluation": d in EVAL_DEVICES.get(table.name, ())},
        )
    for key, fv in zip(table.keys, table.features, strict=True):
        feats = {n: float(x) for n, x in zip(FEATURE_NAMES, fv, strict=True)}
        store.add_variant(
            id=key,
            family=key.split(":")[0],
            format="onnx",
            path="",
            params=int(feats["params"]),
            macs=int(feats["macs"]),
            size_bytes=int(feats["weight_bytes"]),
            input_shape=(1, int(feats["input_c"]), int(feats["input_h"]), int(feats["input_w"])),
            precision="fp32",
            features=feats,
        )
    rows: list[dict] = []
    n_total = int(np.isfinite(table.latency_ms).sum())
    done = 0
    for j, d in enumerate(table.devices):
        board = f"{table.name}/{d}"
        for i, key in enumerate(table.keys):
            lat = table.latency_ms[i, j]
            if not np.isfinite(lat):
                continue
            en = table.energy_mj[i, j] if table.energy_mj is not None else math.nan
            h = hashlib.sha256(f"{source}|{key}|{d}".encode()).hexdigest()
            rows.append(
                {
                    "key": h,
                    "board": board,
                    "variant_id": key,
                    "runtime": d,
                    "config": {"dataset": table.name},
                    "status": "ok",
                    "latency_ms": float(lat),
                    "energy_mj": float(en) if np.isfinite(en) else None,
                    "energy_source": f"measured:{table.name}" if np.isfinite(en) else None,
                    "device_class": board,
                    "source": source,
                }
            )
            if len(rows) >= 20000:
                store.add_measurements_bulk(rows)
                done += len(rows)
                rows = []
                if progress:
                    progress(done, n_total)
    if rows:
        store.add_measurements_bulk(rows)
        done += len(rows)
        if progress:
            progress(done, n_total)
    return {"dataset": table.name, "variants": len(table.keys), "devices": len(table.devices), "measurements": done}


def split_tasks(table: Table, tasks: Sequence[str]) -> np.ndarray:
    return np.isin(table.group, list(tasks)) if table.group is not None else np.ones(len(table.keys), bool)
