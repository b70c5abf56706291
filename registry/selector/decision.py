"""Answers: ranked top-k, Pareto front, infeasibility explanation, and bandwidth/RTT decision tables.

Decision (documented for the CLI and API): the library returns a structured :class:`Answer`
in every case. When nothing is feasible, ``answer.feasible`` is False, ``recommendations`` is
empty and ``answer.infeasible`` says which constraint rules everything out and what the nearest
candidate would need. The CLI and the HTTP API turn that into :class:`InfeasibleError`
(an :class:`EdgeatlasError` with code INFEASIBLE, HTTP 409) whose ``details`` carry the same
structure, so scripts can read it from the JSON body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.candidates import KIND_NAMES, CandidateTable, Evaluation, Network, evaluate
from registry.selector.pareto import pareto_front
from registry.selector.prefs import OBJECTIVES, Prefs


@dataclass(frozen=True)
class Pick:
    """One ranked candidate with its predictions, as shown to users."""

    rank: int
    variant_id: str
    family: str | None
    split: str
    split_kind: str
    codec: str
    predicted: dict[str, float | None]  # latency_ms, device_energy_mj, accuracy, transfer_ms, payload_kb
    interval: dict[str, list[float]]  # latency_ms: [lo, hi], device_energy_mj: [lo, hi]
    accuracy_source: str | None
    qoe: float | None  # None when a weighted part is unknown
    qoe_lower: float
    qoe_parts: dict[str, float | None]  # weight * utility per objective
    feasible: bool
    binding_constraint: str | None
    binding_slack: float | None  # relative slack of the binding constraint (< 0: violated)

    @property
    def key(self) -> str:
        return f"{self.variant_id}/{self.split}/{self.codec}"


@dataclass(frozen=True)
class ParetoPoint:
    """A member of the latency / device energy / accuracy Pareto front."""

    variant_id: str
    family: str | None
    split: str
    codec: str
    latency_ms: float
    device_energy_mj: float
    accuracy: float
    qoe: float | None

    @property
    def key(self) -> str:
        return f"{self.variant_id}/{self.split}/{self.codec}"


def pareto_points(ev: Evaluation, idx: np.ndarray) -> list[ParetoPoint]:
    t = ev.table
    qoe = ev.qoe_lower[idx].tolist()
    return [
        ParetoPoint(str(v), f, str(sp), str(c), lat, en, acc, q)
        for v, f, sp, c, lat, en, acc, q in zip(
            t.variant_id[idx],
            t.family[idx],
            t.split[idx],
            t.codec[idx],
            ev.latency_ms[idx].tolist(),
            ev.device_energy_mj[idx].tolist(),
            ev.accuracy[idx].tolist(),
            qoe,
            strict=True,
        )
    ]


@dataclass(frozen=True)
class Infeasibility:
    rules_out_all: str | None  # a constraint that alone excludes every candidate, if any
    excluded_by: dict[str, int]  # constraint -> how many candidates it excludes
    nearest: Pick | None
    needs: dict[str, str]  # constraint -> what the nearest candidate would need
    message: str
    hint: str


@dataclass(frozen=True)
class Answer:
    device: str
    edge: str
    network: dict[str, float]
    predictor_version: str | None
    prefs_source: str
    app: str | None
    weights: dict[str, float]
    weights_source: str
    energy_source: str | None
    n_candidates: int
    n_feasible: int
    feasible: bool
    recommendations: list[Pick]
    pareto: list[ParetoPoint]
    pareto_objectives: list[str] = field(default_factory=lambda: ["latency_ms", "device_energy_mj", "accuracy"])
    infeasible: Infeasibility | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from registry.commands.common import to_jsonable

        d = to_jsonable(self)
        for group in ("recommendations", "pareto"):
            for p, pick in zip(d[group], getattr(self, group), strict=True):
                p["key"] = pick.key
        return d


class InfeasibleError(EdgeatlasError):
    """No candidate satisfies the hard constraints; ``details`` holds the explanation."""

    def __init__(self, answer: Answer):
        inf = answer.infeasible
        assert inf is not None
        super().__init__(inf.message, ErrorCode.INFEASIBLE, hint=inf.hint)
        self.answer = answer
        self.details = answer.to_dict()["infeasible"]

    def __reduce__(self):
        return (type(self), (self.answer,))

    def to_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().to_dict(), "details": self.details}


def _f(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def make_picks(ev: Evaluation, idx: np.ndarray, ranked: bool = True) -> list[Pick]:
    """Picks for the candidates ``idx`` (ranks 1.. in the given order when ``ranked``, else 0)."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return []
    d = ev.details(idx)
    t = ev.table
    names = ev.constraint_names
    # a row whose device had no energy source (no measurement, predictor or power model): shown as
    # unknown (None), never as 0 mJ; check_energy keeps such a table out of energy-weighted ranking
    out = []
    for r, i in enumerate(idx):
        energy_known = t.energy_known is None or bool(t.energy_known[i])
        b = int(d["binding"][r])
        out.append(
            Pick(
                rank=r + 1 if ranked else 0,
                variant_id=str(t.variant_id[i]),
                family=None if t.family[i] is None else str(t.family[i]),
                split=str(t.split[i]),
                split_kind=KIND_NAMES[int(t.kind[i])],
                codec=str(t.codec[i]),
                predicted={
                    "latency_ms": float(d["latency_ms"][r]),
                    "device_energy_mj": float(d["device_energy_mj"][r]) if energy_known else None,
                    "accuracy": _f(d["accuracy"][r]),
                    "transfer_ms": float(d["transfer_ms"][r]),
                    "payload_kb": float(d["payload_kb"][r]),
                },
                interval={
                    "latency_ms": [float(d["latency_ms_lo"][r]), float(d["latency_ms_hi"][r])],
                    "device_energy_mj": [float(d["device_energy_mj_lo"][r]), float(d["device_energy_mj_hi"][r])]
                    if energy_known
                    else None,
                },
                accuracy_source=None if t.accuracy_source[i] is None else str(t.accuracy_source[i]),
                qoe=_f(d["qoe"][r]),
                qoe_lower=float(d["qoe_lower"][r]),
                qoe_parts={name: _f(ev.weights[j] * d["utility"][j, r]) for j, name in enumerate(OBJECTIVES)},
                feasible=bool(d["feasible"][r]),
                binding_constraint=names[b] if b >= 0 else None,
                binding_slack=None if b < 0 else float(d["slack"][b, r]),
            )
        )
    return out


