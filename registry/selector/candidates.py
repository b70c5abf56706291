"""Candidates (variant x split x codec) as columns of numpy arrays, and their vectorised evaluation.

The core knows nothing about the store, the zoo or the predictors: an adapter
(:mod:`registry.selector.sources`) fills a :class:`CandidateTable` once per device/edge pair,
and :func:`evaluate` turns it plus a network and prefs into predicted end-to-end latency,
device energy, accuracy, the constraint mask, the binding constraint and the QoE, in a few
numpy calls (no Python loop over candidates).

Model of one inference (all times in ms, energy in mJ)::

    latency = head (device) + encode (device) + transfer + decode (edge) + tail (edge)
    transfer = payload_bytes * 8 / bandwidth + RTT        (0 when nothing is sent)
    device energy = head energy (incl. encode) + radio_nj_per_byte * payload_bytes * 1e-6

All-on-device candidates have kind DEVICE (no tail, no payload); all-on-edge candidates have
kind EDGE (no head; the payload is the encoded raw input).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.prefs import Prefs, utilities

KIND_DEVICE, KIND_SPLIT, KIND_EDGE = 0, 1, 2
KIND_NAMES = {KIND_DEVICE: "all-on-device", KIND_SPLIT: "split", KIND_EDGE: "all-on-edge"}
CONSTRAINTS = ("max_latency_ms", "min_accuracy", "max_device_energy_mj", "max_payload_kb", "raw_data_stays_on_device")

_FLOAT_COLUMNS = (
    "head_ms",
    "head_ms_lo",
    "head_ms_hi",
    "tail_ms",
    "tail_ms_lo",
    "tail_ms_hi",
    "encode_ms",
    "decode_ms",
    "payload_bytes",
    "head_energy_mj",
    "head_energy_mj_lo",
    "head_energy_mj_hi",
    "accuracy",
)


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """Per-candidate inputs, one entry per (variant, split, codec); all arrays have length N.

    Build with :meth:`from_columns`, which fills intervals with the point value when a
    predictor gives none, and checks shapes and values.
    """

    variant_id: np.ndarray  # object (str)
    family: np.ndarray  # object (str)
    split: np.ndarray  # object (str): cut name, "all-on-device" or "all-on-edge"
    codec: np.ndarray  # object (str)
    kind: np.ndarray  # int8: KIND_DEVICE / KIND_SPLIT / KIND_EDGE
    head_ms: np.ndarray
    head_ms_lo: np.ndarray
    head_ms_hi: np.ndarray
    tail_ms: np.ndarray
    tail_ms_lo: np.ndarray
    tail_ms_hi: np.ndarray
    encode_ms: np.ndarray
    decode_ms: np.ndarray
    payload_bytes: np.ndarray
    head_energy_mj: np.ndarray
    head_energy_mj_lo: np.ndarray
    head_energy_mj_hi: np.ndarray
    accuracy: np.ndarray  # NaN = unknown
    accuracy_source: np.ndarray  # object (str or None)
    # bool per row: False where the device had no energy source for that row (no measurement,
    # predictor or power model); its head_energy_mj is then a placeholder 0, shown as unknown
    energy_known: np.ndarray | None = None
    device: str = "device"
    edge: str = "edge"
    predictor_version: str | None = None
    energy_source: str | None = None  # e.g. "estimated:power-model" or "predicted:<predictor>"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @property
    def energy_missing(self) -> bool:
        """Some row's device had no energy source (see ``energy_known``)."""
        return self.energy_known is not None and not bool(self.energy_known.all())

    @classmethod
    def from_columns(cls, **cols: Any) -> CandidateTable:
        n = len(cols["variant_id"])
        out: dict[str, Any] = {}
        for name in ("variant_id", "family", "split", "codec", "accuracy_source"):
            v = cols.get(name)
            arr = np.empty(n, dtype=object)
            arr[:] = list(v) if v is not None else [None] * n
            out[name] = arr
        out["kind"] = np.asarray(cols["kind"], dtype=np.int8)
        for base in ("head_ms", "tail_ms", "head_energy_mj"):
            point = np.asarray(cols.get(base, np.zeros(n)), dtype=float)
            out[base] = point
            out[base + "_lo"] = np.asarray(cols.get(base + "_lo", point), dtype=float)
            out[base + "_hi"] = np.asarray(cols.get(base + "_hi", point), dtype=float)
        for name in ("encode_ms", "decode_ms", "payload_bytes"):
            out[name] = np.asarray(cols.get(name, np.zeros(n)), dtype=float)
        out["accuracy"] = np.asarray(cols.get("accuracy", np.full(n, np.nan)), dtype=float)
        if cols.get("energy_known") is not None:
            out["energy_known"] = np.asarray(cols["energy_known"], dtype=bool)
        for k in ("device", "edge", "predictor_version", "energy_source", "meta"):
            if k in cols:
                out[k] = cols[k]
        table = cls(**out)
        table.check()
        return table

    def check(self) -> None:
        n = len(self)
        extra = ("energy_known",) if self.energy_known is not None else ()
        for name in _FLOAT_COLUMNS + ("variant_id", "family", "split", "codec", "accuracy_source") + extra:
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise EdgeatlasError(
                    f"candidate column {name} has shape {arr.shape}, expected ({n},)",
                    ErrorCode.BAD_DATA,
                    hint="every candidate column must have one entry per candidate",
                )
        if not np.isin(self.kind, (KIND_DEVICE, KIND_SPLIT, KIND_EDGE)).all():
            raise EdgeatlasError("candidate kind must be 0, 1 or 2", ErrorCode.BAD_DATA, hint="use KIND_* constants")
        for name in _FLOAT_COLUMNS:
            if name == "accuracy":
                continue
            arr = getattr(self, name)
            if not np.isfinite(arr).all() or (arr < 0).any():
                bad = int(np.flatnonzero(~np.isfinite(arr) | (arr < 0))[0])
                raise EdgeatlasError(
                    f"candidate {self.key(bad)}: {name} = {arr[bad]!r} is not a finite non-negative number",
                    ErrorCode.BAD_DATA,
                    hint="the predictor or the zoo produced a bad value; retrain or rebuild that variant",
                )
        acc = self.accuracy[np.isfinite(self.accuracy)]
        if ((acc < 0) | (acc > 1)).any():
            raise EdgeatlasError(
                "candidate accuracy outside [0, 1]", ErrorCode.BAD_DATA, hint="store accuracy as a fraction"
            )

    @functools.cached_property
    def precomputed(self) -> dict[str, Any]:
        """Network-independent sums, computed once per table (evaluate() reuses them)."""
        fixed = self.encode_ms + self.decode_ms
        sends = (self.payload_bytes > 0).astype(float)
        acc = self.accuracy.copy()
        acc[np.isnan(acc)] = -np.inf
        kb = self.payload_bytes / 1000.0
        return {
            "compute_ms": self.head_ms + self.tail_ms + fixed,
            "compute_ms_lo": self.head_ms_lo + self.tail_ms_lo + fixed,
            "compute_ms_hi": self.head_ms_hi + self.tail_ms_hi + fixed,
            "sends": sends,
            "payload_bytes": self.payload_bytes,
            "payload_kb": kb,
            "payload_zero_slack": np.where(kb > 0, -np.inf, np.inf),
            "accuracy_or_neginf": acc,
            "raw_slack": np.where(self.kind == KIND_EDGE, -np.inf, np.inf),
            "not_edge": self.kind != KIND_EDGE,
            "known2": np.where(np.isnan(self.accuracy), 0.0, 2.0),
            "accuracy_known": ~np.isnan(self.accuracy),
            "n_unknown_accuracy": np.count_nonzero(np.isnan(self.accuracy)),
            "neg_accuracy": -self.accuracy,  # minimised on the Pareto front
        }

    def key(self, i: int) -> str:
        return f"{self.variant_id[i]}/{self.split[i]}/{self.codec[i]}"

    def keys(self) -> list[str]:
        return [self.key(i) for i in range(len(self))]

    def take(self, idx: np.ndarray) -> CandidateTable:
        """A sub-table (e.g. one variant family)."""
        cols = {name: getattr(self, name)[idx] for name in _ARRAY_FIELDS}
        return CandidateTable(
            **cols,
            energy_known=None if self.energy_known is None else self.energy_known[idx],
            device=self.device,
            edge=self.edge,
            predictor_version=self.predictor_version,
            energy_source=self.energy_source,
            meta=dict(self.meta),
        )


