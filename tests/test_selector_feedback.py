"""Users in the loop: simulated users with known hidden weights; the fitted weights converge.

The simulated users are a fake by design (a stand-in for real people): each compares two
candidates whose utility parts are random, and prefers A with probability
sigmoid(beta * w_hidden . (u_A - u_B)) (Bradley-Terry).
"""

from __future__ import annotations

import numpy as np
import pytest

from registry.errors import EdgeatlasError
from registry.selector.feedback import feedback_pairs, fit_app, fit_weights, pair_differences, record_feedback
from registry.selector.prefs import prefs_from_dict

PREFS = prefs_from_dict(
    {
        "app": "sim",
        "weights": {"accuracy": 1, "latency": 1, "energy": 1},
        "utility": {"latency": {"shape": "linear", "zero_ms": 200}, "energy": {"zero_mj": 100}},
    }
)


def simulate(n: int, hidden: np.ndarray, rng: np.random.Generator, beta: float = 12.0):
    """n comparisons between random candidates (latency, energy, accuracy) by a simulated user."""

    def cand():
        return {
            "latency_ms": float(rng.uniform(0, 200)),
            "device_energy_mj": float(rng.uniform(0, 100)),
            "accuracy": float(rng.uniform(0.3, 1.0)),
        }

    chosen, other = [], []
    for _ in range(n):
        a, b = cand(), cand()
        d = pair_differences(PREFS, [a], [b])[0]
        if rng.random() < 1 / (1 + np.exp(-beta * hidden @ d)):
            chosen.append(a), other.append(b)
        else:
            chosen.append(b), other.append(a)
    return chosen, other


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("hidden", [(0.6, 0.3, 0.1), (0.1, 0.2, 0.7), (0.34, 0.33, 0.33)])
def test_fitted_weights_converge_to_hidden(hidden: tuple[float, float, float]) -> None:
    h = np.array(hidden)
    sims = {}
    for n in (20, 100, 2000):
        cs = []
        for seed in range(4):
            chosen, other = simulate(n, h, np.random.default_rng(seed))
            w, metrics = fit_weights(pair_differences(PREFS, chosen, other))
            assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
            cs.append(cosine(w, h))
        sims[n] = float(np.mean(cs))
    assert sims[2000] > 0.99
    assert sims[20] < sims[2000] and sims[100] < sims[2000] + 1e-9  # more feedback, closer to the hidden weights


def test_store_roundtrip_and_ratings(sqlite_url: str, ea_home) -> None:
    from registry.store import Store

    store = Store.open(sqlite_url)
    h = np.array([0.2, 0.7, 0.1])
    chosen, other = simulate(400, h, np.random.default_rng(7))
    for a, b in zip(chosen, other, strict=True):
        record_feedback(store, "sim", a, b)
    rec = fit_app(store, "sim", PREFS)
    assert rec.version == 1 and rec.metrics["n_pairs"] > 300
    w = np.array([rec.weights[k] for k in ("accuracy", "latency", "energy")])
    assert cosine(w, h) > 0.97
    assert fit_app(store, "sim", PREFS).version == 2  # versioned
    # ratings expand into pairs: higher rating preferred
    recs = [
        record_feedback(store, "rated", {"latency_ms": 10, "device_energy_mj": 5, "accuracy": 0.9}, rating=5),
        record_feedback(store, "rated", {"latency_ms": 150, "device_energy_mj": 50, "accuracy": 0.5}, rating=2),
    ]
    c, o = feedback_pairs(recs)
    assert c[0]["latency_ms"] == 10 and o[0]["latency_ms"] == 150
    with pytest.raises(EdgeatlasError, match="rating"):
        record_feedback(store, "rated", {"latency_ms": 1, "device_energy_mj": 1, "accuracy": 0.5}, rating=9)
    with pytest.raises(EdgeatlasError, match="missing predicted latency_ms"):
        record_feedback(store, "rated", {"accuracy": 0.5}, rating=3)
    with pytest.raises(EdgeatlasError, match="no feedback"):
        fit_app(store, "nobody", PREFS)


def test_find_in_answer_by_key_prefix_or_short_variant() -> None:
    from registry.selector.feedback import find_in_answer

    a, b = "9ae80" + "0" * 59, "9ae81" + "1" * 59
    answer = {
        "recommendations": [
            {"key": f"{a}/all-on-device/none"},
            {"key": f"{a}//features.7/int8"},
            {"key": f"{b}/all-on-device/none"},
        ]
    }
    assert find_in_answer(answer, f"{a}/all-on-device/none")["key"] == f"{a}/all-on-device/none"
    assert find_in_answer(answer, "9ae80/all-on-device/none")["key"] == f"{a}/all-on-device/none"
    assert find_in_answer(answer, "9ae8//features.7/int8")["key"] == f"{a}//features.7/int8"
    with pytest.raises(EdgeatlasError, match="ambiguous"):
        find_in_answer(answer, "9ae8/all-on-device/none")
    with pytest.raises(EdgeatlasError, match="is not in"):  # a variant prefix needs >= 4 characters
        find_in_answer(answer, "9ae/all-on-device/none")
    with pytest.raises(EdgeatlasError, match="is not in"):
        find_in_answer(answer, "ffff/all-on-device/none")


def test_feedback_with_unknown_energy_records_and_fits(sqlite_url: str, ea_home) -> None:
    """Answers from a device with no energy source carry device_energy_mj = None: feedback on them
    is stored and fitted (energy counts as equal for both candidates)."""
    from registry.store import Store

    store = Store.open(sqlite_url)
    chosen, other = simulate(200, np.array([0.5, 0.5, 0.0]), np.random.default_rng(3))
    for a, b in zip(chosen, other, strict=True):
        record_feedback(store, "noenergy", {**a, "device_energy_mj": None}, {**b, "device_energy_mj": None})
    rec = fit_app(store, "noenergy", PREFS)
    assert rec.metrics["n_pairs"] > 150 and rec.weights["energy"] < 0.1