def make_pick(ev: Evaluation, i: int, rank: int) -> Pick:
    pick = make_picks(ev, np.array([i]))[0]
    return Pick(**{**pick.__dict__, "rank": rank})


def pareto_objectives(ev: Evaluation) -> tuple[str, ...]:
    """The objectives of the answer's front: latency and accuracy (what the plot shows), plus
    device energy when the prefs weigh or constrain it."""
    energy = ev.weights[2] > 0 or ev.prefs.constraints.max_device_energy_mj is not None
    return ("latency_ms", "device_energy_mj", "accuracy") if energy else ("latency_ms", "accuracy")


def pareto_indices(ev: Evaluation, feasible_only: bool = True, objectives: tuple[str, ...] | None = None) -> np.ndarray:
    """Candidates on the Pareto front (latency and energy minimised, accuracy maximised), by latency.

    ``objectives`` defaults to :func:`pareto_objectives`. Candidates with unknown accuracy are
    left out (they cannot be compared on accuracy). With ``feasible_only`` (the default) the
    front is over the feasible candidates.
    """
    objectives = objectives or pareto_objectives(ev)
    pre = ev.table.precomputed
    mask = pre["accuracy_known"] & ev.feasible if feasible_only else pre["accuracy_known"]
    columns = {"latency_ms": ev.latency_ms, "device_energy_mj": ev.device_energy_mj, "accuracy": pre["neg_accuracy"]}
    front = pareto_front([columns[name] for name in objectives], mask=mask)
    return front[np.argsort(ev.latency_ms[front], kind="stable")]


