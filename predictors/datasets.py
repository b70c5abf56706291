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
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictors.features import FEATURE_NAMES, add_kernel_terms, feature_dict
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
    # hwnasbench360: pi5 rows of task cifar100 (all runtimes) are evaluation data (EVAL_GROUPS)
    "hwnasbench360": ("pi5-litert", "pi5-onnx", "pi5-torchmobile"),
    # mobile-ml-benchmark: extended below with every other configuration of both (MMB_EVAL_CONFIGS)
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
# Where only some row groups (tasks) of an evaluation device are evaluation data: those groups. The
# device's other groups are development data (the datasets README: pi5 on ninapro and darcy).
EVAL_GROUPS: dict[str, tuple[str, ...]] = {"hwnasbench360": ("cifar100",)}

DATASETS = ("help-nb201", "help-fbnet", "latbench", "hwnasbench360", "mobile-ml-benchmark")


@dataclass(frozen=True)
class Table:
    """Latency (ms) [and energy (mJ)] of architectures (rows) on devices (columns)."""

    name: str
    keys: tuple[str, ...]  # variant ids, e.g. "nb201:123" (nb201_key)
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

    def op_counts(self) -> np.ndarray | None:
        """NB201-space rows: (n, 4) cell-edge counts of each op (:func:`predictors.nb201.op_counts`),
        as built for the features (``graph``); None for other spaces."""
        archs = self.meta.get("arch_str")
        if archs is None:
            return None
        from predictors import nb201

        return nb201.op_counts(archs, live=self.meta.get("graph") == "live")

    def column(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise EdgeatlasError(
                f"unknown device {device!r} in dataset {self.name}",
                code=ErrorCode.NOT_FOUND,
                hint=f"choose one of: {', '.join(self.devices)}",
            )
        return self.latency_ms[:, self.devices.index(device)]


#: The files of each dataset folder (../shared/datasets/README.md), named in the fix of a missing one.
FOLDER_FILES: dict[str, tuple[str, ...]] = {
    "help": ("nb201_latency_ms.csv", "fbnet_latency_ms.csv", "hardware_embedding_index.csv"),
    "latbench": ("latbench_nb201_ms.csv",),
    "hwnasbench360": ("dataset.csv.gz",),
    "mobile-ml-benchmark": ("raw/tflite_cnn_ops_gpu.csv", "raw/tflite_cnn_e2e.csv"),
}


def _folder_hint(sub: str) -> str:
    files = ", ".join(FOLDER_FILES.get(sub, ()))
    return (
        f"point --path at the {sub} folder of the datasets, e.g. --path {DEFAULT_ROOT / sub}"
        + (f" (it holds {files})" if files else "")
        + f"; see {DEFAULT_ROOT / 'README.md'}"
    )


def _root(path: str | Path | None, sub: str) -> Path:
    base = Path(path) if path else DEFAULT_ROOT / sub
    if not base.exists():
        raise EdgeatlasError(
            f"dataset directory {base} does not exist", code=ErrorCode.NOT_FOUND, hint=_folder_hint(sub)
        )
    if not base.is_dir():
        raise EdgeatlasError(
            f"dataset directory {base} is a file, not a folder", code=ErrorCode.INVALID_ARGUMENT, hint=_folder_hint(sub)
        )
    return base


@dataclass(frozen=True)
class Csv:
    """A dataset CSV file read whole: its header, its rows (blank lines left out) and the line each
    row is on, so that a bad value is reported by file, line and column with a fix."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def where(self, i: int, j: int | None = None) -> str:
        """``<file> line N [column 'name']`` of row ``i`` (column ``j``)."""
        col = f" column {self.header[j]!r}" if j is not None and 0 <= j < len(self.header) else ""
        return f"{self.path} line {self.lines[i]}{col}"

    def column(self, name: str) -> int:
        """The index of column ``name``; a file without it is an error naming the header."""
        if name not in self.header:
            raise EdgeatlasError(
                f"{self.path} line 1: no column {name!r} in the header",
                code=ErrorCode.BAD_DATA,
                hint=f"the header must name {name!r}; is --path the right dataset's folder? "
                f"(header: {', '.join(self.header[:12])}{' ...' if len(self.header) > 12 else ''})",
            )
        return self.header.index(name)

    def number(self, i: int, j: int) -> float:
        """The number at row ``i``, column ``j`` ("" and "nan": NaN, a measurement missing)."""
        v = self.rows[i][j]
        if v == "" or v.lower() == "nan":
            return math.nan
        try:
            return float(v)
        except ValueError:
            raise EdgeatlasError(
                f"{self.where(i, j)}: {v!r} is not a number",
                code=ErrorCode.BAD_DATA,
                hint=f"write a number in column {self.header[j]!r} on that line (or leave it empty / nan for a "
                "missing measurement), or copy the file again from its source",
            ) from None

    def measurement(self, i: int, j: int) -> float:
        """:meth:`number` for a latency or energy: NaN (not measured) or > 0. A zero or negative
        value would be stored and then stop every training of that class."""
        v = self.number(i, j)
        if v <= 0:
            raise EdgeatlasError(
                f"{self.where(i, j)}: {self.rows[i][j]!r} is not a positive measurement",
                code=ErrorCode.BAD_DATA,
                hint=f"a latency or energy in column {self.header[j]!r} must be > 0; leave it empty (or nan) if "
                "that device did not measure it, or copy the file again from its source",
            )
        return v

    def whole(self, i: int, j: int) -> int:
        """The whole number at row ``i``, column ``j``."""
        v = self.rows[i][j].strip()
        if not v.isdigit():
            raise EdgeatlasError(
                f"{self.where(i, j)}: {v!r} is not a whole number",
                code=ErrorCode.BAD_DATA,
                hint=f"write the index as a whole number in column {self.header[j]!r} on that line, or copy the "
                "file again from its source",
            )
        return int(v)


def _check_rows(f: Csv, parse: Callable[[int], object], col: int | None = None) -> None:
    """``parse(i)`` of every row; its error (a bad arch string) names the file, line and column."""
    for i in range(len(f.rows)):
        try:
            parse(i)
        except EdgeatlasError as exc:
            raise EdgeatlasError(
                f"{f.where(i, col)}: {exc.message}",
                code=ErrorCode.BAD_DATA,
                hint=f"{exc.hint + '; ' if exc.hint else ''}fix that line, or copy the file again from its source",
            ) from None


def _read_csv(path: Path, sub: str) -> Csv:
    """Read a dataset CSV (``.gz`` too) of the folder ``sub``. A missing file, one that is not
    UTF-8, an empty one and a row whose column count is not the header's are errors naming the
    file (and the line) and the fix."""
    if path.is_dir():
        raise EdgeatlasError(
            f"{path}: is a directory, not a dataset file", code=ErrorCode.BAD_DATA, hint=_folder_hint(sub)
        )
    if not path.exists():
        raise EdgeatlasError(f"{path}: missing dataset file", code=ErrorCode.NOT_FOUND, hint=_folder_hint(sub))
    again = "copy the file again from its source (SOURCE.md in its folder)"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise EdgeatlasError(f"{path}: cannot read: {exc}", code=ErrorCode.BAD_DATA, hint=again) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EdgeatlasError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})",
            code=ErrorCode.BAD_DATA,
            hint=f"save it as UTF-8, or {again}",
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    end = 0  # the last line of the record read before (a quoted field may span lines)
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:
                continue  # a blank line
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                at = f"line {start}" if start == end else f"lines {start}-{end}"
                raise EdgeatlasError(
                    f"{path} {at}: {len(row)} columns, the header has {len(header)}",
                    code=ErrorCode.BAD_DATA,
                    hint=f"fix or delete that line (a cut-off copy? {again})",
                )
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        raise EdgeatlasError(f"{path} line {end + 1}: not CSV: {exc}", code=ErrorCode.BAD_DATA, hint=again) from None
    if header is None:
        raise EdgeatlasError(f"{path}: the file is empty (no header line)", code=ErrorCode.BAD_DATA, hint=again)
    return Csv(path, header, rows, lines)


def nb201_key(index: int, graph: str) -> str:
    """The variant id of NB201 arch ``index`` as built with ``graph``: ``nb201:<i>`` for the eager
    graph (HELP's), ``nb201-live:<i>`` for the pruned cells (LatBench's). The two graphs are
    different networks with different features, so one id must not hold both."""
    return f"nb201:{index}" if graph == "eager" else f"nb201-{graph}:{index}"


def legacy_ids(keys: Sequence[str]) -> list[str]:
    """The ids an older edgeatlas gave these variants: ``nb201:<i>`` for ``nb201-live:<i>``."""
    return ["nb201:" + k.split(":", 1)[1] for k in keys if k.startswith("nb201-live:")]


def load_help_nb201(path: str | Path | None = None, graph: str = "eager", encoding: bool = False) -> Table:
    from predictors import nb201

    root = _root(path, "help")
    f = _read_csv(root / "nb201_latency_ms.csv", "help")
    ci, ca = f.column("nb201_idx"), f.column("arch_str")
    devs = f.header[8:]
    archs = [r[ca] for r in f.rows]
    _check_rows(f, lambda i: nb201.parse_arch(archs[i]), ca)
    idx = np.array([f.whole(i, ci) for i in range(len(f.rows))], dtype=np.int64)
    lat = np.array(
        [[f.measurement(i, j) for j in range(8, len(f.header))] for i in range(len(f.rows))], dtype=np.float64
    ).reshape(len(f.rows), len(devs))
    feats = nb201.features_table(archs, "cifar10", graph=graph)
    keep = ~np.isnan(feats[:, 0])  # drops the 341 disconnected archs
    return Table(
        "help-nb201",
        tuple(nb201_key(int(i), graph) for i in idx[keep]),
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
    f = _read_csv(root / "fbnet_latency_ms.csv", "help")
    ci = f.column("fbnet_idx")
    devs = f.header[23:]
    ops = [r[1:23] for r in f.rows]
    _check_rows(f, lambda i: fbnet.parse_ops(ops[i]))
    idx = np.array([f.whole(i, ci) for i in range(len(f.rows))], dtype=np.int64)
    lat = np.array(
        [[f.measurement(i, j) for j in range(23, len(f.header))] for i in range(len(f.rows))], dtype=np.float64
    ).reshape(len(f.rows), len(devs))
    feats = fbnet.features_table(ops)
    return Table("help-fbnet", tuple(f"fbnet:{i}" for i in idx), idx, feats, tuple(devs), lat, meta={"ops": ops})


def help_reference_indices(space: str, path: str | Path | None = None) -> list[int]:
    """HELP's 10 hardware-embedding reference archs (help/hardware_embedding_index.csv)."""
    root = _root(path, "help")
    f = _read_csv(root / "hardware_embedding_index.csv", "help")
    cs, cr = f.column("space"), f.column("reference_indices")
    for i, r in enumerate(f.rows):
        if r[cs] == space:
            if not all(x.isdigit() for x in r[cr].split()):
                raise EdgeatlasError(
                    f"{f.where(i, cr)}: {r[cr]!r} is not a list of arch indices",
                    code=ErrorCode.BAD_DATA,
                    hint="write the indices as whole numbers separated by spaces, e.g. 11982 431 55",
                )
            return [int(x) for x in r[cr].split()]
    raise EdgeatlasError(
        f"{f.path}: no reference indices for space {space!r}",
        code=ErrorCode.NOT_FOUND,
        hint=f"add a line {space},<indices separated by spaces> (HELP's file has nb201 and fbnet)",
    )


def load_latbench(path: str | Path | None = None, graph: str = "live", encoding: bool = False) -> Table:
    """LatBench NB201 latencies. ``graph="live"``: the benchmarked cells are pruned (BRP-NAS measured
    only the 15284 connected archs); the choice was made on development devices (bench --tune)."""
    from predictors import nb201

    root = _root(path, "latbench")
    f = _read_csv(root / "latbench_nb201_ms.csv", "latbench")
    ca, ci = f.column("arch_str"), f.column("nb201_idx")
    devs = [h[:-3] for h in f.header[9:]]
    # desktop-gpu-gtx-1080ti-fp32 duplicates desktop-cpu-core-i7-7820x (SOURCE.md): keep one;
    # embedded-tpu-edgetpu-large has unknown provenance (not in the eagle README): not a reference
    drop = {"desktop-gpu-gtx-1080ti-fp32", "embedded-tpu-edgetpu-large"}
    cols = [i for i, d in enumerate(devs) if d not in drop]
    archs = [r[ca] for r in f.rows]
    _check_rows(f, lambda i: nb201.parse_arch(archs[i]), ca)
    idx = np.array([f.whole(i, ci) for i in range(len(f.rows))], dtype=np.int64)
    lat = np.array([[f.measurement(i, 9 + c) for c in cols] for i in range(len(f.rows))], dtype=np.float64).reshape(
        len(f.rows), len(cols)
    )
    feats = nb201.features_table(archs, "cifar10", graph=graph)
    keep = ~np.isnan(feats[:, 0])
    kept = [a for a, k in zip(archs, keep, strict=True) if k]
    return Table(
        "latbench",
        tuple(nb201_key(int(i), graph) for i in idx[keep]),
        idx[keep],
        feats[keep],
        tuple(devs[c] for c in cols),
        lat[keep],
        meta={"dropped_duplicate_devices": sorted(drop), "graph": graph, "arch_str": kept},
        extra=nb201.cell_encoding(kept, live=graph == "live") if encoding else None,
    )


def load_hwnasbench360(path: str | Path | None = None, graph: str = "live", encoding: bool = True) -> Table:
    """Rows = (arch, task); devices = '<device>-<framework>'; energy (pi5 only) in a parallel table.

    ``graph="live"``: HW-NAS-Bench-360 builds pruned cells (isomorphic archs share one measurement);
    on the development rows (pi5 ninapro) live features rank latency at Spearman ~0.93-0.97 against
    ~0.83 for the eager graph (bench/predictor_quality.py --tune)."""
    from predictors import nb201

    root = _root(path, "hwnasbench360")
    f = _read_csv(root / "dataset.csv.gz", "hwnasbench360")
    rows = f.rows
    col = {
        h: f.column(h) for h in ("arch_idx", "arch_str", "device", "framework", "task", "lat_ms_median", "energy_mj")
    }
    parsed: set[str] = set()

    def check_arch(i: int) -> None:
        if rows[i][col["arch_str"]] not in parsed:
            nb201.parse_arch(rows[i][col["arch_str"]])
            parsed.add(rows[i][col["arch_str"]])

    _check_rows(f, check_arch, col["arch_str"])
    devs = sorted({f"{r[col['device']]}-{r[col['framework']]}" for r in rows})
    keys: dict[tuple[int, str], int] = {}
    arch_of: dict[tuple[int, str], str] = {}
    for i, r in enumerate(rows):
        k = (f.whole(i, col["arch_idx"]), r[col["task"]])
        if k not in keys:
            keys[k] = len(keys)
            arch_of[k] = r[col["arch_str"]]
    n = len(keys)
    lat = np.full((n, len(devs)), np.nan)
    en = np.full((n, len(devs)), np.nan)
    for i, r in enumerate(rows):
        k = (int(r[col["arch_idx"]]), r[col["task"]])
        d = devs.index(f"{r[col['device']]}-{r[col['framework']]}")
        lat[keys[k], d] = f.measurement(i, col["lat_ms_median"])
        en[keys[k], d] = f.measurement(i, col["energy_mj"])
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

#: The configuration a bare device name stands for: one large CPU core, fp32 (SOURCE.md's anchor,
#: "mobilenetv2_w1, Pixel 4, 1 large core, fp32 TFLite"). Other configurations are the columns
#: ``<device>|<cores>|<float|quant>``.
MMB_DEFAULT_CONFIG = "1large|float"
#: Configurations of the evaluation devices in tflite_cnn_e2e.csv: all of them are evaluation data.
MMB_EVAL_CONFIGS: dict[str, tuple[str, ...]] = {
    "pixel4": tuple(
        f"{c}|{p}"
        for p in ("float", "quant")
        for c in ("1large", "1med", "2med", "3med", "1large1med", "1small", "2small", "3small", "4small")
    )
    + ("gpu|float",),
    "iphonexs": tuple(
        f"{c}|{p}" for p in ("float", "quant") for c in ("1large", "2large", "1small", "2small", "3small", "4small")
    )
    + ("gpu|float",),
}
EVAL_DEVICES["mobile-ml-benchmark"] = (
    *MMB_EVAL_CONFIGS,
    *(f"{d}|{c}" for d, cs in MMB_EVAL_CONFIGS.items() for c in cs if c != MMB_DEFAULT_CONFIG),
)

#: Fields of the ``feature`` dict each TFLite op must give as a whole number; the others may be "-".
_MMB_REQUIRED: dict[str, tuple[str, ...]] = {
    "CONV_2D": ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "Filter", "Group", "FLOPS"),
    "CONV_2D_GROUP": ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "Filter", "Group", "FLOPS"),
    "DEPTHWISE_CONV_2D": ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "Filter", "FLOPS"),
    "FULLY_CONNECTED": ("Input_channel", "Filter", "FLOPS"),
    "MEAN": ("Input_shape", "Input_channel", "Output_shape", "FLOPS"),
    "MAX_POOL_2D": ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "FLOPS"),
    "AVERAGE_POOL_2D": ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "FLOPS"),
    "CONCATENATION": ("Input_shape", "Input_channel", "Output_shape", "Kernel", "Filter"),
}
_MMB_FIELDS = ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "Filter", "Group", "FLOPS")


