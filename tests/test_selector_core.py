"""Selector core: prefs validation, vectorised evaluation, constraints, ranking, Pareto, decision tables.

Structural properties run on synthetic inputs (random candidate values, named as such); the
measured fixture (`measured_mlp_table`, real onnxruntime timings) checks the network trade-off.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.candidates import KIND_DEVICE, KIND_EDGE, KIND_SPLIT, CandidateTable, Network, evaluate
from registry.selector.decision import (
    InfeasibleError,
    build_answer,
    decision_table,
    explain_infeasible,
    pareto_indices,
)
from registry.selector.pareto import pareto_front
from registry.selector.prefs import load_prefs, prefs_from_dict, utilities

REPO = Path(__file__).resolve().parents[1]


def synthetic(n_variants: int = 40, n_splits: int = 6, seed: int = 0, unknown: int = 0) -> CandidateTable:
    """Random candidates (synthetic values, for structural tests only)."""
    rng = np.random.default_rng(seed)
    v = np.repeat(np.arange(n_variants), n_splits)
    s = np.tile(np.arange(n_splits), n_variants)
    kind = np.where(s == 0, KIND_EDGE, np.where(s == n_splits - 1, KIND_DEVICE, KIND_SPLIT))
    cost = rng.lognormal(0, 1, n_variants)[v]
    frac = s / (n_splits - 1)
    head = cost * 10 * frac
    tail = cost * (1 - frac)
    acc = np.clip(0.5 + 0.1 * np.log1p(cost) + rng.normal(0, 0.02, len(v)), 0, 1)
    acc[:unknown] = np.nan
    n = len(v)
    return CandidateTable.from_columns(
        variant_id=[f"v{i}" for i in v],
        family=["syn"] * n,
        split=[f"s{j}" for j in s],
        codec=["fp32"] * n,
        kind=kind,
        head_ms=head,
        head_ms_lo=head * 0.8,
        head_ms_hi=head * 1.3,
        tail_ms=tail,
        payload_bytes=np.where(kind == KIND_DEVICE, 0.0, 50_000 * (1 - frac) + 1000),
        head_energy_mj=head * 3,
        accuracy=acc,
    )


PREFS = {
    "constraints": {"max_latency_ms": 60, "max_device_energy_mj": 150},
    "weights": {"accuracy": 0.5, "latency": 0.4, "energy": 0.1},
    "utility": {"latency": {"target_ms": 20, "decay_ms": 10}, "energy": {"zero_mj": 200}},
}


# --- prefs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["realtime_camera", "wearable_battery", "medical_accuracy"])
def test_example_prefs_load(name: str) -> None:
    p = load_prefs(REPO / "examples" / "prefs" / f"{name}.toml")
    assert p.app == name
    assert p.weights.vector().sum() == pytest.approx(1.0)
    assert p.source.endswith(f"{name}.toml")


def test_bad_prefs_name_file_line_field_and_fix(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[constraints]\nmax_latency_ms = 50\nmin_accuracy = 72\n")
    with pytest.raises(EdgeatlasError) as e:
        load_prefs(f)
    assert e.value.code == ErrorCode.INVALID_CONFIG
    assert f"{f}:3" in e.value.message and "constraints.min_accuracy" in e.value.message
    assert "fraction" in e.value.hint

    f.write_text("[constraints]\nmax_latncy_ms = 50\n")
    with pytest.raises(EdgeatlasError) as e:
        load_prefs(f)
    assert f"{f}:2" in e.value.message and "max_latncy_ms" in e.value.message
    assert "max_latency_ms" in e.value.hint  # lists the allowed names

    f.write_text("[weights]\nlatency = 1\n")  # a deadline without a target
    with pytest.raises(EdgeatlasError) as e:
        load_prefs(f)
    assert "utility.latency.target_ms" in e.value.message and "target_ms" in e.value.hint

    f.write_text("[constraints\n")
    with pytest.raises(EdgeatlasError, match="not valid TOML"):
        load_prefs(f)
    with pytest.raises(EdgeatlasError, match="does not exist"):
        load_prefs(tmp_path / "missing.toml")
    with pytest.raises(EdgeatlasError, match="weights"):
        prefs_from_dict({"weights": {"accuracy": 0, "latency": 0, "energy": 0}})


def test_utility_shapes() -> None:
    p = prefs_from_dict(PREFS)
    lat = np.array([0.0, 20.0, 30.0, 40.0])
    u = utilities(p, lat, np.array([0.0, 100.0, 200.0, 400.0]), np.array([0.2, np.nan, 1.0, 0.5]))
    assert u[1].tolist() == pytest.approx([1.0, 1.0, np.exp(-1), np.exp(-2)])  # deadline
    assert u[2].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])  # linear to zero_mj, clipped
    assert np.isnan(u[0, 1]) and u[0, 2] == 1.0
    budget = prefs_from_dict(
        {
            "weights": {"energy": 1, "latency": 0, "accuracy": 0},
            "utility": {"energy": {"shape": "budget", "budget_mj": 10}},
        }
    )
    ue = utilities(budget, lat, np.array([5.0, 10.0, 20.0, 30.0]), lat)[2]
    assert ue.tolist() == pytest.approx([1.0, 1.0, np.exp(-1), np.exp(-2)])


# --- evaluation ------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
def test_fast_path_matches_reference(strict: bool) -> None:
    t = synthetic(unknown=7)
    p = prefs_from_dict(
        {
            **PREFS,
            "constraints": {
                **PREFS["constraints"],
                "min_accuracy": 0.5,
                "max_payload_kb": 40,
                "raw_data_stays_on_device": True,
            },
            "strict_intervals": strict,
        }
    )
    ev = evaluate(t, Network(10, 20), p, radio_nj_per_byte=50)
    d = ev.details()
    # reference: straight from the formulas
    transfer = np.where(t.payload_bytes > 0, t.payload_bytes * 8 / 10e3 + 20, 0)
    lat = t.head_ms + t.tail_ms + t.encode_ms + t.decode_ms + transfer
    en = t.head_energy_mj + t.payload_bytes * 50e-6
    np.testing.assert_allclose(ev.latency_ms, lat)
    np.testing.assert_allclose(d["transfer_ms"], transfer)
    np.testing.assert_allclose(ev.device_energy_mj, en)
    assert (d["latency_ms_lo"] <= lat + 1e-12).all() and (d["latency_ms_hi"] >= lat - 1e-12).all()
    # feasibility equals "every slack >= 0"
    assert (ev.feasible == (d["slack"] >= 0).all(axis=0)).all()
    u = utilities(p, lat, en, t.accuracy)
    w = p.weights.vector()
    np.testing.assert_allclose(ev.qoe_lower, (w[:, None] * np.nan_to_num(u, nan=0.0)).sum(axis=0))
    assert np.isnan(ev.qoe[:7]).all()
    lat_checked = d["latency_ms_hi"] if strict else lat
    c = p.constraints
    expect = (
        (lat_checked <= c.max_latency_ms)
        & ~np.isnan(t.accuracy)
        & (np.nan_to_num(t.accuracy, nan=0) >= c.min_accuracy)
        & ((d["device_energy_mj_hi"] if strict else en) <= c.max_device_energy_mj)
        & (t.payload_bytes / 1000 <= c.max_payload_kb)
        & (t.kind != KIND_EDGE)
    )
    assert (ev.feasible == expect).all()


def test_ranking_and_binding() -> None:
    t = synthetic(unknown=12)
    p = prefs_from_dict(PREFS)
    ev = evaluate(t, Network(20, 10), p)
    order = ev.ranked()
    feas = ev.feasible[order]
    assert not (np.diff(feas.astype(int)) > 0).any()  # feasible first
    known = ~np.isnan(ev.qoe[order])
    f_known = order[feas & known]
    assert (np.diff(ev.qoe[f_known]) <= 1e-12).all()  # QoE non-increasing
    first_unknown = np.flatnonzero(feas & ~known)
    if len(first_unknown) and len(f_known):
        assert first_unknown.min() > np.flatnonzero(feas & known).max()  # unknown never above known
    top = ev.ranked(5)
    assert list(top) == list(order[:5])
    ans = build_answer(ev, top_k=5)
    assert [r.rank for r in ans.recommendations] == [1, 2, 3, 4, 5]
    assert all(r.feasible and r.accuracy_source is None for r in ans.recommendations)
    for r in ans.recommendations:
        assert r.binding_constraint in ("max_latency_ms", "max_device_energy_mj")
        assert r.binding_slack >= 0
        assert sum(r.qoe_parts.values()) == pytest.approx(r.qoe)
    # the binding constraint is the one with the least slack
    d = ev.details(top)
    assert (d["binding"] == np.argmin(d["slack"], axis=0)).all()


def test_raw_data_forbids_all_on_edge_and_unknown_accuracy_fails_min_accuracy() -> None:
    t = synthetic(unknown=30)
    p = prefs_from_dict({**PREFS, "constraints": {"raw_data_stays_on_device": True, "min_accuracy": 0.3}})
    ev = evaluate(t, Network(50, 5), p)
    assert not ev.feasible[t.kind == KIND_EDGE].any()
    assert not ev.feasible[np.isnan(t.accuracy)].any()
    assert ev.feasible[(t.kind != KIND_EDGE) & (t.accuracy >= 0.3)].all()


# --- Pareto ----------------------------------------------------------------------------------


def _brute_front(c: np.ndarray) -> set[int]:
    out = set()
    for i in range(len(c)):
        if np.isnan(c[i]).any():
            continue
        dom = (c <= c[i]).all(axis=1) & (c < c[i]).any(axis=1)
        if not dom.any():
            out.add(i)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = rng.random((300, 3)).round(1 if seed % 2 else 6)  # seeds with many ties and duplicates
    c[rng.integers(0, 300, 5), 1] = np.nan
    assert set(pareto_front(c).tolist()) == _brute_front(c)
    assert set(pareto_front([c[:, 0], c[:, 1], c[:, 2]]).tolist()) == _brute_front(c)


@pytest.mark.parametrize(("seed", "m"), [(0, 3), (1, 3), (2, 2), (3, 4)])
def test_pareto_grid_prefilter_is_exact_on_large_inputs(seed: int, m: int) -> None:
    """Above the grid threshold (2000 rows) the pre-filter runs; the front must not change.
    Correlated, tied and skewed columns stress the cell edges."""
    rng = np.random.default_rng(seed)
    n = 3000
    base = rng.lognormal(0, 1, n)
    cols = [base * rng.uniform(0.5, 1.5, n) for _ in range(m - 1)] + [-np.log1p(base) + rng.normal(0, 0.2, n)]
    c = np.column_stack(cols)
    c[: n // 3] = c[: n // 3].round(1)  # ties and duplicates
    assert set(pareto_front(c).tolist()) == _brute_front(c)


def _brute_front_fast(c: np.ndarray) -> set[int]:
    """The same definition as _brute_front, compared in blocks (for a few thousand rows)."""
    out = set()
    for start in range(0, len(c), 256):
        blk = c[start : start + 256]
        le = (c[:, None, :] <= blk[None, :, :]).all(axis=2)
        lt = (c[:, None, :] < blk[None, :, :]).any(axis=2)
        dom = (le & lt).any(axis=0)
        out |= {start + i for i in np.flatnonzero(~dom)}
    return out


@pytest.mark.parametrize(("seed", "m", "ties"), [(10, 2, False), (11, 2, True), (12, 3, False), (13, 3, True)])
def test_pareto_sort_sweep_and_grid_filter_exact_on_zoo_shaped_input(seed: int, m: int, ties: bool) -> None:
    """The recommend path (2 columns: strip filter + sort-and-sweep; 3 columns: grid-min
    filter + staircase sweep) on 6000 rows shaped like a zoo (accuracy shared by the splits of
    a variant, heavy-tailed latency, all-on-edge outliers), equal to pairwise brute force."""
    rng = np.random.default_rng(seed)
    n_var, n_split = 300, 20
    cost = rng.lognormal(0, 1, n_var)
    acc = np.repeat(np.clip(0.4 + 0.1 * np.log1p(cost) + rng.normal(0, 0.03, n_var), 0, 1), n_split)
    frac = np.tile(np.linspace(0, 1, n_split), n_var)
    lat = np.repeat(20 * cost, n_split) * frac + 150 * np.exp(-3 * frac) + rng.exponential(1, n_var * n_split)
    lat[::n_split] += 1000  # all-on-edge over a slow link
    energy = np.repeat(2 * cost, n_split) * frac + rng.random(n_var * n_split)
    c = np.column_stack([lat, energy, -acc][: m - 1] + [-acc])
    if ties:
        c = c.round(1)
        c[:50] = c[50:100]  # exact duplicates
    expected = _brute_front_fast(c)
    assert set(pareto_front(c).tolist()) == expected
    assert set(pareto_front(list(c.T)).tolist()) == expected


def test_answer_pareto_is_nondominated_and_feasible() -> None:
    t = synthetic(unknown=5)
    ev = evaluate(t, Network(8, 30), prefs_from_dict(PREFS))
    front = pareto_indices(ev)
    assert ev.feasible[front].all() and not np.isnan(ev.accuracy[front]).any()
    c = np.column_stack((ev.latency_ms, ev.device_energy_mj, -ev.accuracy))
    cand = np.flatnonzero(ev.feasible & ~np.isnan(ev.accuracy))
    assert set(front.tolist()) == {int(cand[i]) for i in _brute_front(c[cand])}


# --- infeasible ------------------------------------------------------------------------------


def test_infeasible_names_the_constraint_and_the_nearest_need() -> None:
    t = synthetic()
    p = prefs_from_dict({**PREFS, "constraints": {"max_latency_ms": 0.001, "min_accuracy": 0.1}})
    ev = evaluate(t, Network(10, 20), p)
    ans = build_answer(ev)
    assert not ans.feasible and ans.recommendations == []
    inf = ans.infeasible
    assert inf.rules_out_all == "max_latency_ms"
    assert inf.excluded_by["max_latency_ms"] == len(t)
    fastest = ev.latency_ms.min()
    assert inf.nearest.predicted["latency_ms"] == pytest.approx(fastest)
    assert f"max_latency_ms >= {fastest:.4g}" in inf.needs["max_latency_ms"]
    err = InfeasibleError(ans)
    assert err.code == ErrorCode.INFEASIBLE and err.http_status == 409
    assert "max_latency_ms alone rules out all" in str(err)
    assert err.to_dict()["details"]["nearest"]["variant_id"] == inf.nearest.variant_id
    back = pickle.loads(pickle.dumps(err))  # (an error raised in a worker process crosses back pickled)
    assert type(back) is InfeasibleError and back.to_dict() == err.to_dict() and str(back) == str(err)

    # a combination: each constraint alone leaves something, together nothing
    lat_min = ev.latency_ms.min()
    fast = int(np.argmin(ev.latency_ms))
    p2 = prefs_from_dict(
        {
            **PREFS,
            "constraints": {"max_latency_ms": float(lat_min * 1.0001), "min_accuracy": float(t.accuracy[fast] + 1e-6)},
        }
    )
    ev2 = evaluate(t, Network(10, 20), p2)
    if not ev2.feasible.any():
        inf2 = explain_infeasible(ev2)
        assert inf2.rules_out_all is None and "combination" in inf2.message


# --- decision table on real measurements ------------------------------------------------------


def test_decision_table_switches_to_device_as_bandwidth_falls(measured_mlp_table: CandidateTable) -> None:
    t = measured_mlp_table
    p = prefs_from_dict(
        {
            "weights": {"accuracy": 0, "latency": 1, "energy": 0},
            "utility": {"latency": {"shape": "linear", "zero_ms": 1e4}},
        }
    )
    bws = [0.001, 0.01, 0.1, 1, 10, 100, 1000, 10000]
    dt = decision_table(t, p, bws, [0.0, 5.0])
    assert dt.bandwidths_mbit == sorted(bws)
    for rtt in (0.0, 5.0):
        rows = [r for r in dt.rows if r.rtt_ms == rtt]
        # ranges tile the bandwidth list, adjacent rows differ
        assert rows[0].bandwidth_min_mbit == bws[0] and rows[-1].bandwidth_max_mbit == bws[-1]
        assert all((a.variant_id, a.split) != (b.variant_id, b.split) for a, b in zip(rows, rows[1:], strict=False))
        # at 1 kbit/s every upload costs seconds: the pick keeps everything on the device
        assert rows[0].split_kind == "all-on-device"
    for cell in dt.grid:  # the pick is the fastest candidate of its cell
        ev = evaluate(t, Network(cell["bandwidth_mbit"], cell["rtt_ms"]), p)
        assert cell["latency_ms"] == pytest.approx(ev.latency_ms.min())


def test_measured_table_answer_marks_accuracy_unknown(measured_mlp_table: CandidateTable) -> None:
    p = prefs_from_dict(PREFS)
    ans = build_answer(evaluate(measured_mlp_table, Network(20, 10), p), top_k=3)
    assert any("unknown accuracy" in n for n in ans.notes)
    assert all(r.qoe is None and r.predicted["accuracy"] is None for r in ans.recommendations)
    assert ans.pareto == []  # nothing with a known accuracy to put on a front


def test_bad_network_and_table_inputs() -> None:
    with pytest.raises(EdgeatlasError, match="bandwidth_mbit"):
        Network(0, 10)
    with pytest.raises(EdgeatlasError, match="rtt_ms"):
        Network(10, -1)
    with pytest.raises(EdgeatlasError, match="head_ms"):
        CandidateTable.from_columns(variant_id=["a"], split=["s"], codec=["c"], kind=[1], head_ms=[np.nan])
    with pytest.raises(EdgeatlasError, match="decision table needs"):
        decision_table(synthetic(), prefs_from_dict(PREFS), [], [1.0])


def test_unknown_energy_is_shown_as_unknown_not_zero() -> None:
    """A table whose device had no energy source at all (sources.py marks every row in
    energy_known): picks carry None, not 0 mJ. Synthetic values."""
    import dataclasses

    t = synthetic(n_variants=5, n_splits=3)
    t = dataclasses.replace(t, head_energy_mj=np.zeros(len(t.head_ms)), energy_known=np.zeros(len(t), dtype=bool))
    p = prefs_from_dict({"weights": {"accuracy": 0, "latency": 1, "energy": 0}, "constraints": {"max_latency_ms": 1e6}})
    ans = build_answer(evaluate(t, Network(10.0, 5.0), p), top_k=3)
    assert all(
        r.predicted["device_energy_mj"] is None and r.interval["device_energy_mj"] is None for r in ans.recommendations
    )
    known = build_answer(evaluate(synthetic(n_variants=5, n_splits=3), Network(10.0, 5.0), p), top_k=3)
    assert all(r.predicted["device_energy_mj"] is not None for r in known.recommendations)


def test_unknown_energy_per_row() -> None:
    """The per-row mask (sources.py sets it where the device had no energy source for that row):
    exactly those rows show None; the rest keep their values, also through take(). Synthetic values."""
    base = synthetic(n_variants=4, n_splits=3)
    n = len(base)
    known = np.arange(n) % 2 == 0
    cols = {name: getattr(base, name) for name in ("variant_id", "family", "split", "codec", "kind", "head_ms")}
    t = CandidateTable.from_columns(
        **cols, tail_ms=base.tail_ms, payload_bytes=base.payload_bytes, head_energy_mj=base.head_energy_mj,
        accuracy=base.accuracy, energy_known=known,
    )  # fmt: skip
    p = prefs_from_dict({"weights": {"accuracy": 0, "latency": 1, "energy": 0}, "constraints": {"max_latency_ms": 1e6}})
    ans = build_answer(evaluate(t, Network(10.0, 5.0), p), top_k=n)
    keys = t.keys()
    for r in ans.recommendations:
        i = keys.index(f"{r.variant_id}/{r.split}/{r.codec}")
        assert (r.predicted["device_energy_mj"] is None) == (not known[i])
    sub = t.take(np.flatnonzero(~known))
    assert sub.energy_known is not None and not sub.energy_known.any()
