"""scikit-learn estimators for latency / energy, and the predictor set the selector calls.

Estimators (all pass ``sklearn.utils.estimator_checks.parametrize_with_checks``):

- :class:`LatencyRegressor`: per device class, model features -> latency (or energy). ``kind="linear"``
  fits a ridge in raw ms (latency is a sum of op costs, so it is linear in the additive graph
  features); ``kind="gbm"`` fits gradient boosting on log targets. Intervals: split-conformal
  quantiles of cross-validated log-ratio residuals.
- :class:`KShotCalibrator`: the unseen-device model. Its inputs are the predictions of the reference
  devices' regressors; it fits non-negative weights (plus an offset) on the k probe-set measurements
  of the new device, i.e. "this device behaves like a mix of devices we know". Interval from
  leave-one-out residuals on the shots.
- The cross-device / zero-shot model is a ``LatencyRegressor(kind="gbm")`` whose inputs are
  [device facts | model features] (see :class:`PredictorSet`).

Hyperparameters (kind, alpha) were chosen by leave-one-device-out on HELP's *development* devices
only (bench/predictor_quality.py --tune prints that search).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from predictors.features import FEATURE_NAMES, facts_vector
from registry.errors import EdgeatlasError, ErrorCode

MIN_MS = 1e-6


def _positive_tags(tags):
    tags.target_tags.positive_only = True
    return tags


SMALL_FIT_ROWS = 50_000  # below this a gradient-boosting fit runs on one thread


class LatencyRegressor(RegressorMixin, BaseEstimator):
    """Model features -> a positive target (latency ms or energy mJ), with intervals.

    Parameters
    ----------
    kind : "linear" (ridge in raw target space, alpha by GCV) or "gbm" (HistGradientBoosting on log target)
    coverage : interval coverage (split-conformal on ``cv``-fold residuals)
    """

    def __init__(
        self, kind: str = "linear", coverage: float = 0.9, cv: int = 5, n_trees: int = 300, random_state: int = 0
    ):
        self.kind = kind
        self.coverage = coverage
        self.cv = cv
        self.n_trees = n_trees
        self.random_state = random_state

    def __sklearn_tags__(self):
        return _positive_tags(super().__sklearn_tags__())

    def _make(self):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.kind == "linear":
            return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
        if self.kind == "gbm":
            return HistGradientBoostingRegressor(
                max_iter=self.n_trees, learning_rate=0.08, random_state=self.random_state, early_stopping=False
            )
        raise ValueError(f"kind must be 'linear' or 'gbm', got {self.kind!r}")

    def _fit_one(self, X, y):
        m = self._make()
        if self.kind == "gbm":
            # sklearn's default min_samples_leaf=20 cannot split a class measured on ~30 variants
            # (the prediction would be one constant): scale the leaf size with the data
            m.set_params(min_samples_leaf=int(max(2, min(20, len(y) // 10))))
        if self.kind == "gbm" and len(y) < SMALL_FIT_ROWS:
            # OpenMP's per-iteration fork/join costs more than it saves on small data, and on a
            # busy 2-core host its spinning threads slow a fit down 5-10x: fit small ones on one.
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="openmp"):
                m.fit(X, np.log(y))
            return m
        m.fit(X, np.log(y) if self.kind == "gbm" else y)
        return m

    def _raw(self, m, X):
        p = m.predict(X)
        return np.exp(p) if self.kind == "gbm" else np.maximum(p, MIN_MS)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y <= 0):
            raise ValueError("targets must be > 0 (latency ms / energy mJ)")
        self._model = self._fit_one(X, y)
        # conformal residual quantile from K-fold out-of-fold log ratios
        n = len(y)
        k = min(self.cv, n)
        resid = []
        if k >= 2:
            rng = np.random.default_rng(self.random_state)
            folds = rng.permutation(n) % k
            for f in range(k):
                tr, te = folds != f, folds == f
                if tr.sum() < 2 or te.sum() == 0:
                    continue
                m = self._fit_one(X[tr], y[tr])
                resid.append(np.abs(np.log(self._raw(m, X[te]) / y[te])))
        r = np.concatenate(resid) if resid else np.array([0.0])
        q = min(1.0, math.ceil((len(r) + 1) * self.coverage) / len(r))
        self.log_halfwidth_ = float(np.quantile(r, q))
        return self

    def predict(self, X):
        check_is_fitted(self, "log_halfwidth_")
        X = validate_data(self, X, reset=False)
        return self._raw(self._model, X)

    def predict_interval(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.predict(X)
        f = math.exp(self.log_halfwidth_)
        return p, p / f, p * f


class KShotCalibrator(RegressorMixin, BaseEstimator):
    """Reference-device predictions (n, D) -> the new device's latency, fitted on k shots.

    Non-negative ridge in raw ms: y = b + sum_d w_d * x_d with w >= 0. ``alpha`` was chosen on
    development devices (leave-one-device-out with HELP's 10 reference archs).
    """

    def __init__(self, alpha: float = 0.1, coverage: float = 0.9):
        self.alpha = alpha
        self.coverage = coverage

    def __sklearn_tags__(self):
        return _positive_tags(super().__sklearn_tags__())

    def _fit_one(self, X, y):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=self.alpha, positive=True).fit(X, y)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y <= 0):
            raise ValueError("targets must be > 0")
        self._model = self._fit_one(X, y)
        n = len(y)
        resid = []
        if n >= 3:
            for i in range(n):
                mask = np.arange(n) != i
                m = self._fit_one(X[mask], y[mask])
                p = max(float(m.predict(X[i : i + 1])[0]), MIN_MS)
                resid.append(abs(math.log(p / y[i])))
        r = np.array(resid) if resid else np.array([0.0])
        q = min(1.0, math.ceil((len(r) + 1) * self.coverage) / len(r))
        self.log_halfwidth_ = float(np.quantile(r, q))
        return self

    def predict(self, X):
        check_is_fitted(self, "log_halfwidth_")
        X = validate_data(self, X, reset=False)
        return np.maximum(self._model.predict(X), MIN_MS)

    def predict_interval(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.predict(X)
        f = math.exp(self.log_halfwidth_)
        return p, p / f, p * f


# ----------------------------------------------------------------------------- validation helpers


def check_training_data(X: np.ndarray, y: np.ndarray, what: str, min_rows: int) -> None:
    """Empty / too small / NaN training data -> EdgeatlasError naming the fix."""
    if len(y) == 0:
        raise EdgeatlasError(
            f"no training data for {what}",
            code=ErrorCode.INSUFFICIENT_DATA,
            hint="run `edgeatlas bench run` or `edgeatlas predictors import NAME --path DIR` first",
        )
    if len(y) < min_rows:
        raise EdgeatlasError(
            f"{what} has {len(y)} measurements; at least {min_rows} are needed to fit it",
            code=ErrorCode.INSUFFICIENT_DATA,
            hint=f"measure at least {min_rows - len(y)} more variants on this device class",
        )
    bad_x = ~np.isfinite(X).all(axis=1)
    bad_y = ~np.isfinite(y) | (y <= 0)
    if bad_x.any() or bad_y.any():
        raise EdgeatlasError(
            f"{what}: {int(bad_x.sum())} rows with NaN/inf features and {int(bad_y.sum())} with NaN/inf/non-positive targets",
            code=ErrorCode.BAD_DATA,
            hint="drop or re-measure those rows (features come from `predictors.features.onnx_features`)",
        )


# ----------------------------------------------------------------------------- the predictor set


@dataclass(frozen=True)
class Prediction:
    """Vectorised predictions for the rows of a feature matrix (ms / mJ), with intervals."""

    latency_ms: np.ndarray
    latency_lo: np.ndarray
    latency_hi: np.ndarray
    energy_mj: np.ndarray | None
    energy_lo: np.ndarray | None
    energy_hi: np.ndarray | None
    method: str  # "class:<name>", "kshot:<k>", "zeroshot:facts"


MIN_ROWS_PER_CLASS = 20


class PredictorSet:
    """Per-class latency/energy regressors + the unseen-device models, as one persisted object.

    ``classes[name] = {"latency": LatencyRegressor, "energy": LatencyRegressor | None}``;
    ``probe_features`` = features of the fixed probe set (for k-shot from probe latencies);
    ``facts_model`` = zero-shot regressor on [facts | features] (None without device facts).
    """

    def __init__(
        self,
        classes: dict[str, dict[str, Any]],
        probe_ids: Sequence[str] = (),
        probe_features: np.ndarray | None = None,
        facts_model: LatencyRegressor | None = None,
        class_facts: dict[str, dict] | None = None,
        kshot_alpha: float = 0.1,
        meta: dict | None = None,
    ):
        self.classes = classes
        self.probe_ids = list(probe_ids)
        self.probe_features = probe_features
        self.facts_model = facts_model
        self.class_facts = class_facts or {}
        self.kshot_alpha = kshot_alpha
        self.meta = meta or {}

    # -- fitting
    @classmethod
    def fit(
        cls,
        data: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
        *,
        kind: str = "linear",
        probe_ids: Sequence[str] = (),
        probe_features: np.ndarray | None = None,
        class_facts: Mapping[str, dict] | None = None,
        min_rows: int = MIN_ROWS_PER_CLASS,
        meta: dict | None = None,
    ) -> PredictorSet:
        """``data[class] = (features (n, d), latency_ms (n,), energy_mj (n,) or None)``."""
        if not data:
            raise EdgeatlasError(
                "empty training set: no device class has measurements",
                code=ErrorCode.INSUFFICIENT_DATA,
                hint="run `edgeatlas bench run` or `edgeatlas predictors import NAME --path DIR` first",
            )
        classes: dict[str, dict[str, Any]] = {}
        for name, (X, lat, en) in data.items():
            check_training_data(X, lat, f"device class {name!r} (latency)", min_rows)
            entry: dict[str, Any] = {"latency": LatencyRegressor(kind=kind).fit(X, lat), "n": len(lat)}
            if en is not None:
                m = np.isfinite(en)
                if m.sum() >= min_rows:
                    check_training_data(X[m], en[m], f"device class {name!r} (energy)", min_rows)
                    entry["energy"] = LatencyRegressor(kind=kind).fit(X[m], en[m])
            classes[name] = entry
        facts_model = None
        facts = dict(class_facts or {})
        usable = {c: f for c, f in facts.items() if c in data and _has_facts(f)}
        if len(usable) >= 2:
            rows, ys = [], []
            for c, f in usable.items():
                X, lat, _ = data[c]
                fv = facts_vector(f)
                rows.append(np.hstack([np.repeat(fv[None], len(X), 0), X]))
                ys.append(lat)
            facts_model = LatencyRegressor(kind="gbm").fit(np.vstack(rows), np.concatenate(ys))
        return cls(classes, probe_ids, probe_features, facts_model, facts, meta=meta)

    # -- prediction
    def _check_features(self, features: np.ndarray) -> np.ndarray:
        F = np.asarray(features, dtype=np.float64)
        if F.ndim == 1:
            F = F[None, :]
        if F.shape[1] != len(FEATURE_NAMES):
            raise EdgeatlasError(
                f"feature matrix has {F.shape[1]} columns; expected {len(FEATURE_NAMES)} (predictors.features.FEATURE_NAMES)",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        if not np.isfinite(F).all():
            raise EdgeatlasError(
                "feature matrix holds NaN/inf (a variant without ONNX features?)",
                code=ErrorCode.BAD_DATA,
                hint="extract features with predictors.features.onnx_features",
            )
        return F

    def reference_matrix(self, F: np.ndarray, exclude: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
        names = [c for c in self.classes if c not in exclude]
        return np.column_stack([self.classes[c]["latency"].predict(F) for c in names]), names

    def kshot(
        self, shot_features: np.ndarray, shot_latency_ms: np.ndarray, exclude: Sequence[str] = ()
    ) -> KShotCalibrator:
        S = self._check_features(shot_features)
        y = np.asarray(shot_latency_ms, dtype=np.float64)
        if len(y) < 3:
            raise EdgeatlasError(
                f"k-shot needs at least 3 probe measurements, got {len(y)}", code=ErrorCode.INSUFFICIENT_DATA
            )
        if not np.isfinite(y).all() or (y <= 0).any():
            raise EdgeatlasError("probe latencies must be finite and > 0 ms", code=ErrorCode.BAD_DATA)
        R, _ = self.reference_matrix(S, exclude)
        return KShotCalibrator(alpha=self.kshot_alpha).fit(R, y)

    def predict(
        self,
        features: np.ndarray,
        *,
        device_class: str | None = None,
        facts: Mapping[str, Any] | None = None,
        probe_latencies: Mapping[str, float] | None = None,
    ) -> Prediction:
        """Predict latency (and energy for a known class) for every row of ``features``.

        Exactly one of: a known ``device_class``; ``probe_latencies`` {probe id: ms} (k-shot); ``facts``
        (zero-shot). Vectorised: one matrix product per reference class.
        """
        F = self._check_features(features)
        if device_class is not None:
            if device_class not in self.classes:
                raise EdgeatlasError(
                    f"unknown device class {device_class!r}",
                    code=ErrorCode.NOT_FOUND,
                    hint=f"known classes: {', '.join(sorted(self.classes)) or 'none'}; "
                    "for a new device give --device-facts or --probe-latencies",
                )
            e = self.classes[device_class]
            lat = e["latency"].predict_interval(F)
            en = e["energy"].predict_interval(F) if e.get("energy") is not None else (None, None, None)
            return Prediction(*lat, *en, method=f"class:{device_class}")
        if probe_latencies is not None:
            if self.probe_features is None or not self.probe_ids:
                raise EdgeatlasError("this predictor set has no probe set", code=ErrorCode.UNSUPPORTED)
            missing = [p for p in self.probe_ids if p not in probe_latencies]
            if len(self.probe_ids) - len(missing) < 3:
                raise EdgeatlasError(
                    f"probe latencies cover {len(self.probe_ids) - len(missing)} of {len(self.probe_ids)} probe models; need >= 3",
                    code=ErrorCode.INSUFFICIENT_DATA,
                    hint=f"measure: {', '.join(self.probe_ids)}",
                )
            keep = [i for i, p in enumerate(self.probe_ids) if p in probe_latencies]
            cal = self.kshot(self.probe_features[keep], np.array([probe_latencies[self.probe_ids[i]] for i in keep]))
            R, _ = self.reference_matrix(F)
            return Prediction(*cal.predict_interval(R), None, None, None, method=f"kshot:{len(keep)}")
        if facts is not None:
            if self.facts_model is None:
                raise EdgeatlasError(
                    "zero-shot from facts needs device facts for at least 2 trained classes",
                    code=ErrorCode.UNSUPPORTED,
                    hint="declare facts (cores, freq_mhz, memory_mb) for the device classes and retrain, or give --probe-latencies",
                )
            fv = facts_vector(facts)
            X = np.hstack([np.repeat(fv[None], len(F), 0), F])
            return Prediction(*self.facts_model.predict_interval(X), None, None, None, method="zeroshot:facts")
        raise EdgeatlasError("give a device class, device facts or probe latencies", code=ErrorCode.INVALID_ARGUMENT)


def _has_facts(f: Mapping[str, Any]) -> bool:
    return all(f.get(k) not in (None, "") for k in ("cores", "freq_mhz", "memory_mb"))
