"""Users in the loop: pairwise / rating feedback -> per-app QoE weights (a pairwise logistic model).

QoE = w . u(candidate), with u the utility parts (accuracy, latency, energy) under the app's
utility shapes. A user who chose A over B says w . (u_A - u_B) > 0 (Bradley-Terry): a logistic
regression without intercept on the utility differences estimates w up to scale. Weights are
clipped at 0 and normalised to sum to 1, then stored versioned (store.add_qoe_weights).
Ratings become pairs: within an app, every two rated candidates with different ratings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.prefs import OBJECTIVES, Prefs, utilities

VALUE_KEYS = ("latency_ms", "device_energy_mj", "accuracy")


def candidate_values(obj: dict[str, Any], what: str) -> dict[str, Any]:
    """{key, latency_ms, device_energy_mj, accuracy} from a Pick dict / recommendation JSON entry."""
    vals = obj.get("predicted", obj)
    out: dict[str, Any] = {"key": obj.get("key") or _key(obj)}
    for k in VALUE_KEYS:
        v = vals.get(k)
        # accuracy and energy may be unknown (None); latency never is
        if v is None and k == "latency_ms":
            raise EdgeatlasError(
                f"{what}: missing predicted {k}",
                ErrorCode.INVALID_ARGUMENT,
                hint="give the candidate as it appears in a `recommend --json` answer (with its predicted values)",
            )
        out[k] = None if v is None else float(v)
    return out


def _key(obj: dict[str, Any]) -> str | None:
    if all(obj.get(k) for k in ("variant_id", "split", "codec")):
        return f"{obj['variant_id']}/{obj['split']}/{obj['codec']}"
    return None


def find_in_answer(answer: dict[str, Any], key: str) -> dict[str, Any]:
    """A candidate of a saved `recommend --json` answer by key (variant/split/codec), a unique prefix of
    it, or the key with its variant id shortened to a unique prefix (``9ae8/all-on-device/none``)."""
    pool = list(answer.get("recommendations", [])) + list(answer.get("pareto", []))
    for c in pool:
        c.setdefault("key", _key(c))
    v, sep, rest = key.partition("/")

    def short_variant(k: str) -> bool:  # a variant prefix of >= 4 characters, as `zoo show` takes
        kv, _, krest = k.partition("/")
        return bool(sep) and len(v) >= 4 and kv.startswith(v) and krest.startswith(rest)

    hits = (
        [c for c in pool if c.get("key") == key]
        or [c for c in pool if str(c.get("key", "")).startswith(key)]
        or [c for c in pool if short_variant(str(c.get("key", "")))]
    )
    keys = {c["key"] for c in hits}
    if len(keys) != 1:
        known = ", ".join(sorted({str(c.get("key")) for c in pool})[:8])
        raise EdgeatlasError(
            f"candidate {key!r} {'is ambiguous' if keys else 'is not'} in the recommendation",
            ErrorCode.NOT_FOUND,
            hint=f"use a key from its recommendations or pareto lists, e.g. {known}",
        )
    return hits[0]


def pair_differences(prefs: Prefs, chosen: list[dict[str, Any]], other: list[dict[str, Any]]) -> np.ndarray:
    """Utility differences u(chosen) - u(other), shape (n, 3); pairs with unknown accuracy dropped."""

    def u(rows: list[dict[str, Any]]) -> np.ndarray:
        lat = np.array([r["latency_ms"] for r in rows], dtype=float)
        # unknown energy (None: the device had no energy source) counts as equal for both candidates
        en = np.array([0.0 if r.get("device_energy_mj") is None else r["device_energy_mj"] for r in rows], dtype=float)
        acc = np.array([np.nan if r.get("accuracy") is None else r["accuracy"] for r in rows], dtype=float)
        return utilities(prefs, lat, en, acc).T

    if not chosen:
        return np.empty((0, 3))
    d = u(chosen) - u(other)
    return d[~np.isnan(d).any(axis=1)]


def fit_weights(diffs: np.ndarray, C: float = 10.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Pairwise logistic regression (no intercept) on utility differences -> normalised weights."""
    from sklearn.linear_model import LogisticRegression

    diffs = np.asarray(diffs, dtype=float)
    informative = diffs[np.abs(diffs).sum(axis=1) > 1e-12]
    if len(informative) < 3:
        raise EdgeatlasError(
            f"only {len(informative)} informative comparisons (need at least 3)",
            ErrorCode.INSUFFICIENT_DATA,
            hint="collect more feedback with `edgeatlas feedback --app APP --chose A --over B`",
        )
    X = np.vstack([informative, -informative])
    y = np.r_[np.ones(len(informative)), np.zeros(len(informative))]
    model = LogisticRegression(fit_intercept=False, C=C, max_iter=1000).fit(X, y)
    coef = model.coef_[0]
    w = np.clip(coef, 0.0, None)
    if w.sum() <= 0:
        raise EdgeatlasError(
            "the feedback contradicts every objective (all fitted weights <= 0)",
            ErrorCode.BAD_DATA,
            hint="check that --chose/--over were not swapped; collect more feedback",
        )
    w = w / w.sum()
    agree = float(((informative @ coef) > 0).mean())
    return w, {"n_pairs": int(len(informative)), "pairwise_agreement": agree, "raw_coef": coef.tolist(), "C": C}