@dataclass(frozen=True)
class MmbLayer:
    """One row of ``<framework>_cnn_ops_gpu.csv``. Feature maps are square: ``in_hw``/``out_hw`` are
    the side (H = W); ``in_hw`` is the op's own input, so it includes explicit padding (a 3x3 depthwise
    conv with output 112 reads 114)."""

    op: str
    in_hw: int
    in_c: int
    out_hw: int
    out_c: int
    kernel: int
    stride: int
    group: int


def _mmb_int(feat: dict, key: str, required: bool, where: str, op: str) -> int | None:
    """A field of the feature dict: the file writes sizes as strings ('224'), "-" where the op has no
    such field (a FULLY_CONNECTED has no Input_shape), and Input_channel as an int."""
    v = feat.get(key, "-")
    if isinstance(v, str):
        v = v.strip()
    if v == "-" and not required:
        return None
    n: int | None = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str) and v.isdigit():
        n = int(v)
    if n is None or (required and n < (0 if key == "FLOPS" else 1)):
        what = "missing" if key not in feat else f"{v!r}"
        raise EdgeatlasError(
            f"{where}: field {key!r} of {op} is {what}, expected a "
            f"{'non-negative' if key == 'FLOPS' else 'positive'} whole number",
            code=ErrorCode.BAD_DATA,
            hint=f"correct {key} on that line of the feature dict (a {op} row needs "
            f"{', '.join(_MMB_REQUIRED[op])}; '-' only for the others)",
        )
    return n