_ARRAY_FIELDS = ("variant_id", "family", "split", "codec", "kind", "accuracy_source") + _FLOAT_COLUMNS


@dataclass(frozen=True)
class Network:
    bandwidth_mbit: float
    rtt_ms: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bandwidth_mbit) and self.bandwidth_mbit > 0):
            raise EdgeatlasError(
                f"bandwidth_mbit = {self.bandwidth_mbit!r} must be a positive number",
                ErrorCode.INVALID_ARGUMENT,
                hint="give the uplink bandwidth in Mbit/s, e.g. --bandwidth-mbit 20",
            )
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise EdgeatlasError(
                f"rtt_ms = {self.rtt_ms!r} must be a non-negative number",
                ErrorCode.INVALID_ARGUMENT,
                hint="give the round-trip time in ms, e.g. --rtt-ms 20",
            )


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Predicted values and scores for every candidate of a table under one network and prefs.

    :func:`evaluate` computes only what ranking needs over all N candidates (latency, device
    energy, feasibility, QoE, the rank key), in place where it can: allocating fresh arrays is
    the dominant cost at N = 60 000. Everything else (intervals, transfer time, per-constraint
    slack, binding constraint, utility parts) is computed on demand, either for a few indices
    with :meth:`details` or for all candidates through the cached properties.
    """

    table: CandidateTable
    network: Network
    prefs: Prefs
    weights: np.ndarray  # (3,), normalised, order OBJECTIVES
    radio_nj_per_byte: float
    latency_ms: np.ndarray
    device_energy_mj: np.ndarray
    feasible: np.ndarray  # bool (N,)
    qoe_lower: np.ndarray  # (N,), an unknown accuracy part counted as 0
    rank_key: np.ndarray  # (N,): feasible (+4), known QoE (+2), then QoE; higher ranks first

    @property
    def accuracy(self) -> np.ndarray:
        return self.table.accuracy

    @functools.cached_property
    def qoe_known(self) -> np.ndarray:
        return np.ones(len(self.table), dtype=bool) if self.weights[0] == 0 else ~np.isnan(self.table.accuracy)

    @functools.cached_property
    def qoe(self) -> np.ndarray:
        """QoE, NaN when accuracy is weighted but unknown."""
        return np.where(self.qoe_known, self.qoe_lower, np.nan)

    def ranked(self, k: int | None = None) -> np.ndarray:
        """Indices of the best k candidates (all when k is None), best first.

        Feasible before infeasible, known QoE before unknown (unknown accuracy never ranks
        above a known one when accuracy has weight), then QoE descending, ties by lower latency.
        """
        n = len(self.rank_key)
        if k is None or k >= n:
            idx = np.arange(n)
        else:
            idx = np.argpartition(self.rank_key, n - k)[n - k :] if k > 0 else np.arange(0)  # the k largest
        return idx[np.lexsort((self.latency_ms[idx], -self.rank_key[idx]))]

    def details(self, idx: np.ndarray | slice | None = None) -> dict[str, Any]:
        """Everything about the candidates ``idx`` (default: all), as arrays."""
        return _details(self, slice(None) if idx is None else idx)

    @functools.cached_property
    def _all(self) -> dict[str, Any]:
        return self.details()

    constraint_names = property(lambda self: _constraint_names(self.prefs))
    slack = property(lambda self: self._all["slack"])
    binding = property(lambda self: self._all["binding"])
    utility = property(lambda self: self._all["utility"])
    transfer_ms = property(lambda self: self._all["transfer_ms"])
    latency_ms_lo = property(lambda self: self._all["latency_ms_lo"])
    latency_ms_hi = property(lambda self: self._all["latency_ms_hi"])
    device_energy_mj_lo = property(lambda self: self._all["device_energy_mj_lo"])
    device_energy_mj_hi = property(lambda self: self._all["device_energy_mj_hi"])
    payload_kb = property(lambda self: self._all["payload_kb"])

    def binding_name(self, i: int) -> str | None:
        b = int(self.binding[i])
        return self.constraint_names[b] if b >= 0 else None


def _constraint_names(prefs: Prefs) -> tuple[str, ...]:
    c = prefs.constraints
    return tuple(n for n in CONSTRAINTS if (getattr(c, n) not in (None, False)))


def _details(ev: Evaluation, idx: np.ndarray | slice) -> dict[str, Any]:
    t = ev.table
    pre = t.precomputed
    net = ev.network
    payload = t.payload_bytes[idx]
    transfer = pre["sends"][idx] * (payload * (8.0 / (net.bandwidth_mbit * 1e3)) + net.rtt_ms)
    latency = ev.latency_ms[idx]
    lat_lo = pre["compute_ms_lo"][idx] + transfer
    lat_hi = pre["compute_ms_hi"][idx] + transfer
    radio = payload * (ev.radio_nj_per_byte * 1e-6)
    energy = ev.device_energy_mj[idx]
    en_lo = t.head_energy_mj_lo[idx] + radio
    en_hi = t.head_energy_mj_hi[idx] + radio
    acc = t.accuracy[idx]
    kb = pre["payload_kb"][idx]
    c = ev.prefs.constraints
    strict = ev.prefs.strict_intervals
    rows = []
    for name in _constraint_names(ev.prefs):
        if name == "max_latency_ms":
            rows.append((c.max_latency_ms - (lat_hi if strict else latency)) / c.max_latency_ms)
        elif name == "min_accuracy":
            rows.append(pre["accuracy_or_neginf"][idx] / max(c.min_accuracy, 1e-9) - 1.0)
        elif name == "max_device_energy_mj":
            lim = c.max_device_energy_mj
            rows.append((lim - (en_hi if strict else energy)) / lim)
        elif name == "max_payload_kb":
            lim = c.max_payload_kb
            rows.append((lim - kb) / lim if lim > 0 else pre["payload_zero_slack"][idx])
        else:
            rows.append(pre["raw_slack"][idx])
    m = len(latency)
    if rows:
        slack = np.vstack(rows)
        binding = np.argmin(slack, axis=0).astype(np.int64)
        binding[np.isposinf(slack.min(axis=0))] = -1
    else:
        slack = np.empty((0, m))
        binding = np.full(m, -1, dtype=np.int64)
    return {
        "transfer_ms": transfer,
        "latency_ms": latency,
        "latency_ms_lo": lat_lo,
        "latency_ms_hi": lat_hi,
        "device_energy_mj": energy,
        "device_energy_mj_lo": en_lo,
        "device_energy_mj_hi": en_hi,
        "accuracy": acc,
        "payload_kb": kb,
        "slack": slack,
        "binding": binding,
        "utility": utilities(ev.prefs, latency, energy, acc),
        "qoe": ev.qoe[idx],
        "qoe_lower": ev.qoe_lower[idx],
        "feasible": ev.feasible[idx],
    }


def evaluate(
    table: CandidateTable,
    network: Network,
    prefs: Prefs,
    radio_nj_per_byte: float = 0.0,
    weights: np.ndarray | None = None,
) -> Evaluation:
    """Vectorised prediction, constraints and QoE for every candidate. No Python loop over N.

    Must give the same values as :func:`utilities` and :meth:`Evaluation.details` (tested); it
    is written in place to touch as little fresh memory as possible.
    """
    pre = table.precomputed
    n = len(table)
    # transfer = sends * (bytes * 8 / (Mbit/s * 1e3) + RTT) in ms; latency = compute + transfer
    latency = np.multiply(pre["payload_bytes"], 8.0 / (network.bandwidth_mbit * 1e3))
    latency += network.rtt_ms
    latency *= pre["sends"]
    if prefs.strict_intervals and prefs.constraints.max_latency_ms is not None:
        latency_check = latency + pre["compute_ms_hi"]
    else:
        latency_check = None
    latency += pre["compute_ms"]
    if latency_check is None:
        latency_check = latency
    energy = np.multiply(pre["payload_bytes"], radio_nj_per_byte * 1e-6)
    energy_check = energy + table.head_energy_mj_hi if prefs.strict_intervals else None
    energy += table.head_energy_mj
    if energy_check is None:
        energy_check = energy

    c = prefs.constraints
    feasible = np.ones(n, dtype=bool)
    if c.max_latency_ms is not None:
        feasible &= latency_check <= c.max_latency_ms
    if c.min_accuracy is not None:
        feasible &= pre["accuracy_or_neginf"] >= c.min_accuracy
    if c.max_device_energy_mj is not None:
        feasible &= energy_check <= c.max_device_energy_mj
    if c.max_payload_kb is not None:
        feasible &= pre["payload_kb"] <= c.max_payload_kb
    if c.raw_data_stays_on_device:
        feasible &= pre["not_edge"]

    w = prefs.weights.vector() if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    ws = _workspace(n)
    qoe = np.zeros(n)
    if w[1] > 0:
        qoe += _utility_into(latency, prefs.latency_params(), ws) * w[1]
    if w[2] > 0:
        qoe += _utility_into(energy, prefs.energy_params(), ws) * w[2]
    if w[0] > 0:
        acc = prefs.utility.accuracy
        u = np.subtract(pre["accuracy_or_neginf"], acc.floor, out=ws[0])
        u *= w[0] / (acc.ceiling - acc.floor)
        np.clip(u, 0.0, w[0], out=u)  # unknown accuracy (-inf) contributes 0 to the lower bound
        qoe += u
        rank_key = np.multiply(pre["known2"], 1.0)
    else:
        rank_key = np.full(n, 2.0)
    rank_key += qoe
    np.add(rank_key, 4.0, out=rank_key, where=feasible)
    return Evaluation(
        table=table,
        network=network,
        prefs=prefs,
        weights=w,
        radio_nj_per_byte=float(radio_nj_per_byte),
        latency_ms=latency,
        device_energy_mj=energy,
        feasible=feasible,
        qoe_lower=qoe,
        rank_key=rank_key,
    )


_WS = threading.local()


def _workspace(n: int) -> np.ndarray:
    """Per-thread scratch rows (2, n), reused across calls to avoid fresh page faults."""
    ws = getattr(_WS, "buf", None)
    if ws is None or ws.shape[1] != n:
        ws = np.empty((2, n))
        _WS.buf = ws
    return ws


def _utility_into(x: np.ndarray, params: tuple[str, float, float], ws: np.ndarray) -> np.ndarray:
    """Same as prefs._hinge_or_linear, written into scratch rows; returns a view of ``ws``."""
    shape, a, b = params
    out = ws[1]
    if not math.isfinite(a):
        out.fill(1.0)
        return out
    if shape in ("deadline", "budget"):
        np.subtract(x, a, out=out)
        out *= -1.0 / b
        np.minimum(out, 0.0, out=out)
        np.exp(out, out=out)
        return out
    np.multiply(x, -1.0 / a, out=out)
    out += 1.0
    return np.clip(out, 0.0, 1.0, out=out)
