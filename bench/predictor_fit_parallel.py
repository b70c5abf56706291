"""PredictorSet.fit in the training process against loky worker processes, side by side.

Run: .venv/bin/python bench/predictor_fit_parallel.py [--sizes 132x3x44,465x3x155,1800x2x300] [--kind auto] [--rounds 2]

Each size is ROWSxCLASSESxVARIANTS: that many whole-model measurement rows (latency and energy on
every row, so two regressors per class), spread over the classes, of that many variants. The rows
are bench/predictor_retrain.py's SYNTHETIC stand-ins (feature dicts shaped like ONNX graph
features, a roofline-style latency law with noise); they serve the timing only, and no predictor
quality is claimed from them. 465x3x155 is a lab that measured the zoo grid's 155 variants once on
three device classes; 132x3x44 is about what `make demo` trains on.

For each size, the same data is fitted ``--rounds`` times each way, alternating, in this process:
``inproc`` (``n_jobs=1``: every fit in this process, in order) and ``workers``
(predictors.models._fit_all's worker-process path, forced for linear fits too by setting
PARALLEL_MIN_ROWS to 0). The first ``workers`` round of the run includes starting the workers
(loky keeps them for later calls, as a training's one call would not). It prints each time, the
ratio of the medians and the host's load average: on a shared 2-core host the ratio is what to
read, not the seconds. It also checks that both ways give the same predictions, bit for bit.
_fit_all's rule (workers for any non-linear fits, linear ones from PARALLEL_MIN_ROWS rows) is set
from what this prints.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from predictor_retrain import _load, measurement_rows, variant_features  # noqa: E402

from predictors import models as M  # noqa: E402
from predictors.features import FEATURE_NAMES  # noqa: E402


def class_data(rows: int, n_classes: int, n_variants: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    feats, precision = variant_features(n_variants, np.random.default_rng(0))
    F = np.array([[f[n] for n in FEATURE_NAMES] for f in feats])
    classes = [f"c{i}" for i in range(n_classes)]
    ms = measurement_rows(rows, classes, [f"v{i}" for i in range(n_variants)], feats, precision, seed=1)
    data = {}
    for c in classes:
        r = [x for x in ms if x["device_class"] == c]
        vi = np.array([int(x["variant_id"][1:]) for x in r])
        data[c] = (F[vi], np.array([x["latency_ms"] for x in r]), np.array([x["energy_mj"] for x in r]))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="132x3x44,465x3x155,1800x2x300", help="ROWSxCLASSESxVARIANTS, comma-separated")
    ap.add_argument("--kind", default="auto", choices=M.KINDS)
    ap.add_argument("--rounds", type=int, default=2, help="fits each way per size (alternating)")
    args = ap.parse_args()
    default = M.PARALLEL_MIN_ROWS
    print(f"PARALLEL_MIN_ROWS (linear fits) in the code: {default}; {_load()}")
    for spec in args.sizes.split(","):
        rows, n_classes, n_variants = (int(v) for v in spec.split("x"))
        data = class_data(rows, n_classes, n_variants)
        F = data["c0"][0]
        times: dict[str, list[float]] = {"inproc": [], "workers": []}
        preds: dict[str, list[np.ndarray]] = {}
        for _ in range(args.rounds):
            for mode in ("inproc", "workers"):
                M.PARALLEL_MIN_ROWS = 0
                t = time.perf_counter()
                ps = M.PredictorSet.fit(data, kind=args.kind, n_jobs=1 if mode == "inproc" else None)
                times[mode].append(time.perf_counter() - t)
                preds[mode] = [ps.predict(F, device_class=c).latency_hi for c in data]
        M.PARALLEL_MIN_ROWS = default
        same = all(np.array_equal(a, b) for a, b in zip(preds["inproc"], preds["workers"], strict=True))
        a, w = statistics.median(times["inproc"]), statistics.median(times["workers"])
        print(
            f"{rows:>7} rows, {n_classes} classes, {n_variants:>4} variants, {2 * n_classes} fits ({args.kind}): "
            f"inproc {' '.join(f'{t:.1f}' for t in times['inproc'])} s, "
            f"workers {' '.join(f'{t:.1f}' for t in times['workers'])} s; "
            f"inproc / workers {a / w:.2f}x; same predictions: {same}; {_load()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