def _mmb_parse_layer(op: str, text: str, where: str) -> MmbLayer:
    """Parse one op row (``operation``, ``feature`` columns) into shapes; ``where`` = "file line N"."""
    if op not in _MMB_REQUIRED:
        raise EdgeatlasError(
            f"{where}: unknown operation {op!r}",
            code=ErrorCode.BAD_DATA,
            hint=f"the TFLite layer lists hold {', '.join(_MMB_REQUIRED)} (SOURCE.md); fix or drop that row",
        )
    try:
        feat = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        feat = exc
    if not isinstance(feat, dict):
        raise EdgeatlasError(
            f"{where}: field 'feature' is not a dict literal: {text[:80]!r}",
            code=ErrorCode.BAD_DATA,
            hint="it must be a python dict string {'Input_shape': '224', 'Input_channel': 3, ...} (SOURCE.md)",
        )
    v = {k: _mmb_int(feat, k, k in _MMB_REQUIRED[op], where, op) for k in _MMB_FIELDS}
    in_c = v["Input_channel"]
    assert in_c is not None  # required for every op
    if op == "FULLY_CONNECTED":
        return MmbLayer(op, 1, in_c, 1, v["Filter"] or 0, 1, 1, 1)
    if op == "MEAN":  # global mean: Output_shape is the channel count, the output is 1x1
        return MmbLayer(op, v["Input_shape"] or 0, in_c, 1, v["Output_shape"] or 0, v["Input_shape"] or 0, 1, 1)
    if op == "DEPTHWISE_CONV_2D":  # Filter is the depth multiplier
        out_c, group = in_c * (v["Filter"] or 0), in_c
    elif op in ("CONV_2D", "CONV_2D_GROUP"):
        out_c, group = v["Filter"] or 0, v["Group"] or 0
        if in_c % group:
            raise EdgeatlasError(
                f"{where}: field 'Group' of {op} is {group}, which does not divide Input_channel {in_c}",
                code=ErrorCode.BAD_DATA,
                hint="correct Group or Input_channel on that line",
            )
    elif op == "CONCATENATION":  # Kernel is the number of inputs, Filter the output channels
        out_c, group = v["Filter"] or 0, 1
    else:  # pools keep the channels
        out_c, group = in_c, 1
    return MmbLayer(
        op, v["Input_shape"] or 0, in_c, v["Output_shape"] or 0, out_c, v["Kernel"] or 1, v["Stride"] or 1, group
    )