def feedback_pairs(records: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Store feedback records -> (chosen, other) value dicts; ratings expand into pairs."""
    chosen: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    rated: list[tuple[float, dict[str, Any]]] = []
    for r in records:
        if r.kind == "pairwise" and r.other:
            chosen.append(r.chosen)
            other.append(r.other)
        elif r.kind == "rating" and r.rating is not None and math.isfinite(r.rating):
            rated.append((float(r.rating), r.chosen))
    rated = rated[-300:]  # bound the O(n^2) expansion
    for i in range(len(rated)):
        for j in range(i + 1, len(rated)):
            (ra, a), (rb, b) = rated[i], rated[j]
            if ra > rb:
                chosen.append(a)
                other.append(b)
            elif rb > ra:
                chosen.append(b)
                other.append(a)
    return chosen, other


def record_feedback(
    store: Any,
    app: str,
    chosen: dict[str, Any],
    other: dict[str, Any] | None = None,
    rating: float | None = None,
    context: dict[str, Any] | None = None,
) -> Any:
    """Validate and store one piece of feedback (pairwise when ``other`` is given, else a rating)."""
    if not app or not str(app).strip():
        raise EdgeatlasError("feedback needs an app name", ErrorCode.INVALID_ARGUMENT, hint="pass --app APP")
    a = candidate_values(chosen, "chosen")
    if other is not None:
        b = candidate_values(other, "other")
        if a["key"] is not None and a["key"] == b["key"]:
            raise EdgeatlasError(
                "chosen and other are the same candidate",
                ErrorCode.INVALID_ARGUMENT,
                hint="--over must name a different candidate",
            )
        return store.add_feedback(app, "pairwise", a, b, None, context)
    if rating is None or not (1 <= float(rating) <= 5):
        raise EdgeatlasError(
            f"rating {rating!r} must be between 1 and 5",
            ErrorCode.INVALID_ARGUMENT,
            hint="pass --rating 1..5 (or --over B for a pairwise choice)",
        )
    return store.add_feedback(app, "rating", a, None, float(rating), context)


def fit_app(store: Any, app: str, prefs: Prefs, C: float = 10.0) -> Any:
    """Fit the app's QoE weights from all its feedback and store them as a new version."""
    records = store.list_feedback(app)
    if not records:
        raise EdgeatlasError(
            f"app {app!r} has no feedback",
            ErrorCode.INSUFFICIENT_DATA,
            hint=f"record some with `edgeatlas feedback --app {app} --chose A --over B`",
        )
    chosen, other = feedback_pairs(records)
    diffs = pair_differences(prefs, chosen, other)
    w, metrics = fit_weights(diffs, C=C)
    prior = prefs.weights.vector()
    metrics.update(
        {
            "n_feedback": len(records),
            "utility_shapes_from": prefs.source,
            "prior_weights": dict(zip(OBJECTIVES, prior.tolist(), strict=True)),
            "cosine_to_prior": float(w @ prior / (np.linalg.norm(w) * np.linalg.norm(prior))),
        }
    )
    return store.add_qoe_weights(app, dict(zip(OBJECTIVES, w.tolist(), strict=True)), metrics)
