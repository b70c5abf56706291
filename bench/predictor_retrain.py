"""Retrain time on 1M measurement rows (synthetic rows, 20 device classes x 50k, 59 graph features).

Run: .venv/bin/python bench/predictor_retrain.py [--rows 1000000]
Prints the fit time of the per-class predictor set (linear and gbm kinds) against the 60 s budget.
Synthetic rows stand in for measurements only for the timing; no quality is claimed from them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from predictors.features import FEATURE_NAMES
from predictors.models import PredictorSet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows // args.classes
    data = {}
    for c in range(args.classes):
        X = rng.lognormal(10, 2, size=(n, len(FEATURE_NAMES)))
        w = rng.uniform(0.5, 2, len(FEATURE_NAMES)) * 1e-6
        y = X @ w + 1.0 + rng.lognormal(0, 0.05, n)
        data[f"class{c}"] = (X, y, y * 2.5)
    for kind in ("linear", "gbm"):
        t = time.perf_counter()
        PredictorSet.fit(data, kind=kind)
        dt = time.perf_counter() - t
        print(
            f"{kind:<7} {args.rows} rows, {args.classes} classes, latency+energy: {dt:.1f} s  (budget 60 s, ratio {dt / 60:.2f})"
        )


if __name__ == "__main__":
    main()
