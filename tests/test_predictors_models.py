"""The estimators honour the scikit-learn contract and give intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from predictors.models import KShotCalibrator, LatencyRegressor, PredictorSet
from registry.errors import EdgeatlasError


@parametrize_with_checks(
    [LatencyRegressor(kind="linear", cv=3), LatencyRegressor(kind="gbm", cv=2, n_trees=20), KShotCalibrator()]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 10, size=(n, 59))
    y = X[:, 0] * 2 + X[:, 1] + rng.normal(0, 0.1, n) + 5
    return X, y


def test_interval_covers_most_points():
    X, y = _data(400)
    m = LatencyRegressor(kind="linear").fit(X[:300], y[:300])
    p, lo, hi = m.predict_interval(X[300:])
    assert np.all(lo <= p) and np.all(p <= hi)
    assert np.mean((y[300:] >= lo) & (y[300:] <= hi)) >= 0.8


def test_predictor_set_bad_input_and_kshot():
    X, y = _data()
    pset = PredictorSet.fit(
        {"a": (X, y, None), "b": (X, 2 * y, y)}, kind="linear", probe_ids=["p0", "p1", "p2"], probe_features=X[:3]
    )
    pred = pset.predict(X[:5], device_class="b")
    assert pred.energy_mj is not None and pred.latency_ms.shape == (5,)
    k = pset.predict(X[:5], probe_latencies={"p0": 3 * y[0], "p1": 3 * y[1], "p2": 3 * y[2]})
    assert k.method == "kshot:3"
    np.testing.assert_allclose(k.latency_ms, 3 * y[:5], rtol=0.2)
    with pytest.raises(EdgeatlasError, match="unknown device class"):
        pset.predict(X[:1], device_class="nope")
    bad = X[:2].copy()
    bad[0, 3] = np.nan
    with pytest.raises(EdgeatlasError, match="NaN"):
        pset.predict(bad, device_class="a")
    with pytest.raises(EdgeatlasError, match="need >= 3"):
        pset.predict(X[:1], probe_latencies={"p0": 1.0})
    with pytest.raises(EdgeatlasError, match="empty training set"):
        PredictorSet.fit({})
    with pytest.raises(EdgeatlasError, match="at least 20 are needed"):
        PredictorSet.fit({"a": (X[:5], y[:5], None)})
    yn = y.copy()
    yn[4] = np.nan
    with pytest.raises(EdgeatlasError, match="NaN"):
        PredictorSet.fit({"a": (X, yn, None)})
    with pytest.raises(EdgeatlasError, match="zero-shot"):
        pset.predict(X[:1], facts={"cores": 4, "freq_mhz": 1000, "memory_mb": 1000})


def test_zero_shot_from_facts():
    X, y = _data()
    facts = {
        "slow": {"cores": 2, "freq_mhz": 1000, "memory_mb": 2048, "arch": "aarch64"},
        "fast": {"cores": 8, "freq_mhz": 3000, "memory_mb": 8192, "arch": "x86_64"},
    }
    pset = PredictorSet.fit({"slow": (X, 3 * y, None), "fast": (X, y, None)}, kind="linear", class_facts=facts)
    p = pset.predict(X[:10], facts=facts["slow"])
    assert p.method == "zeroshot:facts" and np.all(p.latency_lo <= p.latency_ms)
    assert np.mean(p.latency_ms) > np.mean(pset.predict(X[:10], facts=facts["fast"]).latency_ms)