def build_answer(
    ev: Evaluation,
    top_k: int = 5,
    weights_source: str | None = None,
    pareto_limit: int | None = 200,
) -> Answer:
    n = len(ev.table)
    n_feasible = int(np.count_nonzero(ev.feasible))
    top = ev.ranked(top_k)
    top = top[ev.feasible[top]]
    recs = make_picks(ev, top)
    objectives = pareto_objectives(ev)
    front = pareto_indices(ev, feasible_only=True, objectives=objectives)
    notes: list[str] = []
    if pareto_limit is not None and len(front) > pareto_limit:
        notes.append(f"pareto front has {len(front)} members; showing {pareto_limit} spread over latency")
        front = front[np.linspace(0, len(front) - 1, pareto_limit).round().astype(int)]
    pareto = pareto_points(ev, front)
    n_unknown = int(ev.table.precomputed["n_unknown_accuracy"])
    if ev.weights[0] > 0 and n_unknown:
        notes.append(
            f"{n_unknown} candidates have unknown accuracy; they rank after every candidate with a known accuracy"
        )
    infeasible = explain_infeasible(ev) if n_feasible == 0 else None
    return Answer(
        device=ev.table.device,
        edge=ev.table.edge,
        network={"bandwidth_mbit": ev.network.bandwidth_mbit, "rtt_ms": ev.network.rtt_ms},
        predictor_version=ev.table.predictor_version,
        prefs_source=ev.prefs.source,
        app=ev.prefs.app,
        weights={name: float(ev.weights[j]) for j, name in enumerate(OBJECTIVES)},
        weights_source=weights_source or f"prefs:{ev.prefs.source}",
        energy_source=ev.table.energy_source,
        n_candidates=n,
        n_feasible=n_feasible,
        feasible=n_feasible > 0,
        recommendations=recs,
        pareto=pareto,
        pareto_objectives=list(objectives),
        infeasible=infeasible,
        notes=notes,
    )


_UNITS = {"max_latency_ms": "ms", "max_device_energy_mj": "mJ", "max_payload_kb": "kB", "min_accuracy": ""}


def explain_infeasible(ev: Evaluation) -> Infeasibility:
    """Which constraint rules everything out, and what the nearest candidate would need."""
    names = ev.constraint_names
    n = len(ev.table)
    violated = ev.slack < 0  # (C, N)
    excluded_by = {name: int(violated[j].sum()) for j, name in enumerate(names)}
    alone = [name for j, name in enumerate(names) if violated[j].all()]
    # nearest: least total relative violation; a violation that relaxing a number cannot fix
    # (raw data, unknown accuracy) counts as large but finite so a candidate is always found.
    viol = np.where(violated, -ev.slack, 0.0)
    viol = np.where(np.isinf(viol), 1e6, viol)
    total = viol.sum(axis=0)
    i = int(np.argmin(total + np.where(np.isnan(ev.qoe_lower), 0, -1e-9 * ev.qoe_lower)))
    nearest = make_pick(ev, i, 0)
    c = ev.prefs.constraints
    needs: dict[str, str] = {}
    values = {
        "max_latency_ms": ev.latency_ms_hi[i] if ev.prefs.strict_intervals else ev.latency_ms[i],
        "max_device_energy_mj": ev.device_energy_mj_hi[i] if ev.prefs.strict_intervals else ev.device_energy_mj[i],
        "max_payload_kb": ev.payload_kb[i],
        "min_accuracy": ev.accuracy[i],
    }
    for j, name in enumerate(names):
        if not violated[j, i]:
            continue
        if name == "raw_data_stays_on_device":
            needs[name] = "raw_data_stays_on_device = false (it uploads the raw input)"
        elif name == "min_accuracy" and math.isnan(values[name]):
            needs[name] = "a recorded accuracy (it is unknown; run the zoo's accuracy evaluation for this variant)"
        elif name == "min_accuracy":
            needs[name] = f"min_accuracy <= {values[name]:.4g} (now {c.min_accuracy:.4g})"
        else:
            limit = getattr(c, name)
            unit = _UNITS[name]
            needs[name] = f"{name} >= {values[name]:.4g} {unit} (now {limit:.4g} {unit})".replace("  ", " ")
    if alone:
        head = f"{alone[0]} alone rules out all {n} candidates"
    else:
        worst = max(excluded_by, key=lambda k: excluded_by[k]) if excluded_by else "?"
        head = (
            f"no single constraint rules out everything, their combination does "
            f"({worst} excludes the most: {excluded_by.get(worst, 0)} of {n})"
        )
    need_text = "; ".join(needs.values())
    message = (
        f"no candidate satisfies the constraints of {ev.prefs.source} on device {ev.table.device} "
        f"(bandwidth {ev.network.bandwidth_mbit:g} Mbit/s, RTT {ev.network.rtt_ms:g} ms): {head}; "
        f"the nearest candidate {nearest.key} would need {need_text}"
    )
    hint = f"relax the constraint(s) in {ev.prefs.source}: {need_text}"
    if any(k in needs for k in ("max_latency_ms", "max_payload_kb")):
        hint += ", or try a faster network"
    return Infeasibility(
        rules_out_all=alone[0] if alone else None,
        excluded_by=excluded_by,
        nearest=nearest,
        needs=needs,
        message=message,
        hint=hint,
    )