def _mmb_layer_features(layers: Sequence[MmbLayer]) -> np.ndarray:
    """Features of a TFLite layer list, with the names and definitions of the ONNX ones
    (predictors/features.py): MACs from shapes (they equal the file's FLOPS / 2 for convolutions and
    FULLY_CONNECTED), weight params without biases, fp32 activations."""
    v = dict.fromkeys(FEATURE_NAMES, 0.0)
    for ly in layers:
        out_elems = float(ly.out_hw * ly.out_hw * ly.out_c)
        kk = float(ly.kernel * ly.kernel)
        if ly.op in ("CONV_2D", "CONV_2D_GROUP", "DEPTHWISE_CONV_2D"):
            cin_g = ly.in_c / ly.group
            if ly.group > 1 and ly.group == ly.in_c:
                cat = "depthwise"
            else:
                cat = "pointwise" if kk == 1 and ly.group == 1 else "conv"
            macs = out_elems * kk * cin_g
            params = ly.out_c * kk * cin_g
            add_kernel_terms(
                v,
                k=ly.kernel,
                kernel_volume=kk,
                stride=ly.stride,
                depthwise=cat == "depthwise",
                groups=ly.group,
                cin_per_group=cin_g,
                cout=float(ly.out_c),
                out_positions=float(ly.out_hw * ly.out_hw),
                in_elems=float(ly.in_hw * ly.in_hw * ly.in_c),
            )
        elif ly.op == "FULLY_CONNECTED":
            cat, macs, params = "fc", float(ly.in_c * ly.out_c), float(ly.in_c * ly.out_c)
        elif ly.op == "MEAN":
            cat, macs, params = "pool", float(ly.in_hw * ly.in_hw * ly.in_c), 0.0
        elif ly.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            cat, macs, params = "pool", out_elems * kk, 0.0
        else:  # CONCATENATION
            cat, macs, params = "concat", 0.0, 0.0
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
    if layers:
        first = layers[0]
        # the image side: the first op's input less explicit padding (a 7x7 stride-2 conv reading 230
        # for 112 out was fed 224; out = ceil(in / stride) for "same" padding). An input that is
        # already a multiple of 32 was not padded (SqueezeNet's unpadded stem reads 224 for 109 out).
        side = first.in_hw
        if first.out_hw and first.in_hw % 32:
            side = min(first.in_hw, first.out_hw * first.stride)
        v["input_h"] = v["input_w"] = float(side)
        v["input_c"] = float(first.in_c)
        v["input_elems"] = float(side * side * first.in_c)
        last = layers[-1]
        v["output_elems"] = float(last.out_hw * last.out_hw * last.out_c)
    v["batch"] = 1.0
    v["precision_fp32"] = 1.0
    return np.array([v[n] for n in FEATURE_NAMES])


