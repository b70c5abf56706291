"""scikit-learn estimators for latency / energy, and the predictor set the selector calls.

Estimators (all pass ``sklearn.utils.estimator_checks.parametrize_with_checks``):

- :class:`LatencyRegressor`: per device class, model features -> latency (or energy). ``kind="linear"``
  fits a ridge in raw ms (latency is a sum of op costs, so it is linear in the additive graph
  features); ``kind="gbm"`` fits gradient boosting on log targets; ``kind="additive"`` a
  non-negative cost per unit of each additive feature and kernel-level term, then a monotone map
  to latency when it helps, and from 40 distinct variants on shallow trees on its out-of-fold log
  errors, a quarter of whose correction is applied, and up to 600 a Gaussian process on what is
  left (:func:`_fit_residual_gp`); ``kind="auto"`` (the training default) keeps
  gbm or additive, whichever has the lower held-out error. Intervals: conformal quantiles of cross-validated log-ratio
  residuals (split-conformal from 10k rows).
- :class:`KShotCalibrator`: the unseen-device model. Its inputs are the predictions of the reference
  devices' regressors; it fits non-negative weights (plus an offset) on the k probe-set measurements
  of the new device, i.e. "this device behaves like a mix of devices we know". Interval from
  held-out residuals on the shots (leave-one-out up to LOO_MAX_ROWS rows; :func:`loo_log_halfwidth`).
- The cross-device / zero-shot model is a ``LatencyRegressor(kind="gbm")`` whose inputs are
  [device facts | model features] (see :class:`PredictorSet`).

Hyperparameters (kind, alpha) were chosen by leave-one-device-out on HELP's *development* devices
only (bench/predictor_quality.py --tune prints that search).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from predictors.features import ADDITIVE_NAMES, FACT_NAMES, FEATURE_NAMES, KERNEL_NAMES, facts_vector
from registry.errors import EdgeatlasError, ErrorCode

MIN_MS = 1e-6


def _positive_tags(tags):
    tags.target_tags.positive_only = True
    return tags


SMALL_FIT_ROWS = 50_000  # below this a gradient-boosting fit runs on one thread
SPLIT_CONFORMAL_ROWS = 10_000  # from this many rows the interval is split-conformal (one fit, not cv + 1)
CALIBRATION_FRACTION = 0.2  # rows held out to calibrate the split-conformal interval
MIN_CALIBRATION_VARIANTS = 50  # from this many distinct variants the calibration rows are whole variants
EARLY_STOPPING_MIN_VARIANTS = 500  # a large gradient-boosting fit stops early from this many distinct rows


@functools.cache
def _threadpools():
    """One threadpoolctl controller (building one scans the loaded libraries: ~4 ms a call)."""
    import sklearn.ensemble  # noqa: F401 - loads OpenMP (and scipy's OpenBLAS) before the scan
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _row_keys(X: np.ndarray) -> np.ndarray:
    """A seeded 64-bit hash of each row's bits (see :func:`row_groups`)."""
    bits = np.ascontiguousarray(X, dtype=np.float64).view(np.uint64)
    mult = np.random.default_rng(12345).integers(1, 2**63, size=X.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (bits * mult).sum(axis=1, dtype=np.uint64)


def row_groups(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical rows of ``X`` as groups: (first row of each group, each row's group, group sizes).

    Groups are found by sorting one seeded random hash of the rows (a 1-D sort; ``np.unique(X,
    axis=0)`` sorts rows as opaque bytes and held the GIL for ~0.5 s per 50k x 59 class, which
    serialised the parallel fits of a 1M-row retrain), then checked exactly: if two different rows
    ever shared a hash, the exact row sort decides instead. The hash is integer arithmetic on the
    rows' bits (wrapping multiply-add, exact in any order): a float projection ``X @ w`` could
    differ between two identical rows (BLAS sums a row in an order that depends on its memory
    alignment), which split one variant into two groups.
    """
    _, first, inv, counts = np.unique(_row_keys(X), return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    if not np.array_equal(X, X[first[inv]]):
        _, first, inv, counts = np.unique(X, axis=0, return_index=True, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
    return first, inv, counts


Groups = tuple[np.ndarray, np.ndarray, np.ndarray]  # row_groups' (first row, each row's group, sizes)


def subset_groups(groups: Groups, rows: np.ndarray) -> Groups:
    """:func:`row_groups` of ``X[rows]`` from those of ``X``, without hashing the rows again: the same
    groups in the same order as row_groups gives them (the order of their hashes, which a subset
    keeps; only after a hash collision, which row_groups resolves by the exact row sort, is the order
    that sort's, where the subset's own hashes might have decided)."""
    used, inv = np.unique(groups[1][rows], return_inverse=True)
    _, first = np.unique(inv, return_index=True)
    return first, inv.reshape(-1), np.bincount(inv, minlength=len(used))


def fold_repeats(
    X: np.ndarray, logy: np.ndarray, groups: Groups | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical rows (a variant's repeats) as one row each, in :func:`row_groups`' canonical order:
    (the distinct rows, the mean of each one's log targets, how many rows each stands for).
    ``groups``: ``row_groups(X)`` when the caller has them already."""
    first, inv, counts = row_groups(X) if groups is None else groups
    return X[first], np.bincount(inv, weights=logy) / counts, counts


def fold_refined(X: np.ndarray, logy: np.ndarray, groups: Groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fold_repeats(X, logy)`` from ``groups`` that refine X's own (the row groups of the same rows
    with more columns, as a fit's whole rows are of the columns one kind reads): the groups are folded
    first (no rows hashed), then the few distinct rows by X's own columns (rows that differed only in
    the other columns fold together). The means are sums over the rows themselves, in row order, as
    fold_repeats takes them: bit for bit the same."""
    Xd, mean, counts = fold_repeats(X, logy, groups)
    first, inv, _ = row_groups(Xd)
    if len(first) == len(Xd):  # nothing more folds: the same rows and means, in X's canonical order
        return Xd[first], mean[first], counts[first]
    row_inv = inv[groups[1]]  # each row's group among X's own
    n = np.bincount(row_inv)
    return Xd[first], np.bincount(row_inv, weights=logy) / n, n


def _tree_predict(m, X: np.ndarray) -> np.ndarray:
    """``m.predict(X)`` for a gradient-boosting model; below SMALL_FIT_ROWS rows on one OpenMP thread:
    prediction runs one OpenMP region per tree, and on a busy host each waits for a scheduler tick
    (300 trees: 3.5 s for 10k rows against 0.1 s on one thread)."""
    if len(X) < SMALL_FIT_ROWS:
        with _threadpools().limit(limits=1, user_api="openmp"):
            return m.predict(X)
    return m.predict(X)


def _conformal_quantile(r: np.ndarray, coverage: float) -> float:
    """The conformal quantile of absolute residuals: the ceil((n + 1) * coverage)-th smallest."""
    q = min(1.0, math.ceil((len(r) + 1) * coverage) / len(r))
    return float(np.quantile(r, q))


class LogIntervalMixin:
    """``predict_interval`` from a fitted ``log_halfwidth_``: [p / e^h, p * e^h] around ``predict``."""

    def predict_interval(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.predict(X)  # type: ignore[attr-defined]
        f = math.exp(self.log_halfwidth_)  # type: ignore[attr-defined]
        return p, p / f, p * f


LOO_MAX_ROWS = 100  # a calibrator's interval: leave-one-out up to this many rows, HOLDOUT_FOLDS folds beyond
HOLDOUT_FOLDS = 10


def loo_log_halfwidth(n: int, log_errors_without: Callable[[np.ndarray], np.ndarray], coverage: float) -> float:
    """The conformal quantile of the ``n`` held-out |log ratio| errors (0 below 3 points): the
    interval of a calibrator fitted on a handful of shots. ``log_errors_without(test)``: the errors
    on the rows of the boolean mask ``test`` of the calibrator fitted on the others. Each row is
    left out alone up to LOO_MAX_ROWS rows; beyond that (a calibrator fitted on thousands of rows, as
    bench/predictor_quality.py's span check does) in HOLDOUT_FOLDS random folds, so that the fit is
    not repeated once per row."""
    if n < 3:
        return _conformal_quantile(np.array([0.0]), coverage)
    groups = np.arange(n) if n <= LOO_MAX_ROWS else np.random.default_rng(0).permutation(n) % HOLDOUT_FOLDS
    r = np.empty(n)
    for g in range(int(groups.max()) + 1):
        test = groups == g
        r[test] = log_errors_without(test)
    return _conformal_quantile(r, coverage)


class LatencyRegressor(LogIntervalMixin, RegressorMixin, BaseEstimator):
    """Model features -> a positive target (latency ms or energy mJ), with intervals.

    Parameters
    ----------
    kind : "linear" (ridge in raw target space, alpha by GCV), "gbm" (HistGradientBoosting on log
        target) or "additive" (latency = overhead + non-negative cost per unit of each additive graph
        feature, fitted for relative error; see :func:`_fit_additive`)
    features_at : the column where the graph features (:data:`FEATURE_NAMES`) start in ``X`` (the
        zero-shot facts model puts the device facts first); the linear and gbm kinds skip their
        kernel-level terms, the additive kind reads them
    coverage : interval coverage: conformal quantile of ``cv``-fold out-of-fold log-ratio residuals,
        or from :data:`SPLIT_CONFORMAL_ROWS` rows on, of a random 20 % calibration split of whole
        variants (one fit; the interval is for variants the model never saw)
    """

    def __init__(
        self,
        kind: str = "linear",
        coverage: float = 0.9,
        cv: int = 5,
        n_trees: int = 300,
        random_state: int = 0,
        features_at: int = 0,
    ):
        self.kind = kind
        self.features_at = features_at
        self.coverage = coverage
        self.cv = cv
        self.n_trees = n_trees
        self.random_state = random_state

    def __sklearn_tags__(self):
        return _positive_tags(super().__sklearn_tags__())

    def _make(self, large: bool = False):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.kind == "linear":
            # gcv_mode "auto" means "cov" here (n > p): its hat diagonal is a Python loop over
            # p-row batches for each of the 15 alphas, ~20 % slower than "svd" at 40k x 59 (same
            # leave-one-out criterion, same alpha). Small fits keep the default, bit for bit.
            gcv = {"gcv_mode": "svd"} if large else {}
            return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15), **gcv))
        if self.kind == "additive":
            return None  # fitted by _fit_additive
        if self.kind == "gbm":
            return HistGradientBoostingRegressor(
                max_iter=self.n_trees, learning_rate=0.08, random_state=self.random_state, early_stopping=False
            )
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def _select(self, X):
        """The columns this kind reads (:func:`_model_columns`), selected once per fit / predict:
        a copy made in each of a 1M-row retrain's 40 threaded fits held the GIL long enough to
        slow the whole fit by a quarter."""
        if self.kind in ("additive", "auto"):
            return X
        cols = _model_columns(X.shape[1], self.features_at)
        return X if isinstance(cols, slice) else X[:, cols]

    def _fit_one(self, X, y, large: bool = False, *, groups: Groups | None = None):
        """One fit on selected columns (:meth:`_select`); ``large``: the training part of a fit on
        >= SPLIT_CONFORMAL_ROWS rows. ``groups``: the :func:`row_groups` of the same rows with every
        column, when the caller has them (a large fit folds repeats by them instead of hashing the
        rows again)."""
        large = large or len(y) >= SPLIT_CONFORMAL_ROWS
        if self.kind == "additive":
            return _fit_additive(X, y, fold=large, groups=groups)
        if self.kind == "gbm" and large:
            return self._fit_large_gbm(X, y, groups=groups)
        m = self._make(large)
        if self.kind == "gbm":
            return _fit_gbm(m, X, np.log(y))
        if large:
            # a ridge of 8k-1M x 59 on one OpenBLAS thread: 2 threads on a busy 2-core host made a
            # 40k-row fit 3.5x slower (2.4 s against 0.65 s); PredictorSet.fit runs classes side by
            # side instead
            with _threadpools().limit(limits=1, user_api="blas"):
                m.fit(X, y)
            return m
        m.fit(X, y)
        return m

    def _fit_large_gbm(self, X, y, *, groups: Groups | None = None):
        """A gradient-boosting fit on >= SPLIT_CONFORMAL_ROWS rows: one row per variant, early stopping.

        1. Rows with identical features (one variant measured again and again on a class: every
           sweep, board and runtime config adds one) become one row whose target is their mean log
           target (the geometric mean of the repeats), as nn-Meter and HELP train on one latency per
           model and device. Each variant then counts once, however often it was measured, and
           ``min_samples_leaf`` counts distinct variants. (Weighting the folded row by its count
           would reproduce the unfolded fit exactly for squared loss, but sklearn's weighted
           histograms made a fit 3x slower.) The interval is calibrated by :meth:`fit` on the
           single measurements of held-out variants.
        2. From EARLY_STOPPING_MIN_VARIANTS distinct rows, early stopping on a 10 % validation split
           (10 rounds without a 1e-7 gain): sklearn's own default (``early_stopping="auto"``) from
           10k rows. A fit costs about the same per round at 4k rows as at 40k (split finding over
           59 features x 255 bins dominates).
        Together: on 1M rows of 20 classes (bench/predictor_retrain.py) the 41 fits of 300 rounds on
        40k rows took 112 s; folded and stopped early they take about a quarter of it.
        """
        logy = np.log(y)
        # (distinct rows in a canonical order: the fit does not depend on the order rows came in)
        X, logy, _ = fold_repeats(X, logy) if groups is None else fold_refined(X, logy, groups)
        m = self._make(large=True)
        if len(logy) >= EARLY_STOPPING_MIN_VARIANTS:  # a validation split of >= 50 variants
            m.set_params(early_stopping=True, validation_fraction=0.1, n_iter_no_change=10, tol=1e-7)
        return _fit_gbm(m, X, logy)

    def _raw(self, m, X):
        if self.kind == "auto":
            return m.predict(X)
        if self.kind == "additive":
            return _additive_predict(m, X)
        if self.kind == "gbm":
            return np.exp(_tree_predict(m, X))
        return np.maximum(m.predict(X), MIN_MS)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y <= 0):
            raise ValueError("targets must be > 0 (latency ms / energy mJ)")
        return self._fit_rows(X, y, row_groups(X))

    def _fit_rows(self, X, y, groups: Groups):
        """:meth:`fit` on validated rows and their :func:`row_groups` (found once: kind="auto" fits
        both of its kinds on them)."""
        if self.kind == "auto":
            return self._fit_auto(X, y, groups)
        self.__dict__.pop("chosen_kind_", None)  # from an earlier auto fit of this object
        X = self._select(X)
        n = len(y)
        if n >= SPLIT_CONFORMAL_ROWS:
            # Large n: split-conformal, one fit instead of cv + 1. A random CALIBRATION_FRACTION of
            # the rows is held out; the model is fitted on the rest and *that* model is the one kept,
            # so the held-out log-ratio residuals are exchangeable with a new variant's and the quantile
            # below gives the finite-sample coverage guarantee (>= coverage, marginally). Fitting a
            # final model on all rows and calibrating it with a fold model's residuals (what the K-fold
            # path does) has no such guarantee and costs a second fit; at >= 10k rows the 20% fewer
            # training rows change the fit very little, while the calibration set (>= 2000 rows)
            # pins the 90% quantile's coverage to about +-0.7 %.
            # The calibration rows are whole variants (all rows of a distinct feature row), drawn at
            # random until they hold CALIBRATION_FRACTION of the rows: then the residuals are those
            # of variants the model never saw, which is what the selector asks about (a random row
            # split puts a variant's repeats on both sides, and the interval would only measure the
            # spread of repeats). With fewer than MIN_CALIBRATION_VARIANTS variants, single rows.
            # (variants told apart by every column, kernel terms included: kind="auto" scores
            # both of its kinds on the same rows)
            cal, tr = _calibration_split(groups, np.random.default_rng(self.random_state))
            self._model = self._fit_one(X[tr], y[tr], large=True, groups=subset_groups(groups, tr))
            # (each distinct calibration row predicted once: a variant's repeats share a prediction)
            first, inv, _ = subset_groups(groups, cal)
            r = np.abs(np.log(self._raw(self._model, X[cal[first]])[inv] / y[cal]))
            self.log_halfwidth_ = _conformal_quantile(r, self.coverage)
            self.heldout_log_error_ = float(r.mean())
            return self
        self._model = self._fit_one(X, y)
        # conformal residual quantile from K-fold out-of-fold log ratios (small n: every row counts).
        # The folds hold whole variants: with a variant's repeats on both sides of a fold, trees
        # recall the repeat and their "held-out" error (kind="auto" compares it) flatters them.
        first, grp, _ = groups
        k = min(self.cv, len(first))
        resid = []
        if k >= 2:
            rng = np.random.default_rng(self.random_state)
            folds = rng.permutation(n) % k if len(first) == n else rng.permutation(len(first))[grp] % k
            for f in range(k):
                tr, te = folds != f, folds == f
                if tr.sum() < 2 or te.sum() == 0:
                    continue
                m = self._fit_one(X[tr], y[tr])
                resid.append(np.abs(np.log(self._raw(m, X[te]) / y[te])))
        r = np.concatenate(resid) if resid else np.array([0.0])
        self.log_halfwidth_ = _conformal_quantile(r, self.coverage)
        self.heldout_log_error_ = float(r.mean()) if resid else math.nan  # nothing was held out
        return self

    def _fit_auto(self, X, y, groups: Groups):
        """``kind="auto"``: fit each of :data:`AUTO_KINDS` and keep the one whose held-out mean
        |log error| is lower (the out-of-fold or calibration residuals its interval is made from:
        the same rows for both, whole variants held out). Neither wins everywhere: on LatBench's i7 trees did, on an
        emulated board's sampled CNNs the additive sum (README, "Which --kind")."""
        from sklearn.base import clone

        fits = []
        for k in AUTO_KINDS:
            est = clone(self).set_params(kind=k)
            est.n_features_in_ = self.n_features_in_  # what fit's validate_data would set on it
            fits.append(est._fit_rows(X, y, groups))
        # nothing held out (cv < 2, or a single variant): the first of AUTO_KINDS
        best = min(fits, key=lambda e: (math.isnan(e.heldout_log_error_), e.heldout_log_error_))
        self._model = best
        self.chosen_kind_ = best.kind
        self.log_halfwidth_ = best.log_halfwidth_
        self.heldout_log_error_ = best.heldout_log_error_
        return self

    def predict(self, X):
        check_is_fitted(self, "log_halfwidth_")
        X = validate_data(self, X, reset=False)
        return self._raw(self._model, self._select(X))

    # Persistence: a gradient-boosting model holds n_trees TreePredictor objects of 3 arrays each.
    # skops writes every array as its own zip member and checks each name against the whole member
    # list, so a 40-class set (12k trees, 37k arrays) took 150 s to save; the trees go out as 3
    # concatenated arrays per model instead and are sliced back into TreePredictors on load.
    def __getstate__(self):
        import copy

        state = dict(super().__getstate__())  # BaseEstimator's is this object's own __dict__ here
        m = state.get("_model")
        if getattr(m, "_predictors", None):
            m = copy.copy(m)
            state["_model"] = m
            state["_trees"] = _pack_trees(m.__dict__.pop("_predictors"))
        elif isinstance(m, dict) and getattr(m.get("residual"), "_predictors", None):
            # the additive kind's residual trees (_fit_residual_trees), packed the same way
            r = copy.copy(m["residual"])
            state["_model"] = {**m, "residual": r}
            state["_residual_trees"] = _pack_trees(r.__dict__.pop("_predictors"))
        return state

    def __setstate__(self, state):
        state = dict(state)
        trees = state.pop("_trees", None)
        residual_trees = state.pop("_residual_trees", None)
        super().__setstate__(state)
        if trees is not None:
            self._model._predictors = _unpack_trees(trees)
        if residual_trees is not None:
            self._model["residual"]._predictors = _unpack_trees(residual_trees)


def _fit_gbm(m, X: np.ndarray, logy: np.ndarray):
    """Fit a HistGradientBoostingRegressor on log targets, its leaf size scaled with the data.

    sklearn's default min_samples_leaf=20 cannot split a class measured on ~30 variants (the
    prediction would be one constant). Below SMALL_FIT_ROWS the fit runs on one OpenMP thread: the
    per-iteration fork/join costs more than it saves on small data, and on a busy 2-core host the
    spinning threads slow a fit down 5-10x.
    """
    m.set_params(min_samples_leaf=int(max(2, min(20, len(logy) // 10))))
    if len(logy) < SMALL_FIT_ROWS:
        with _threadpools().limit(limits=1, user_api="openmp"):
            return m.fit(X, logy)
    return m.fit(X, logy)


def _calibration_split(groups: Groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, training rows) of a split-conformal fit: random whole variants (distinct
    feature rows) until they hold CALIBRATION_FRACTION of the rows; single random rows instead
    with fewer than MIN_CALIBRATION_VARIANTS variants or when one variant would take over twice
    the share."""
    _, grp, sizes = groups
    n = len(grp)
    n_cal = int(round(CALIBRATION_FRACTION * n))
    if len(sizes) >= MIN_CALIBRATION_VARIANTS:
        order = rng.permutation(len(sizes))
        k = int(np.searchsorted(np.cumsum(sizes[order]), n_cal)) + 1
        is_cal = np.isin(grp, order[:k])
        if is_cal.sum() <= 2 * n_cal:
            return np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
    perm = rng.permutation(n)
    return np.sort(perm[:n_cal]), np.sort(perm[n_cal:])


ADDITIVE_COLUMNS = np.array([i for i, n in enumerate(FEATURE_NAMES) if n in ADDITIVE_NAMES], dtype=np.int64)
KINDS = ("linear", "gbm", "additive", "auto")
AUTO_KINDS = ("gbm", "additive")  # what kind="auto" chooses from, per fit
OUTPUT_CALIBRATION_MIN_ROWS = 30  # distinct variants an additive fit needs before its output is calibrated
OUTPUT_CALIBRATION_FOLDS = 5
# residual trees of the additive kind (_fit_residual_trees): the distinct variants a fit needs before
# it grows them, and how much of their log correction is applied
RESIDUAL_MIN_VARIANTS = 40
RESIDUAL_SHRINK = 0.25
RESIDUAL_FOLDS = 5
# (100 iterations at 0.1 scored the same on session 16's board runs within +-0.02 and saved 1.5-4 s
# of a 46 s 1M-row retrain: kept as chosen)
RESIDUAL_TREES = {"max_iter": 200, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 10}
# the additive kind's third stage, a Gaussian process on what the sum and its trees still get wrong
# (_fit_residual_gp): it runs from RESIDUAL_MIN_VARIANTS to KRIGING_MAX_VARIANTS distinct variants
# (its fit is cubic in them; a class measured on thousands has its trees), on the log of these
# model-level features (standardised)
KRIGING_MAX_VARIANTS = 600
KRIGING_MAX_ITER = 50
KRIGING_KEEP = 0.9  # kept when its leave-one-out error is under this share of the error it corrects
KRIGING_FEATURES = (
    "macs",
    "params",
    "act_bytes",
    "input_h",
    "n_nodes",
    "depthwise_macs",
    "conv_macs",
    "pointwise_macs",
)
KRIGING_COLUMNS = np.array([FEATURE_NAMES.index(n) for n in KRIGING_FEATURES], dtype=np.int64)


def _model_columns(width: int, features_at: int) -> np.ndarray | slice:
    """Columns the linear/gbm kinds read: all but the kernel terms of the graph-feature block that
    starts at column ``features_at`` (data too narrow to hold that block: every column).

    The kernel terms split the convolutions' MACs by kernel size and stride, which pays off in the
    additive form (an nn-Meter-style sum of kernel costs); trees gained nothing from them on
    bench/fleet_class_accuracy.py's measurements and take about twice as long to fit with them."""
    if width < features_at + len(FEATURE_NAMES):
        return slice(None)
    kernel = features_at + np.flatnonzero(np.isin(FEATURE_NAMES, KERNEL_NAMES))
    return np.setdiff1d(np.arange(width), kernel)


def _nnls_fit(A: np.ndarray, y: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Non-negative costs and overhead minimising the relative squared error (rows weighted 1/y;
    a folded row stands for ``counts`` rows)."""
    from scipy.optimize import nnls

    A = np.hstack([A, np.ones((len(A), 1))])
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    w = 1.0 / y if counts is None else np.sqrt(counts) / y
    coef, _ = nnls((A / scale) * w[:, None], y * w, maxiter=50 * A.shape[1])
    coef = coef / scale
    return coef[:-1], float(coef[-1])


def _isotonic_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip").fit(x, y)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def _apply_knots(knots: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The monotone map at ``x``: interpolated between knots; beyond the ends, the end's offset
    (the ratio at the largest measured model carries over to a larger one, instead of the clipped
    constant an isotonic fit would give)."""
    kx, ky = knots
    out = np.interp(x, kx, ky)
    lo, hi = x < kx[0], x > kx[-1]
    out[lo] = x[lo] + (ky[0] - kx[0])
    out[hi] = x[hi] + (ky[-1] - kx[-1])
    return out


def _output_calibration(A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A monotone map from the additive sum to the measured latency, in log space, or None.

    A device's wall-clock time need not be linear in the work: a CPU quota throttles a run longer
    than its slice (an emulated board's 10 ms in every 20 ms), clocks and caches change with the
    load. The map is an isotonic regression of log latency on the log of *out-of-fold* additive
    predictions (5 folds of distinct variants, each fold's costs fitted without it), and it is kept
    only when it beats the identity out of fold too (each fold's map fitted on the other folds).
    Needs OUTPUT_CALIBRATION_MIN_ROWS distinct variants; repeats of one variant are folded into one
    row (their geometric mean), so a variant measured often does not dominate the map.
    """
    A, ly, _ = fold_repeats(A, np.log(y))
    if len(ly) < OUTPUT_CALIBRATION_MIN_ROWS:
        return None
    yv = np.exp(ly)
    folds = np.random.default_rng(0).permutation(len(ly)) % OUTPUT_CALIBRATION_FOLDS
    lx = np.empty(len(ly))
    for f in range(OUTPUT_CALIBRATION_FOLDS):
        tr = folds != f
        coef, overhead = _nnls_fit(A[tr], yv[tr])
        lx[~tr] = np.log(np.maximum(A[~tr] @ coef + overhead, MIN_MS))
    err_cal = np.empty(len(ly))
    for f in range(OUTPUT_CALIBRATION_FOLDS):
        tr = folds != f
        err_cal[~tr] = np.abs(_apply_knots(_isotonic_knots(lx[tr], ly[tr]), lx[~tr]) - ly[~tr])
    if err_cal.mean() >= np.abs(lx - ly).mean():
        return None
    return _isotonic_knots(lx, ly)


def _additive_predict(m: dict[str, Any], X: np.ndarray) -> np.ndarray:
    p = np.maximum(X[:, m["columns"]] @ m["coef"] + m["overhead"], MIN_MS)
    if m.get("calibration_x") is not None:
        p = np.exp(_apply_knots((m["calibration_x"], m["calibration_y"]), np.log(p)))
    if m.get("residual") is not None:  # (predictor files from before the residual trees have none)
        r = _tree_predict(m["residual"], X[:, m["residual_columns"]])
        p = p * np.exp(m["residual_shrink"] * r)
    if m.get("kriging") is not None:  # (nor from before the Gaussian process)
        p = p * np.exp(_kriging_predict(m["kriging"], X))
    return p


def _kriging_inputs(X: np.ndarray) -> np.ndarray:
    """The Gaussian process's inputs: log(1 + x) of KRIGING_FEATURES on graph features; on data of
    another width (as in _fit_additive) every column as it is."""
    if X.shape[1] == len(FEATURE_NAMES):
        return np.log1p(np.maximum(X[:, KRIGING_COLUMNS], 0.0))
    return np.asarray(X, dtype=np.float64)


def _kriging_predict(g: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """The posterior mean of :func:`_fit_residual_gp`'s process at ``X`` (a log correction): an
    ARD squared-exponential kernel against the training inputs, times their dual coefficients."""
    Z = (_kriging_inputs(X) - g["mean"]) / g["scale"] / g["length_scale"]
    T = g["inputs"] / g["length_scale"]
    t2 = (T**2).sum(axis=1)
    out = np.empty(len(Z))
    for i in range(0, len(Z), 8192):  # (a block of queries x the training variants at a time)
        z = Z[i : i + 8192]
        d2 = np.maximum((z**2).sum(axis=1)[:, None] + t2[None, :] - 2.0 * z @ T.T, 0.0)
        out[i : i + 8192] = (float(g["amplitude"]) * np.exp(-0.5 * d2)) @ g["dual_coef"]
    return out


def _kriging_optimizer(obj_func: Callable, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """sklearn's L-BFGS-B, one start, at most KRIGING_MAX_ITER iterations: the marginal likelihood
    of a few hundred variants can wander for a minute along a flat ridge for no gain in fit."""
    from scipy.optimize import minimize

    res = minimize(
        obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds, options={"maxiter": KRIGING_MAX_ITER}
    )
    return res.x, float(res.fun)


def _fit_residual_gp(X: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """A Gaussian process (kriging) on the log ratio of each variant's latency to the fitted sum
    (with its trees): the additive kind's third stage.

    A zoo is built from a few architectures at several widths and input sizes, and what the sum of
    costs gets wrong about one variant it gets wrong in much the same way about its neighbours (the
    same family one width or resolution away). A process with one length scale per input
    (KRIGING_FEATURES, learned by the marginal likelihood, with a noise term) carries those errors
    over to a variant near measured ones, and falls back to zero, the sum itself, far from them.
    On session 16's whole-core board runs (bench/fleet_class_accuracy.py --load) it lifted the 155
    zoo variants' 5-fold acc10 from 0.871 / 0.852 to 0.935 / 0.961 (graph levels all / extended)
    and left the 250 sampled CNNs, which have no neighbours, where they were. ``X``, ``y``, ``p``:
    one row per distinct variant, its latency and the prediction before this stage. Returns the
    model dict's ``kriging`` key, plain arrays (skops stores them as they are), or nothing when the
    process fails its leave-one-out check (below).
    """
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as Constant

    Z = _kriging_inputs(X)
    mean, scale = Z.mean(axis=0), Z.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (Z - mean) / scale
    kernel = Constant(0.01, (1e-5, 10.0)) * RBF(np.ones(Z.shape[1]), (1e-2, 1e3)) + WhiteKernel(1e-3, (1e-6, 1e-1))
    gp = GaussianProcessRegressor(kernel, optimizer=_kriging_optimizer, random_state=0)
    r = np.log(y / p)
    with warnings.catch_warnings():  # a length scale at its bound: that input does not matter
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(Z, r)
    # kept only if it predicts each variant from the others better than no correction does: the
    # process's leave-one-out errors in closed form, alpha_i / (K^-1)_ii (Rasmussen & Williams,
    # 5.4.2). A wall-clock staircase (a CPU quota's throttle) is no smooth function of the features,
    # and there an interpolating process would do harm.
    from scipy.linalg import cho_solve

    k_inv_diag = np.diag(cho_solve((gp.L_, True), np.eye(len(r))))
    loo = np.asarray(gp.alpha_).ravel() / k_inv_diag
    if np.abs(loo).mean() >= KRIGING_KEEP * np.abs(r).mean():
        return {}
    k = gp.kernel_.k1
    return {
        "kriging": {
            "inputs": Z,
            "mean": mean,
            "scale": scale,
            "length_scale": np.asarray(k.k2.length_scale, dtype=np.float64),
            "amplitude": np.array(k.k1.constant_value, dtype=np.float64),
            "dual_coef": np.asarray(gp.alpha_, dtype=np.float64).ravel(),
        }
    }


def _fit_residual_trees(X: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    """Shallow trees on what the sum of costs gets wrong: the additive kind's second stage.

    A sum of per-unit costs cannot follow effects that depend on a layer's shape (a 32 px variant's
    small GEMMs, an activation that spills out of cache), and on an emulated board its errors come in
    runs (README, "Where the board is steady"). The trees are fitted on the log ratio of each
    variant's latency to its *out-of-fold* additive prediction (RESIDUAL_FOLDS folds of whole
    variants, each fitted without its fold), on the model-level features the gbm kind reads, and
    only RESIDUAL_SHRINK of their correction is applied: the sum stays the model and the trees
    nudge it. Chosen on four sets of board measurements (155 zoo variants and 250 sampled CNNs, each
    on a 0.5-core and a whole-core board, both graph levels): 5-fold acc10 rose on 15 of 16 of them,
    by 0.02 on average; half the correction did better on the steady boards and worse on the
    quota-bent ones, the whole correction worse on most. ``X``, ``y``: one row per distinct variant
    (``counts``: how many rows each stands for). Returns the keys the model dict gets.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    folds = np.random.default_rng(1).permutation(len(y)) % RESIDUAL_FOLDS
    oof = np.empty(len(y))
    for f in range(RESIDUAL_FOLDS):
        tr = folds != f
        inner = _fit_additive(X[tr], y[tr], counts=counts[tr], residual=False)
        oof[~tr] = _additive_predict(inner, X[~tr])
    # the graph features without their kernel terms, as the gbm kind reads them; data of another
    # width (as in _fit_additive): every column
    cols = np.arange(X.shape[1], dtype=np.int64)
    if X.shape[1] == len(FEATURE_NAMES):
        cols = np.asarray(_model_columns(X.shape[1], 0))
    trees = HistGradientBoostingRegressor(**RESIDUAL_TREES, random_state=0, early_stopping=False)
    with _threadpools().limit(limits=1, user_api="openmp"):  # a few hundred rows: see _fit_gbm
        trees.fit(X[:, cols], np.log(y / oof))
    return {"residual": trees, "residual_columns": cols, "residual_shrink": RESIDUAL_SHRINK}


def _fit_additive(
    X: np.ndarray,
    y: np.ndarray,
    fold: bool = False,
    *,
    counts: np.ndarray | None = None,
    residual: bool = True,
    groups: Groups | None = None,
) -> dict[str, Any]:
    """``kind="additive"``: y = overhead + sum_j c_j * x_j with every c_j >= 0 and overhead >= 0.

    The x_j are the additive graph features (MACs, bytes, node count, each op category's
    count/MACs/params/outputs, and the kernel-level terms: each convolution bucket's count, MACs,
    SIMD-padded MACs and in/out elements; a model's latency is the sum of its kernels' costs, as
    nn-Meter's kernel sums are), fitted by non-negative least squares on *relative* errors (each row
    weighted by 1/y, so a 0.1 ms model counts as much as a 100 ms one: what +-10 % accuracy and
    MAPE score). Non-negative costs extrapolate sanely to a wider or larger variant than any
    measured, where trees predict the largest latency they saw. Precision and input shape are not
    terms of their own (they act through the MACs and bytes they change), so one class measured at
    several precisions whose per-MAC costs differ (int8 against fp32 kernels) carries that as
    error. On data of another width (the estimator checks) every column is taken as additive.
    The sum may then be mapped to latency by a monotone map (:func:`_output_calibration`), and from
    RESIDUAL_MIN_VARIANTS distinct variants on, ``residual`` adds shrunk trees on its out-of-fold
    errors (:func:`_fit_residual_trees`) and, up to KRIGING_MAX_VARIANTS, a Gaussian process on
    what remains (:func:`_fit_residual_gp`).
    ``fold`` (a fit on >= SPLIT_CONFORMAL_ROWS rows): identical rows (a variant's repeats) become
    one row, their geometric mean, weighted by their count, as the large gbm fit does. ``counts``:
    the rows are folded already, each standing for that many. ``groups``: ``row_groups(X)``, when the
    caller has them.
    """
    cols = ADDITIVE_COLUMNS if X.shape[1] == len(FEATURE_NAMES) else np.arange(X.shape[1], dtype=np.int64)
    if fold:
        X, ly, counts = fold_repeats(X, np.log(y), groups)
        y = np.exp(ly)
    coef, overhead = _nnls_fit(X[:, cols], y, None if counts is None else counts.astype(np.float64))
    cal = _output_calibration(X[:, cols], y)
    m: dict[str, Any] = {
        "columns": cols,
        "coef": coef,
        "overhead": overhead,
        "calibration_x": None if cal is None else cal[0],
        "calibration_y": None if cal is None else cal[1],
    }
    if residual:
        # one row per distinct variant (a variant's repeats: their geometric mean), so that the
        # out-of-fold errors are those of variants the fit never saw; folded rows are that already
        if counts is None:
            X, ly, counts = fold_repeats(X, np.log(y))
            y = np.exp(ly)
        if len(y) >= RESIDUAL_MIN_VARIANTS:
            m.update(_fit_residual_trees(X, y, counts.astype(np.float64)))
            if len(y) <= KRIGING_MAX_VARIANTS:
                m.update(_fit_residual_gp(X, y, _additive_predict(m, X)))
    return m


def _pack_trees(predictors: list[list[Any]]) -> dict[str, Any]:
    """HistGradientBoosting ``_predictors`` (iterations x trees) -> a few flat arrays."""
    flat = [t for it in predictors for t in it]
    out: dict[str, Any] = {"per_iteration": len(predictors[0]) if predictors else 0}
    for name in ("nodes", "binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        arrays = [getattr(t, name) for t in flat]
        out[name] = np.concatenate(arrays)
        out[f"{name}_len"] = np.array([len(a) for a in arrays], dtype=np.int64)
    return out


def _unpack_trees(packed: Mapping[str, Any]) -> list[list[Any]]:
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    parts = {}
    for name in ("nodes", "binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        cuts = np.cumsum(packed[f"{name}_len"])[:-1]
        parts[name] = np.split(np.ascontiguousarray(packed[name]), cuts)
    trees = [TreePredictor(*t) for t in zip(*parts.values(), strict=True)]
    k = int(packed["per_iteration"])
    return [trees[i : i + k] for i in range(0, len(trees), k)] if k else []


def nonneg_ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Exact non-negative ridge ``y ~ b + X w`` (w >= 0, ``alpha`` on w, b unpenalised): bounded
    least squares on the centred rows plus sqrt(alpha) I rows. Returns (w, b). sklearn's
    ``Ridge(positive=True)`` runs L-BFGS-B, whose stopping tolerance moved a 10-shot solution by up
    to 6 % in a prediction."""
    from scipy.optimize import lsq_linear

    mu, ym = X.mean(axis=0), float(y.mean())
    d = X.shape[1]
    A = np.vstack([X - mu, math.sqrt(alpha) * np.eye(d)])
    rhs = np.concatenate([y - ym, np.zeros(d)])
    w = lsq_linear(A, rhs, bounds=(0.0, np.inf), method="bvls").x if d else np.zeros(0)
    return w, ym - float(mu @ w)


KSHOT_ALPHA_SCALE_MS = 10.0  # the k-shot mix's alpha holds as given for shots with a median from this on (ms)


def mix_alpha(alpha: float, y: np.ndarray) -> float:
    """The ridge penalty of a k-shot mix on shots ``y`` (ms): ``alpha`` as given when their median is
    KSHOT_ALPHA_SCALE_MS or more, else ``alpha * (median / KSHOT_ALPHA_SCALE_MS)**2``, the fit of
    the same rows in units of their median times 10 ms. A penalty of fixed size in ms outweighed the
    fit of sub-millisecond shots: 0.05-0.1 ms probe models (small models on an emulated board) got
    mix weights of about 0.02 and every prediction near the shots' mean. Below the scale the mix is
    the same at any scale. 10 ms rather than 1 ms (which left every dataset figure as it was) was
    chosen on development devices, leave-one-device-out: HELP NB201 Spearman 0.9507 against 0.9509,
    LatBench acc10 0.8015 against 0.797 (README, "The mix's penalty scaled to the shots")."""
    m = float(np.median(y)) if len(y) else KSHOT_ALPHA_SCALE_MS
    return alpha if m >= KSHOT_ALPHA_SCALE_MS else alpha * (m / KSHOT_ALPHA_SCALE_MS) ** 2


class KShotCalibrator(LogIntervalMixin, RegressorMixin, BaseEstimator):
    """Reference-device predictions (n, D) -> the new device's latency, fitted on k shots.

    Non-negative ridge in raw ms: y = b + sum_d w_d * x_d with w >= 0, solved exactly
    (:func:`nonneg_ridge`; sklearn's iterative ``Ridge(positive=True)``, used until session 18,
    stopped short of the optimum by enough to move LatBench development devices' acc10 by up to
    0.09). ``alpha`` was chosen on development devices (leave-one-device-out with HELP's 10
    reference archs), in ms; on shots under 10 ms it shrinks with their median (:func:`mix_alpha`).
    The interval: the conformal quantile of held-out |log ratio| errors (:func:`loo_log_halfwidth`).
    """

    def __init__(self, alpha: float = 0.1, coverage: float = 0.9):
        self.alpha = alpha
        self.coverage = coverage

    def __sklearn_tags__(self):
        return _positive_tags(super().__sklearn_tags__())

    def _fit_one(self, X, y) -> tuple[np.ndarray, float]:
        y = np.asarray(y, dtype=np.float64)
        return nonneg_ridge(np.asarray(X, dtype=np.float64), y, mix_alpha(self.alpha, y))

    @staticmethod
    def _apply(model: tuple[np.ndarray, float], X) -> np.ndarray:
        w, b = model
        return np.asarray(X, dtype=np.float64) @ w + b

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y <= 0):
            raise ValueError("targets must be > 0")
        self._model = self._fit_one(X, y)
        n = len(y)

        def errors(test: np.ndarray) -> np.ndarray:
            p = np.maximum(self._apply(self._fit_one(X[~test], y[~test]), X[test]), MIN_MS)
            return np.abs(np.log(p / y[test]))

        self.log_halfwidth_ = loo_log_halfwidth(n, errors, self.coverage)
        return self

    def predict(self, X):
        check_is_fitted(self, "log_halfwidth_")
        X = validate_data(self, X, reset=False)
        return np.maximum(self._apply(self._model, X), MIN_MS)


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
    # with energy: where it comes from (predicted_energy_source); a note says why energy is missing
    # (k-shot, zero-shot, a class without an energy model) or what its label lacks
    energy_source: str | None = None
    energy_note: str | None = None


MIN_ROWS_PER_CLASS = 20

#: Why a device the predictor was not trained on gets no predicted energy
NO_ENERGY_UNSEEN = (
    "{how} predicts latency only: no energy is predicted for a device the predictor was not trained on; "
    "`edgeatlas recommend` estimates it from the device's power model (active_w x latency), or measure "
    "energy on the device and retrain"
)


def predicted_energy_source(method: str, sources: Sequence[str] | None) -> str:
    """The label of a predicted energy: ``predicted:<method> from <the training rows' energy_source>``,
    e.g. ``predicted:class:pi5 from estimated:power-model-active_w`` (several: comma-separated).
    Without recorded sources (a file trained before they were recorded): ``predicted:<method>``."""
    return f"predicted:{method}" + (f" from {', '.join(sources)}" if sources else "")


class PredictorSet:
    """Per-class latency/energy regressors + the unseen-device models, as one persisted object.

    ``classes[name] = {"latency": LatencyRegressor, "energy": LatencyRegressor | None}``;
    ``probe_features`` = features of the fixed probe set (for k-shot from probe latencies);
    ``facts_model`` = zero-shot regressor on [facts | features] (None without device facts);
    ``measured_ids`` / ``measured_classes`` / ``measured_rows`` / ``measured_ms``: each class's own
    latency of the variants it was trained on (geometric mean of the repeats), stored sparse: one
    sorted id array, and per class the positions of its variants in it (int32) with their latencies
    (float32). numpy arrays keep the skops file small (a dict of 80k floats made it 39 MB and 3 s to
    load). Set with :meth:`set_measured`; used by k-shot (see :meth:`predict`).
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
        self.measured_ids = np.array([], dtype=str)
        self.measured_classes: list[str] = []
        self.measured_rows: list[np.ndarray] = []
        self.measured_ms: list[np.ndarray] = []

    def set_measured(self, measured: Mapping[str, Mapping[str, float]]) -> None:
        """``measured[class] = {variant id: latency ms}``: the classes' own measurements (k-shot)."""
        ids = sorted({v for m in measured.values() for v in m})
        pos = {v: i for i, v in enumerate(ids)}
        self.measured_ids = np.array(ids, dtype=str)
        self.measured_classes = list(measured)
        self.measured_rows = [np.array([pos[v] for v in measured[c]], dtype=np.int32) for c in self.measured_classes]
        self.measured_ms = [np.array(list(measured[c].values()), dtype=np.float32) for c in self.measured_classes]

    def measured_matrix(self, variant_ids: Sequence[str | None], names: Sequence[str]) -> np.ndarray:
        """(len(variant_ids), len(names)): each class's measurement of each variant, NaN where it has
        none (an id of None, an unknown id, a class that never measured it, or a file saved before
        measurements were kept)."""
        out = np.full((len(variant_ids), len(names)), np.nan)
        known = getattr(self, "measured_ids", None)
        if known is None or len(known) == 0 or not isinstance(getattr(self, "measured_rows", None), list):
            return out
        given = np.array([v is not None for v in variant_ids], dtype=bool)
        vids = np.array([str(v) for v in variant_ids if v is not None], dtype=str)
        at = np.minimum(np.searchsorted(known, vids), len(known) - 1)
        hit = known[at] == vids
        rows = np.flatnonzero(given)[hit]  # output rows with a known id
        where = np.full(len(known), -1, dtype=np.int64)
        for j, c in enumerate(names):
            if c not in self.measured_classes:
                continue
            k = self.measured_classes.index(c)
            where[:] = -1
            where[self.measured_rows[k]] = np.arange(len(self.measured_rows[k]))
            w = where[at[hit]]
            ok = w >= 0
            out[rows[ok], j] = self.measured_ms[k][w[ok]]
        return out

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
        n_jobs: int | None = None,
    ) -> PredictorSet:
        """``data[class] = (features (n, d), latency_ms (n,), energy_mj (n,) or None)``.

        The per-class regressors (and the facts model) are independent fits: they run side by side
        in ``n_jobs`` worker processes (default: the CPUs this process may use), each
        single-threaded, unless all are linear and under :data:`PARALLEL_MIN_ROWS` rows in all;
        results do not depend on ``n_jobs`` (:func:`_fit_all`).
        """
        if not data:
            raise EdgeatlasError(
                "empty training set: no device class has measurements",
                code=ErrorCode.INSUFFICIENT_DATA,
                hint="run `edgeatlas bench run` or `edgeatlas predictors import NAME --path DIR` first",
            )
        # validate everything first (the first bad class raises, nothing is fitted), then fit
        tasks: list[tuple[tuple[str, str], LatencyRegressor, np.ndarray, np.ndarray]] = []
        for name, (X, lat, en) in data.items():
            check_training_data(X, lat, f"device class {name!r} (latency)", min_rows)
            tasks.append(((name, "latency"), LatencyRegressor(kind=kind), X, lat))
            if en is not None:
                m = np.isfinite(en)
                if m.sum() >= min_rows:
                    Xe, ye = (X, en) if m.all() else (X[m], en[m])
                    check_training_data(Xe, ye, f"device class {name!r} (energy)", min_rows)
                    tasks.append(((name, "energy"), LatencyRegressor(kind=kind), Xe, ye))
        facts = dict(class_facts or {})
        usable = {c: f for c, f in facts.items() if c in data and _has_facts(f)}
        if len(usable) >= 2:
            rows, ys = [], []
            cap = _facts_rows_per_class({c: len(data[c][1]) for c in usable})
            rng = np.random.default_rng(0)
            for c, f in usable.items():
                X, lat, _ = data[c]
                if cap is not None and len(lat) > cap:
                    keep = np.sort(rng.choice(len(lat), size=cap, replace=False))
                    X, lat = X[keep], lat[keep]
                fv = facts_vector(f)
                rows.append(np.hstack([np.repeat(fv[None], len(X), 0), X]))
                ys.append(lat)
            tasks.append(
                (
                    ("", "facts"),
                    LatencyRegressor(kind="gbm", features_at=len(FACT_NAMES)),
                    np.vstack(rows),
                    np.concatenate(ys),
                )
            )
        _fit_all(tasks, n_jobs)
        fitted = {key: est for key, est, _, _ in tasks}
        classes: dict[str, dict[str, Any]] = {}
        for name, (_, lat, _) in data.items():
            entry: dict[str, Any] = {"latency": fitted[(name, "latency")], "n": len(lat)}
            if (name, "energy") in fitted:
                entry["energy"] = fitted[(name, "energy")]
            classes[name] = entry
        facts_model = fitted.get(("", "facts"))
        return cls(classes, probe_ids, probe_features, facts_model, facts, meta=meta)

    # -- prediction
    def chosen_kinds(self) -> dict[str, dict[str, str]]:
        """Per class and target, the regressor kind in use (``kind="auto"`` resolved)."""
        return {
            c: {
                t: getattr(est, "chosen_kind_", est.kind)
                for t, est in models.items()
                if isinstance(est, LatencyRegressor)
            }
            for c, models in self.classes.items()
        }

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
        y = self._shot_latencies(shot_latency_ms)
        R, _ = self.reference_matrix(S, exclude)
        return KShotCalibrator(alpha=self.kshot_alpha).fit(R, y)

    @staticmethod
    def _shot_latencies(shot_latency_ms: np.ndarray) -> np.ndarray:
        y = np.asarray(shot_latency_ms, dtype=np.float64)
        if len(y) < 3:
            raise EdgeatlasError(
                f"k-shot needs at least 3 probe measurements, got {len(y)}", code=ErrorCode.INSUFFICIENT_DATA
            )
        if not np.isfinite(y).all() or (y <= 0).any():
            raise EdgeatlasError("probe latencies must be finite and > 0 ms", code=ErrorCode.BAD_DATA)
        return y

    def _kshot_predict(
        self,
        F: np.ndarray,
        shot_ids: list[str],
        y: np.ndarray,
        variant_ids: Sequence[str | None] | None,
        measured_refs: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """k-shot (point, lo, hi, whether measured columns were used).

        Two calibrations, each applied only to rows of its own kind of reference column: on the
        regressors' latencies (every row), and, with ``measured_refs``, on the reference classes'
        own measurements, for the rows that every reference class measured. That needs >= 3 shots
        that every class measured (the probe models usually are). A mix fitted on measurements is
        never applied to regressor columns, whose errors it did not see, nor the other way round.
        """
        cal = self.kshot(self.probe_features[[self.probe_ids.index(i) for i in shot_ids]], y)
        R, names = self.reference_matrix(F)
        p, lo, hi = cal.predict_interval(R)
        if not measured_refs or variant_ids is None:
            return p, lo, hi, False
        if len(variant_ids) != len(F):
            raise EdgeatlasError(
                f"{len(variant_ids)} variant ids for {len(F)} feature rows", code=ErrorCode.INVALID_ARGUMENT
            )
        Ms = self.measured_matrix(shot_ids, names)
        full_s = np.isfinite(Ms).all(axis=1)
        Mq = self.measured_matrix(variant_ids, names)
        full_q = np.isfinite(Mq).all(axis=1)
        if full_s.sum() < 3 or not full_q.any():
            return p, lo, hi, False
        cal_m = KShotCalibrator(alpha=self.kshot_alpha).fit(Ms[full_s], y[full_s])
        p, lo, hi = p.copy(), lo.copy(), hi.copy()
        p[full_q], lo[full_q], hi[full_q] = cal_m.predict_interval(Mq[full_q])
        return p, lo, hi, True

    def predict(
        self,
        features: np.ndarray,
        *,
        device_class: str | None = None,
        facts: Mapping[str, Any] | None = None,
        probe_latencies: Mapping[str, float] | None = None,
        variant_ids: Sequence[str | None] | None = None,
        measured_refs: bool = True,
    ) -> Prediction:
        """Predict latency (and energy for a known class) for every row of ``features``.

        Exactly one of: a known ``device_class``; ``probe_latencies`` {probe id: ms} (k-shot); ``facts``
        (zero-shot). Vectorised: one matrix product per reference class.

        k-shot mixes the reference classes' latencies of each row. With ``measured_refs`` (default),
        a row whose variant (``variant_ids``, aligned with the rows; None for split heads/tails)
        every reference class measured is mixed from those measurements, by a mix fitted on the
        probe models' measurements; other rows from the class regressors (:meth:`_kshot_predict`).
        The fleet has measured the zoo, and a measurement carries no regression error: on
        HW-NAS-Bench-360 pi5 energy (evaluate.py's log-space mix) measured columns took ±10 %
        accuracy from 0.58-0.65 to 0.94 on development stand-ins, and on the selection bench the
        additive kind's k-shot MAPE from 113 % to 16-40 %.
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
            method = f"class:{device_class}"
            if e.get("energy") is None:
                note = (
                    f"device class {device_class!r} has no energy model in this predictor (fewer than "
                    f"{MIN_ROWS_PER_CLASS} of its training rows had energy): measure energy on it and retrain"
                )
                return Prediction(*lat, None, None, None, method=method, energy_note=note)
            recorded = (self.meta.get("energy_sources") or {}).get(device_class)
            note = (
                None
                if recorded
                else "this predictor file did not record its training rows' energy sources: train it again "
                "(`edgeatlas predictors train --name NAME`) to have them named"
            )
            en = e["energy"].predict_interval(F)
            return Prediction(
                *lat, *en, method=method, energy_source=predicted_energy_source(method, recorded), energy_note=note
            )
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
            shot_ids = [p for p in self.probe_ids if p in probe_latencies]
            y = self._shot_latencies(np.array([probe_latencies[p] for p in shot_ids]))
            p, lo, hi, used = self._kshot_predict(F, shot_ids, y, variant_ids, measured_refs)
            method = f"kshot:{len(shot_ids)}" + ("+measured-refs" if used else "")
            note = NO_ENERGY_UNSEEN.format(how="k-shot from probe latencies")
            return Prediction(p, lo, hi, None, None, None, method=method, energy_note=note)
        if facts is not None:
            if self.facts_model is None:
                raise EdgeatlasError(
                    "zero-shot from facts needs device facts for at least 2 trained classes",
                    code=ErrorCode.UNSUPPORTED,
                    hint="declare facts (cores, freq_mhz, memory_mb) for the device classes and retrain, or give --probe-latencies",
                )
            fv = facts_vector(facts)
            X = np.hstack([np.repeat(fv[None], len(F), 0), F])
            note = NO_ENERGY_UNSEEN.format(how="zero-shot from device facts")
            return Prediction(
                *self.facts_model.predict_interval(X), None, None, None, method="zeroshot:facts", energy_note=note
            )
        raise EdgeatlasError("give a device class, device facts or probe latencies", code=ErrorCode.INVALID_ARGUMENT)


PARALLEL_MIN_ROWS = 50_000  # from this many rows in all, PredictorSet.fit runs linear fits in worker processes


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fit_single_threaded(est: LatencyRegressor, X: np.ndarray, y: np.ndarray) -> LatencyRegressor:
    """``est.fit(X, y)`` on one BLAS and one OpenMP thread, in a worker process or in this one
    (:func:`_fit_all`): the same arithmetic either way, so the models do not depend on ``n_jobs``."""
    pools = _threadpools()
    with pools.limit(limits=1, user_api="openmp"), pools.limit(limits=1, user_api="blas"):
        return est.fit(X, y)


def _fit_in_worker(est: LatencyRegressor, distinct: np.ndarray, inv: np.ndarray, y: np.ndarray) -> LatencyRegressor:
    """One fit in a worker process (:func:`_fit_all`) of the rows ``distinct[inv]`` (the task's rows,
    sent as their distinct rows and an index)."""
    return _fit_single_threaded(est, distinct[inv], y)


def _fit_all(tasks: Sequence[tuple[Any, LatencyRegressor, np.ndarray, np.ndarray]], n_jobs: int | None) -> None:
    """Fit every (key, estimator, X, y) in place, side by side in ``n_jobs`` worker processes (default:
    the CPUs this process may use; joblib's loky, which keeps its workers for the next call) when
    there are two or more and one is not linear, or from PARALLEL_MIN_ROWS rows in all; else in
    order in this process. The workers take the largest fits first, so that the last one to finish
    is short. Each fit runs on one BLAS / OpenMP thread, in a worker or in this process (on a
    shared 2-core host, 2 threads per fit were 3-5x slower than 1), so the models do not depend on
    ``n_jobs``: with threads left to the libraries, a 300-variant class's Gaussian process came out
    different in the last bits in and out of the workers.

    Any gbm, additive or auto fit takes a second or more, even on 20 rows: a class below
    SPLIT_CONFORMAL_ROWS is fitted 5-fold (six fits, 300 trees each for gbm, and from 40 variants
    the additive kind's residual trees and Gaussian process in each). bench/predictor_fit_parallel.py
    (session 20, kind auto, this process against the workers, same predictions; the workers' first
    round includes starting them): 60 rows of 2 classes 1.55x, 132 rows of 3 classes (about `make
    demo`'s) 1.66x, 465 rows (the zoo's 155 variants on 3 classes) 1.84x, 1800 rows of 2 classes
    1.58x. Linear fits take milliseconds, and starting the workers about 2 s: 465 rows 0.18x, 20k
    rows 1.35x; linear-only trainings keep the 50k-row threshold.

    Processes, not threads: a fit holds the GIL for much of its time (HistGradientBoosting's tree
    grower and the additive kind's stages are Python around short compiled calls). On 2 cores, 4 of
    a 1M-row retrain's 50k-row class fits ran 1.2x faster on 2 threads than on one and 1.9x on 2
    processes; whole fits of 6 classes took 86 s on threads and 54 s on processes at 60k rows, 9.0 s
    and 5.3 s at 120k (session 19). A task's rows go to its worker as their distinct rows and an
    index (a class's rows are repeats of far fewer variants), and the fitted estimator comes back
    pickled. (Module settings patched in this process, as tests do, do not reach the workers.)
    If the workers cannot start or one dies (killed for memory, say), a RuntimeWarning names the
    reason and every fit runs in this process instead: a nightly retrain finishes, only slower.
    """
    total = sum(len(t[3]) for t in tasks)
    workers = min(n_jobs if n_jobs is not None else _cpus(), len(tasks))
    heavy = any(est.kind != "linear" for _, est, _, _ in tasks)
    if workers > 1 and (heavy or total >= PARALLEL_MIN_ROWS):
        try:
            _fit_in_workers(tasks, workers)
            return
        except (BrokenExecutor, OSError) as e:
            warnings.warn(
                f"predictor fits could not run in worker processes ({type(e).__name__}: "
                f"{' '.join(str(e).split())}); fitting {len(tasks)} models in this process instead",
                RuntimeWarning,
                stacklevel=2,
            )
    for _, est, X, y in tasks:
        _fit_single_threaded(est, X, y)


def _fit_in_workers(tasks: Sequence[tuple[Any, LatencyRegressor, np.ndarray, np.ndarray]], workers: int) -> None:
    """:func:`_fit_all`'s worker processes: the largest fits first, each task's rows sent as their
    distinct rows and an index, each fitted estimator's state copied back into the task's own."""
    from joblib import Parallel, delayed

    cost = [len(y) * {"gbm": 8, "auto": 9}.get(est.kind, 1) for _, est, _, y in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -cost[i])
    compact: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by id(X): a class's tasks share their rows
    for _, _, X, _ in tasks:
        if id(X) not in compact:
            A = np.asarray(X, dtype=np.float64)
            first, inv, _ = row_groups(A)
            compact[id(X)] = (A[first], inv)
    fitted = Parallel(n_jobs=workers, backend="loky")(
        delayed(_fit_in_worker)(tasks[i][1], *compact[id(tasks[i][2])], tasks[i][3]) for i in order
    )
    for i, est in zip(order, fitted, strict=True):
        tasks[i][1].__dict__.update(est.__dict__)


FACTS_MAX_ROWS = 50_000  # rows the zero-shot facts model is fitted on, at most (drawn evenly over classes)


def _facts_rows_per_class(sizes: Mapping[str, int], max_rows: int | None = None) -> int | None:
    """Rows per class for the facts model: None (all) up to ``max_rows`` in all, else an even cap.

    The facts model learns how latency moves with the *device* (a handful of classes, one facts
    vector each), so a million rows of the same 20 devices add fit time (a gradient-boosting fit
    on 1M rows takes minutes on 2 cores) but hardly any information: above ``max_rows`` each class
    gives at most an equal share (a random, seeded subset), which also stops one heavily measured
    class from drowning the others. Below it (every small fleet) nothing changes.
    """
    max_rows = FACTS_MAX_ROWS if max_rows is None else max_rows
    if sum(sizes.values()) <= max_rows:
        return None
    # the largest cap whose total stays within max_rows (small classes keep every row)
    lo, hi = 1, max(sizes.values())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in sizes.values()) <= max_rows:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _has_facts(f: Mapping[str, Any]) -> bool:
    return all(f.get(k) not in (None, "") for k in ("cores", "freq_mhz", "memory_mb"))