# --- decision tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRow:
    rtt_ms: float
    bandwidth_min_mbit: float
    bandwidth_max_mbit: float
    variant_id: str | None
    split: str | None
    split_kind: str | None
    codec: str | None
    qoe: list[float | None]  # QoE at bandwidth_min and bandwidth_max
    latency_ms: list[float]  # predicted latency at bandwidth_min and bandwidth_max
    reason: str | None = None  # why nothing is picked (infeasible)


@dataclass(frozen=True)
class DecisionTable:
    device: str
    edge: str
    prefs_source: str
    predictor_version: str | None
    bandwidths_mbit: list[float]
    rtts_ms: list[float]
    rows: list[DecisionRow]
    grid: list[dict[str, Any]]  # one entry per (rtt, bandwidth) cell

    def to_dict(self) -> dict[str, Any]:
        from registry.commands.common import to_jsonable

        return to_jsonable(self)


def decision_table(
    table: CandidateTable,
    prefs: Prefs,
    bandwidths_mbit: list[float],
    rtts_ms: list[float],
    radio_nj_per_byte: float = 0.0,
    weights: np.ndarray | None = None,
) -> DecisionTable:
    """Best (variant, split, codec) per network cell; adjacent bandwidths with the same pick merge."""
    if not bandwidths_mbit or not rtts_ms:
        raise EdgeatlasError(
            "a decision table needs at least one bandwidth and one RTT",
            ErrorCode.INVALID_ARGUMENT,
            hint="pass e.g. --bandwidths 1,5,10,50,100 --rtts 5,20,80",
        )
    bws = sorted({float(b) for b in bandwidths_mbit})
    rtts = sorted({float(r) for r in rtts_ms})
    rows: list[DecisionRow] = []
    grid: list[dict[str, Any]] = []
    for rtt in rtts:
        cells = []
        for bw in bws:
            ev = evaluate(table, Network(bw, rtt), prefs, radio_nj_per_byte, weights)
            best = ev.ranked(1)
            i = int(best[0]) if len(best) else -1
            if i >= 0 and ev.feasible[i]:
                cell = {
                    "rtt_ms": rtt,
                    "bandwidth_mbit": bw,
                    "key": table.key(i),
                    "variant_id": str(table.variant_id[i]),
                    "split": str(table.split[i]),
                    "split_kind": KIND_NAMES[int(table.kind[i])],
                    "codec": str(table.codec[i]),
                    "qoe": _f(ev.qoe[i]),
                    "latency_ms": float(ev.latency_ms[i]),
                    "reason": None,
                }
            else:
                inf = explain_infeasible(ev)
                cell = {
                    "rtt_ms": rtt,
                    "bandwidth_mbit": bw,
                    "key": None,
                    "variant_id": None,
                    "split": None,
                    "split_kind": None,
                    "codec": None,
                    "qoe": None,
                    "latency_ms": float("nan"),
                    "reason": inf.message,
                }
            cells.append(cell)
        grid.extend(cells)
        start = 0
        for j in range(1, len(cells) + 1):
            if j == len(cells) or cells[j]["key"] != cells[start]["key"]:
                a, b = cells[start], cells[j - 1]
                rows.append(
                    DecisionRow(
                        rtt_ms=rtt,
                        bandwidth_min_mbit=a["bandwidth_mbit"],
                        bandwidth_max_mbit=b["bandwidth_mbit"],
                        variant_id=a["variant_id"],
                        split=a["split"],
                        split_kind=a["split_kind"],
                        codec=a["codec"],
                        qoe=[a["qoe"], b["qoe"]],
                        latency_ms=[a["latency_ms"], b["latency_ms"]],
                        reason=a["reason"],
                    )
                )
                start = j
    return DecisionTable(
        device=table.device,
        edge=table.edge,
        prefs_source=prefs.source,
        predictor_version=table.predictor_version,
        bandwidths_mbit=bws,
        rtts_ms=rtts,
        rows=rows,
        grid=grid,
    )
