"""End-to-end predictor retrain time on a real SQLite store holding 1M measurement rows.

Run: .venv/bin/python bench/predictor_retrain.py [--rows 1000000] [--classes 20] [--kind linear|gbm|additive|auto|all]

Target (issue): a retrain on 1M measurement rows takes under 60 s on 2 cores.

Setup (not timed): a temporary EDGEATLAS_HOME with a SQLite store (``Store.open``, the schema by
the project's migrations) holding ``--classes`` device classes with declared facts (so the zero-shot
facts model is fitted too), 2 boards per class, ``--variants`` variants with ONNX-shaped feature
dicts (every name of predictors.features.FEATURE_NAMES, stored in ``variants.features`` like zoo
build / dataset import store them) and ``--rows`` ok whole-model measurements (latency + energy on
every row: the worst case, two regressors per class), bulk-inserted with SQLAlchemy Core.

The rows are SYNTHETIC stand-ins for the timing only; no predictor quality is claimed from them.
For a row of variant v on class c, board b and runtime config k:

    latency_ms = (1e3 * (macs_v * p_v / (gmacs_c * 1e9) + (weight_bytes_v + act_bytes_v) / (gbps_c * 1e9))
                  + n_nodes_v * node_ms_c) * cfg_k * exp(N(0, 0.05))
    energy_mj  = latency_ms * watts_c * exp(N(0, 0.03))

with p_v = 1 (fp32), 0.6 (fp16) or 0.35 (int8); gmacs_c ~ U(2, 200), gbps_c ~ U(2, 50),
node_ms_c ~ U(0.002, 0.05), watts_c ~ U(1, 15) per class; cfg_k ~ U(0.6, 1.6) per runtime config.

Timed, each the function `edgeatlas predictors train` / `retrain` call (predictors.training.train):
  (a) first train, no champion, on all rows but the last ``--new`` (promote="always")
  (b) retrain after ``--new`` rows arrived: challenger vs champion on the held-out slice
      (promote="if_better"), on ``--rows`` rows
  (c) retrain with no new data: must return "no new data" and write nothing
Each against the 60 s budget with the ratio and the host's load average (shared, noisy host).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictors.features import CATEGORIES, FEATURE_NAMES, KERNEL_BUCKETS, feature_dict  # noqa: E402
from predictors.models import KINDS  # noqa: E402

BUDGET_S = 60.0
BOARDS_PER_CLASS = 2


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"


def variant_features(n: int, rng: np.random.Generator) -> tuple[list[dict[str, float]], np.ndarray]:
    """``n`` ONNX-shaped feature dicts (conv nets of 20-400 nodes, 96-224 px inputs) and precision factors."""
    vals: dict[str, np.ndarray] = {name: np.zeros(n) for name in FEATURE_NAMES}
    res = rng.choice([96, 128, 160, 192, 224], size=n).astype(float)
    n_nodes = rng.integers(20, 400, size=n).astype(float)
    macs = rng.lognormal(math.log(3e8), 1.0, size=n) * (res / 224) ** 2
    params = rng.lognormal(math.log(4e6), 0.8, size=n)
    share = rng.dirichlet(np.ones(len(CATEGORIES)), size=n)
    counts = rng.multinomial(n_nodes.astype(int), share)
    out_per_node = rng.lognormal(math.log(5e4), 0.7, size=n) * (res / 224) ** 2
    mac_cats = ("conv", "depthwise", "pointwise", "fc", "matmul")
    mac_share = share[:, [CATEGORIES.index(c) for c in mac_cats]]
    mac_share /= mac_share.sum(axis=1, keepdims=True)
    for i, c in enumerate(CATEGORIES):
        vals[f"{c}_count"] = counts[:, i].astype(float)
        vals[f"{c}_out_elems"] = counts[:, i] * out_per_node
        if c in mac_cats:
            j = mac_cats.index(c)
            vals[f"{c}_macs"] = macs * mac_share[:, j]
            vals[f"{c}_params"] = params * mac_share[:, j]
        elif c in ("pool", "add", "activation", "norm"):
            vals[f"{c}_macs"] = vals[f"{c}_out_elems"] * (2.0 if c == "norm" else 1.0)
    prec = rng.choice(3, size=n, p=[0.6, 0.15, 0.25])  # fp32 / fp16 / int8
    elem_bytes = np.array([4.0, 2.0, 1.0])[prec]
    vals["macs"] = macs
    vals["params"] = params
    vals["weight_bytes"] = params * elem_bytes
    vals["act_bytes"] = n_nodes * out_per_node * elem_bytes
    vals["n_nodes"] = n_nodes
    vals["depth"] = np.floor(n_nodes * rng.uniform(0.5, 0.95, size=n))
    vals["batch"] = np.ones(n)
    vals["input_c"] = np.full(n, 3.0)
    vals["input_h"] = res
    vals["input_w"] = res
    vals["input_elems"] = 3 * res * res
    vals["output_elems"] = np.full(n, 1000.0)
    for i, p in enumerate(("fp32", "fp16", "int8")):
        vals[f"precision_{p}"] = (prec == i).astype(float)
    # kernel-level terms: each convolution category's totals spread over its kernel buckets
    for cat, buckets in (
        ("conv", [b for b in KERNEL_BUCKETS if b.startswith("conv_") and not b.startswith("conv_k1")]),
        ("pointwise", [b for b in KERNEL_BUCKETS if b.startswith("conv_k1")]),
        ("depthwise", [b for b in KERNEL_BUCKETS if b.startswith("dw_")]),
    ):
        split = rng.dirichlet(np.ones(len(buckets)), size=n)
        pad = rng.uniform(1.0, 1.3, size=n)
        for j, b in enumerate(buckets):
            stride = 2.0 if b.endswith("s2") else 1.0
            vals[f"kernel_{b}_count"] = np.round(vals[f"{cat}_count"] * split[:, j])
            vals[f"kernel_{b}_macs"] = vals[f"{cat}_macs"] * split[:, j]
            vals[f"kernel_{b}_padded_macs"] = vals[f"{cat}_macs"] * split[:, j] * pad
            vals[f"kernel_{b}_out_elems"] = vals[f"{cat}_out_elems"] * split[:, j]
            vals[f"kernel_{b}_in_elems"] = vals[f"{cat}_out_elems"] * split[:, j] * stride**2
    cols = [vals[name].tolist() for name in FEATURE_NAMES]
    dicts = [feature_dict(row) for row in zip(*cols, strict=True)]
    return dicts, np.array([1.0, 0.6, 0.35])[prec]


def measurement_rows(
    n_rows: int, classes: list[str], variant_ids: list[str], feats: list[dict[str, float]], pf: np.ndarray, seed: int
) -> list[dict[str, Any]]:
    """``n_rows`` distinct (variant, board, runtime config) ok rows, latency and energy by the module formula."""
    rng = np.random.default_rng(seed)
    n_cls, n_var = len(classes), len(variant_ids)
    combos = n_cls * BOARDS_PER_CLASS * n_var
    n_cfg = max(1, math.ceil(n_rows / combos))
    pick = rng.choice(combos * n_cfg, size=n_rows, replace=False)
    vi = pick % n_var
    rest = pick // n_var
    bi = rest % (n_cls * BOARDS_PER_CLASS)  # board index; class = board // BOARDS_PER_CLASS
    ki = rest // (n_cls * BOARDS_PER_CLASS)  # runtime config index
    ci = bi // BOARDS_PER_CLASS
    crng = np.random.default_rng(1234)  # per-class constants are the same for every call
    gmacs = crng.uniform(2, 200, n_cls)
    gbps = crng.uniform(2, 50, n_cls)
    node_ms = crng.uniform(0.002, 0.05, n_cls)
    watts = crng.uniform(1, 15, n_cls)
    cfg = crng.uniform(0.6, 1.6, n_cfg)
    macs = np.array([f["macs"] for f in feats])
    nbytes = np.array([f["weight_bytes"] + f["act_bytes"] for f in feats])
    nodes = np.array([f["n_nodes"] for f in feats])
    lat = (
        (1e3 * (macs[vi] * pf[vi] / (gmacs[ci] * 1e9) + nbytes[vi] / (gbps[ci] * 1e9)) + nodes[vi] * node_ms[ci])
        * cfg[ki]
        * np.exp(rng.normal(0, 0.05, n_rows))
    )
    en = lat * watts[ci] * np.exp(rng.normal(0, 0.03, n_rows))
    boards = [f"{c}-{b}" for c in classes for b in range(BOARDS_PER_CLASS)]
    out = []
    for v, b, k, c, la, e in zip(
        vi.tolist(), bi.tolist(), ki.tolist(), ci.tolist(), lat.tolist(), en.tolist(), strict=True
    ):
        vid, board = variant_ids[v], boards[b]
        out.append(
            {
                "key": hashlib.sha256(f"{vid}|{board}|cfg{k}".encode()).hexdigest(),
                "run_id": None,
                "board": board,
                "device_class": classes[c],
                "variant_id": vid,
                "split_id": None,
                "runtime": "onnxruntime",
                "config": {"threads": 1 + k % 4, "cfg": k},
                "status": "ok",
                "latency_ms": la,
                "stats": None,
                "energy_mj": e,
                "energy_source": "measured:ina219",
                "system": None,
                "error_code": None,
                "error_message": None,
                "source": "probe",
            }
        )
    return out


def insert_rows(store, rows: list[dict[str, Any]], chunk: int = 50_000) -> None:
    from registry.store.models import MeasurementRow, utcnow

    now = utcnow()
    with store.engine.begin() as conn:
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            for r in part:
                r["created_at"] = now
            conn.execute(MeasurementRow.__table__.insert(), part)


def setup(home: Path, n_rows: int, n_new: int, n_classes: int, n_variants: int):
    from registry.store import Store
    from registry.store.models import VariantRow, utcnow

    store = Store.open(f"sqlite:///{home / 'atlas.db'}")
    rng = np.random.default_rng(0)
    classes = [f"class{c:02d}" for c in range(n_classes)]
    for i, c in enumerate(classes):
        store.upsert_device_class(
            c,
            {
                "cores": [2, 4, 6, 8][i % 4],
                "freq_mhz": 1200 + 100 * (i % 12),
                "memory_mb": [1024, 2048, 4096, 8192][i % 4],
                "arch": "aarch64" if i % 3 else "x86_64",
                "accelerator": ["none", "gpu", "npu"][i % 3],
            },
        )
    feats, pf = variant_features(n_variants, rng)
    vids = [f"synth-{i:05d}" for i in range(n_variants)]
    now = utcnow()
    vrows = [
        {
            "id": vid,
            "family": f"synth{i % 10}",
            "format": "onnx",
            "path": "",
            "params": int(f["params"]),
            "macs": int(f["macs"]),
            "size_bytes": int(f["weight_bytes"]),
            "input_shape": [1, 3, int(f["input_h"]), int(f["input_w"])],
            "precision": "fp32",
            "features": f,
            "created_at": now,
        }
        for i, (vid, f) in enumerate(zip(vids, feats, strict=True))
    ]
    with store.engine.begin() as conn:
        conn.execute(VariantRow.__table__.insert(), vrows)
    rows = measurement_rows(n_rows, classes, vids, feats, pf, seed=1)
    insert_rows(store, rows[: n_rows - n_new])
    return store, rows[n_rows - n_new :]


def timed(label: str, fn) -> tuple[float, dict[str, Any]]:
    before = _load()
    t = time.perf_counter()
    rep = fn()
    dt = time.perf_counter() - t
    verdict = "ok" if dt < BUDGET_S else "OVER BUDGET"
    print(
        f"  {label:<44} {dt:6.1f} s  (budget {BUDGET_S:.0f} s, ratio {dt / BUDGET_S:.2f}, {verdict})"
        f"  [{before} -> {_load().split(' on ')[0]}]",
        flush=True,
    )
    return dt, rep


def run(kind: str, args: argparse.Namespace) -> dict[str, float]:
    from predictors.training import train

    with tempfile.TemporaryDirectory(prefix="edgeatlas-retrain-bench-") as tmp:
        home = Path(tmp)
        os.environ["EDGEATLAS_HOME"] = str(home)
        t = time.perf_counter()
        store, new_rows = setup(home, args.rows, args.new, args.classes, args.variants)
        print(
            f"{kind}: store with {args.rows - args.new} + {args.new} rows, {args.classes} classes x "
            f"{BOARDS_PER_CLASS} boards, {args.variants} variants (setup {time.perf_counter() - t:.1f} s, untimed)",
            flush=True,
        )
        out: dict[str, float] = {}
        out["a"], rep = timed(
            f"(a) first train, {args.rows - args.new} rows",
            lambda: train(store, kind=kind, promote="always", report_dir=home / "reports"),
        )
        assert rep["status"] == "promoted", rep["status"]
        print(f"      steps (s): {rep['phases_s']}")
        insert_rows(store, new_rows)
        out["b"], rep = timed(
            f"(b) retrain, {args.new} new rows ({args.rows} in all)",
            lambda: train(store, kind=kind, promote="if_better", report_dir=home / "reports"),
        )
        assert rep["status"] in ("promoted", "kept champion") and rep["champion"] is not None, rep["status"]
        print(f"      steps (s): {rep['phases_s']}")
        print(
            f"      challenger held-out mape {rep['challenger'].get('mape', float('nan')):.4f}, champion "
            f"{rep['champion'].get('mape', float('nan')):.4f} -> {rep['status']} (synthetic rows: timing only)"
        )
        n_versions = len(store.list_predictors())
        out["c"], rep = timed(
            "(c) retrain, no new data",
            lambda: train(store, kind=kind, promote="if_better", report_dir=home / "reports"),
        )
        assert rep["status"] == "no new data" and len(store.list_predictors()) == n_versions, rep["status"]
        store.dispose()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="measurement rows after the new ones arrived")
    ap.add_argument("--classes", type=int, default=20, help="device classes (2 boards each)")
    ap.add_argument("--variants", type=int, default=4000, help="variants with ONNX-shaped features")
    ap.add_argument("--new", type=int, default=10_000, help="rows that arrive between (a) and (b)")
    ap.add_argument(
        "--kind",
        choices=[*KINDS, "all"],
        default="all",
        help="regressor kind (all: each in turn)",
    )
    args = ap.parse_args()
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    print(f"retrain bench: {args.rows} rows, target < {BUDGET_S:.0f} s each; {_load()}")
    for kind in kinds:
        run(kind, args)


if __name__ == "__main__":
    main()