def _mmb_column(header: str) -> str:
    """'pixel4|1large|float|mean' -> 'pixel4'; 'pixel4|gpu|float|mean' -> 'pixel4|gpu|float'."""
    name = header[: -len("|mean")]
    device, _, config = name.partition("|")
    return device if config == MMB_DEFAULT_CONFIG else name


def load_mobile_ml_benchmark(path: str | Path | None = None, framework: str = "tflite") -> Table:
    """Real CNNs: features from the per-op layer lists (GPU op files), e2e latency (us -> ms).

    Devices: ``<device>`` is the device's one-large-core fp32 run (:data:`MMB_DEFAULT_CONFIG`), the
    other configurations are ``<device>|<cores>|<float|quant>``; every configuration of pixel4 and
    iphonexs is in :data:`EVAL_DEVICES`. Only the TFLite layer lists are read (the torch ones describe
    Vulkan ops in another schema)."""
    if framework != "tflite":
        raise EdgeatlasError(
            f"mobile-ml-benchmark: framework {framework!r} is not supported",
            code=ErrorCode.UNSUPPORTED,
            hint="use framework='tflite' (torch_cnn_ops_gpu.csv lists Vulkan ops in another schema)",
        )
    root = _root(path, "mobile-ml-benchmark")
    raw = root / "raw" if (root / "raw").exists() else root
    ops_file = f"{framework}_cnn_ops_gpu.csv"
    ops = _read_csv(raw / ops_file, "mobile-ml-benchmark")
    h_ops = ops.header
    if h_ops[:3] != ["model", "operation", "feature"]:
        raise EdgeatlasError(
            f"{raw / ops_file} line 1: expected columns model, operation, feature first, got {h_ops[:3]}",
            code=ErrorCode.BAD_DATA,
            hint="point --path at the mobile-ml-benchmark folder (SOURCE.md lists the format)",
        )
    layers: dict[str, list[MmbLayer]] = {}
    for i, r in enumerate(ops.rows):  # (every row has the header's columns: _read_csv)
        layers.setdefault(r[0], []).append(_mmb_parse_layer(r[1], r[2], ops.where(i)))
    e2e_file = f"{framework}_cnn_e2e.csv"
    e2e = _read_csv(raw / e2e_file, "mobile-ml-benchmark")
    header, rows = e2e.header, e2e.rows
    mean_cols = [(i, _mmb_column(h)) for i, h in enumerate(header) if h.endswith("|mean")]
    devices = tuple(d for _, d in mean_cols)
    evald = set(EVAL_DEVICES["mobile-ml-benchmark"])
    for d in devices:
        if d.split("|")[0] in MMB_EVAL_CONFIGS and d not in evald:
            raise EdgeatlasError(
                f"{raw / e2e_file} line 1: column {d}|mean is an evaluation device's configuration not in EVAL_DEVICES",
                code=ErrorCode.BAD_DATA,
                hint="add it to MMB_EVAL_CONFIGS in predictors/datasets.py so it is never a reference",
            )
    kept = [(i, r) for i, r in enumerate(rows) if r[0] in layers]
    models = [r[0] for _, r in kept]
    lat = np.array(
        [[e2e.measurement(i, j) / 1000.0 for j, _ in mean_cols] for i, _ in kept],
        dtype=np.float64,
    ).reshape(len(kept), len(mean_cols))
    feats = np.array([_mmb_layer_features(layers[m]) for m in models]).reshape(len(models), len(FEATURE_NAMES))
    return Table(
        "mobile-ml-benchmark",
        tuple(f"mmb-{framework}:{m}" for m in models),
        np.arange(len(models)),
        feats,
        devices,
        lat,
        meta={
            "units": "us in the files, ms here",
            "device_column": f"<device> = <device>|{MMB_DEFAULT_CONFIG}",
            "models_without_layers": sorted({r[0] for r in rows} - set(layers)),
        },
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
    measurements with ``source="dataset:<name>"``. Idempotent: a measurement's key is the hash of
    (dataset, arch, device), so importing the same file again writes nothing. A file corrected since
    the last import updates the values that changed (``updated``) and deletes the ones it no longer
    holds, empty or nan now (``removed``), for the archs and devices it names; ``inserted`` counts
    new ones and ``measurements`` every value in the file.

    A dataset arch's stored features are replaced by the ones computed here when they differ. Rows
    that an older edgeatlas wrote under the id the arch had then (:func:`legacy_ids`: LatBench's
    pruned-cell archs were ``nb201:<i>``, HELP's eager id) are deleted first, in one transaction,
    with those old variants if nothing else measured them; so a class never holds one measurement
    twice under two ids. Only those ids are touched: importing part of a dataset deletes nothing.
    The summary counts the deleted rows (``replaced``) and variants (``replaced_variants``)."""
    table = load(name, path)
    source = f"dataset:{table.name}"
    replaced, replaced_variants = store.drop_dataset_rows(source, legacy_ids(table.keys))
    evald = EVAL_DEVICES.get(table.name, ())
    eval_groups = EVAL_GROUPS.get(table.name, ())
    eval_rows = (
        np.isin(table.group, eval_groups) if eval_groups and table.group is not None else np.ones(len(table.keys), bool)
    )
    # evaluation devices whose evaluation data are some groups only (EVAL_GROUPS): those rows go to
    # an evaluation class <dataset>/<device>/<groups>, the device's other rows to <dataset>/<device>
    split_devices = [d for d in table.devices if d in evald and eval_groups]

    def device_class(d: str, evaluation: bool) -> str:
        if evaluation and d in split_devices:
            return f"{table.name}/{d}/{'+'.join(eval_groups)}"
        return f"{table.name}/{d}"

    def register(d: str, evaluation: bool, flag: bool) -> None:
        """Class ``device_class(d, evaluation)`` with ``"evaluation": flag``."""
        store.upsert_device_class(
            device_class(d, evaluation),
            {"dataset": table.name, "device": d, "evaluation": flag}
            | ({"groups" if evaluation else "except_groups": list(eval_groups)} if d in split_devices else {}),
        )

    for d in table.devices:
        if d in split_devices:
            # the development part stays marked evaluation until every row is in its class: a store
            # from before the split holds the evaluation rows there, and an import that stops
            # half-way must not leave them in a class that training reads
            register(d, True, True)
            register(d, False, True)
        else:
            register(d, d in evald, d in evald)
    for key, fv in zip(table.keys, table.features, strict=True):
        feats = feature_dict(fv)
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
            replace_features=True,
        )
    rows: list[dict] = []
    gone: list[str] = []  # keys of values the file no longer holds (empty / nan now)
    n_total = int(np.isfinite(table.latency_ms).sum())
    done = inserted = updated = removed = 0

    def flush() -> None:
        nonlocal rows, gone, done, inserted, updated, removed
        i, u, r = store.sync_measurements_bulk(rows, remove_keys=gone)
        inserted, updated, removed = inserted + i, updated + u, removed + r
        done += len(rows)
        rows, gone = [], []
        if progress:
            progress(done, n_total)

    for j, d in enumerate(table.devices):
        dev_class, eval_class = device_class(d, False), device_class(d, True)
        for i, key in enumerate(table.keys):
            board = eval_class if d in evald and eval_rows[i] else dev_class
            lat = table.latency_ms[i, j]
            h = hashlib.sha256(f"{source}|{key}|{d}".encode()).hexdigest()
            if not np.isfinite(lat):
                gone.append(h)
                continue
            en = table.energy_mj[i, j] if table.energy_mj is not None else math.nan
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
                flush()
    if rows or gone:
        flush()
    for d in split_devices:  # every row has moved: the development part is development data
        register(d, False, False)
    return {
        "dataset": table.name,
        "variants": len(table.keys),
        "devices": len(table.devices),
        "measurements": done,
        "inserted": inserted,
        "updated": updated,
        "removed": removed,
        "replaced": replaced,
        "replaced_variants": replaced_variants,
    }


def split_tasks(table: Table, tasks: Sequence[str]) -> np.ndarray:
    return np.isin(table.group, list(tasks)) if table.group is not None else np.ones(len(table.keys), bool)
