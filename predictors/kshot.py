"""K-shot calibration in log space: the new device as a non-negative *multiplicative* mix of references.

:class:`predictors.models.KShotCalibrator` fits ``y = b + sum_d w_d x_d`` (w >= 0) in raw ms: the
new device is a non-negative sum of known devices. :class:`LogKShotCalibrator` fits
``log y = b + sum_d w_d log x_d`` (w >= 0): the new device is a product of powers of the references
(``y = e^b * prod_d x_d^w_d``). That expresses "energy = latency x power" and a cross-task shift
(another input shape changes every arch's cost by a factor) directly, and it scores the relative
error that ±10 % accuracy counts.

Where each is used (chosen on development data only, ``bench/predictor_quality.py --tune``):
- HELP NB201 / FBNet and LatBench latency: the raw-ms :class:`KShotCalibrator` (leave-one-dev-device
  -out, alpha 0.01 / 0.1 / 1: HELP NB201 mean Spearman 0.950-0.951 raw against 0.903-0.948 log;
  LatBench mean acc10 0.717 raw at alpha 0.1 against 0.642-0.680 log).
- HW-NAS-Bench-360 pi5 energy: :class:`LogKShotCalibrator`, alpha = ``evaluate.HWNAS_ALPHA`` (pi5
  ninapro or darcy energy held out in turn as development stand-ins for cifar100; references = the
  arch's measured values on the other tasks: mean acc10 over both stand-ins 0.938 log at alpha
  0.001 against 0.923 at 0.01, 0.882 at 0.1 and 0.858-0.866 raw; with regressor-predicted
  references 0.581-0.645 log, 0.588-0.605 raw).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from predictors.models import LogIntervalMixin, _positive_tags, loo_log_halfwidth

MIN_VALUE = 1e-6  # references and targets are clipped here before the log (ms / mJ)


class LogKShotCalibrator(LogIntervalMixin, RegressorMixin, BaseEstimator):
    """Reference predictions (n, D) -> the new device's value, fitted on k shots in log space.

    Non-negative ridge: ``log y = b + sum_d w_d log x_d`` with ``w >= 0``, ``b`` unpenalised (the
    device's scale), ``alpha`` on ``w``. The interval is the conformal quantile of leave-one-shot-out
    log-ratio residuals (as :class:`~predictors.models.KShotCalibrator`).
    """

    def __init__(self, alpha: float = 0.1, coverage: float = 0.9):
        self.alpha = alpha
        self.coverage = coverage

    def __sklearn_tags__(self):
        return _positive_tags(super().__sklearn_tags__())

    def _fit_one(self, L, logy):
        """Exact non-negative ridge (bounded least squares on the centred shots plus sqrt(alpha) I
        rows): (w, b). sklearn's ``Ridge(positive=True)`` runs L-BFGS-B, whose stopping tolerance
        moved the 10-shot solution by up to 6 % in a prediction."""
        from scipy.optimize import lsq_linear

        mu, ym = L.mean(axis=0), float(logy.mean())
        d = L.shape[1]
        A = np.vstack([L - mu, math.sqrt(self.alpha) * np.eye(d)])
        rhs = np.concatenate([logy - ym, np.zeros(d)])
        w = lsq_linear(A, rhs, bounds=(0.0, np.inf), method="bvls").x if d else np.zeros(0)
        return w, ym - float(mu @ w)

    @staticmethod
    def _apply(model, L):
        w, b = model
        return L @ w + b

    @staticmethod
    def _log(X):
        return np.log(np.maximum(np.asarray(X, dtype=np.float64), MIN_VALUE))

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y <= 0):
            raise ValueError("targets must be > 0")
        L, logy = self._log(X), np.log(y)
        self._model = self._fit_one(L, logy)
        n = len(y)

        def loo(i: int) -> float:
            mask = np.arange(n) != i
            return abs(float(self._apply(self._fit_one(L[mask], logy[mask]), L[i : i + 1])[0]) - logy[i])

        self.log_halfwidth_ = loo_log_halfwidth(n, loo, self.coverage)
        return self

    def predict(self, X):
        check_is_fitted(self, "log_halfwidth_")
        X = validate_data(self, X, reset=False)
        return np.maximum(np.exp(self._apply(self._model, self._log(X))), MIN_VALUE)
