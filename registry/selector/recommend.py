"""Library entry points shared by the CLI, the HTTP API and Python users."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.candidates import CandidateTable, Network, evaluate
from registry.selector.decision import Answer, DecisionTable, InfeasibleError, build_answer, decision_table
from registry.selector.prefs import OBJECTIVES, Prefs, load_prefs, prefs_from_dict
from registry.selector.sources import DeviceSpec, load_candidates, resolve_device

_CACHE: OrderedDict[tuple, CandidateTable] = OrderedDict()
_LOCK = threading.Lock()


def as_prefs(prefs: Prefs | dict[str, Any] | str | Path) -> Prefs:
    if isinstance(prefs, Prefs):
        return prefs
    if isinstance(prefs, dict):
        return prefs_from_dict(prefs)
    return load_prefs(prefs)


def candidates_for(store: Any, device: DeviceSpec, edge: DeviceSpec, predictor: str = "default") -> CandidateTable:
    """The candidate table for a device/edge pair, cached per (store, device, edge, champion, data)."""
    champ = None
    try:
        champ = store.champion(predictor)
    except Exception:  # noqa: BLE001 - a store without predictors still serves measured candidates
        champ = None
    key = (
        str(getattr(store, "url", id(store))),
        device.cache_key(),
        edge.cache_key(),
        predictor,
        champ.id if champ else None,
        len(store.list_variants()),
        store.count_measurements() if hasattr(store, "count_measurements") else None,
    )
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    table = load_candidates(store, device, edge, predictor)
    with _LOCK:
        _CACHE[key] = table
        while len(_CACHE) > 32:
            _CACHE.popitem(last=False)
    return table


def learned_weights(store: Any, app: str | None) -> tuple[np.ndarray | None, str | None]:
    if not app:
        return None, None
    rec = store.latest_qoe_weights(app)
    if rec is None:
        return None, None
    w = np.array([float(rec.weights.get(k, 0.0)) for k in OBJECTIVES])
    if w.sum() <= 0:
        return None, None
    return w / w.sum(), f"learned:{app} v{rec.version}"


def check_energy(table: CandidateTable, prefs: Prefs, weights: np.ndarray | None) -> None:
    w_energy = (weights if weights is not None else prefs.weights.vector())[2]
    needs = w_energy > 0 or prefs.constraints.max_device_energy_mj is not None
    if needs and table.energy_missing:
        raise EdgeatlasError(
            f"device {table.device} has no energy model: no energy predictor for its class and no declared power model",
            ErrorCode.INSUFFICIENT_DATA,
            hint="declare power = {active_w = .., radio_nj_per_byte = ..} in its device facts, "
            "or set weights.energy = 0 and drop max_device_energy_mj from the prefs",
        )


def recommend_table(
    table: CandidateTable,
    prefs: Prefs | dict[str, Any] | str | Path,
    bandwidth_mbit: float,
    rtt_ms: float,
    radio_nj_per_byte: float = 0.0,
    top_k: int = 5,
    weights: np.ndarray | None = None,
    weights_source: str | None = None,
) -> Answer:
    """The core query on a ready table (no store): evaluate, rank, Pareto front, explain."""
    p = as_prefs(prefs)
    if top_k < 1:
        raise EdgeatlasError(f"top_k = {top_k} must be >= 1", ErrorCode.INVALID_ARGUMENT, hint="pass --top 5")
    check_energy(table, p, weights)
    ev = evaluate(table, Network(float(bandwidth_mbit), float(rtt_ms)), p, radio_nj_per_byte, weights)
    return build_answer(ev, top_k=top_k, weights_source=weights_source)


def recommend(
    store: Any,
    *,
    edge: str,
    bandwidth_mbit: float,
    rtt_ms: float,
    prefs: Prefs | dict[str, Any] | str | Path,
    device: str | None = None,
    device_facts: dict[str, Any] | str | Path | None = None,
    probe_latencies: dict[str, float] | str | Path | None = None,
    app: str | None = None,
    top_k: int = 5,
    predictor: str = "default",
    raise_infeasible: bool = False,
) -> Answer:
    """Recommend (variant, split, codec) for a device/edge pair and a network.

    Uses the app's learned QoE weights (``qoe fit``) when there are any, else the prefs' weights.
    Returns an :class:`Answer`; with ``raise_infeasible`` an infeasible answer raises
    :class:`InfeasibleError` (code INFEASIBLE, HTTP 409) carrying the explanation.
    """
    p = as_prefs(prefs)
    dev = resolve_device(store, device, device_facts, probe_latencies, role="device")
    edg = resolve_device(store, edge, role="edge")
    table = candidates_for(store, dev, edg, predictor)
    w, src = learned_weights(store, app or p.app)
    ans = recommend_table(table, p, bandwidth_mbit, rtt_ms, dev.radio_nj_per_byte, top_k, w, src)
    if raise_infeasible and not ans.feasible:
        raise InfeasibleError(ans)
    return ans


def decision_table_for(
    store: Any,
    *,
    edge: str,
    bandwidths_mbit: list[float],
    rtts_ms: list[float],
    prefs: Prefs | dict[str, Any] | str | Path,
    device: str | None = None,
    device_facts: dict[str, Any] | str | Path | None = None,
    probe_latencies: dict[str, float] | str | Path | None = None,
    app: str | None = None,
    predictor: str = "default",
) -> DecisionTable:
    p = as_prefs(prefs)
    dev = resolve_device(store, device, device_facts, probe_latencies, role="device")
    edg = resolve_device(store, edge, role="edge")
    table = candidates_for(store, dev, edg, predictor)
    w, _ = learned_weights(store, app or p.app)
    check_energy(table, p, w)
    return decision_table(table, p, bandwidths_mbit, rtts_ms, dev.radio_nj_per_byte, w)
