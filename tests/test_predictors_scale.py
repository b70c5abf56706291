"""The large-data paths of training (issue: a retrain on 1M rows under 60 s on 2 cores) keep the
small-data results and give sound intervals: split-conformal coverage on 20k rows, the vectorised
collect against the row-by-row one it replaced, parallel fits equal to sequential ones, and the
data hash (what makes a retrain without new data a no-op)."""

from __future__ import annotations

import math
import os
from datetime import datetime

import numpy as np
import pytest

from predictors import models as M
from predictors.features import FEATURE_NAMES, features_from_dict
from predictors.models import LatencyRegressor, PredictorSet
from predictors.training import collect, train
from registry.errors import EdgeatlasError


def _synthetic(n: int, seed: int, d: int = len(FEATURE_NAMES)) -> tuple[np.ndarray, np.ndarray]:
    """Positive latency-like targets: a linear function of the features times log-normal noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 10, size=(n, d))
    w = np.linspace(0.2, 1.0, d)
    return X, (X @ w + 5.0) * np.exp(rng.normal(0, 0.1, n))


@pytest.mark.parametrize("kind", ["linear", "gbm"])
def test_large_n_interval_is_split_conformal_and_covers_90_percent(kind, monkeypatch):
    fits: list[int] = []
    real = LatencyRegressor._fit_one
    monkeypatch.setattr(
        LatencyRegressor, "_fit_one", lambda self, X, y, **kw: fits.append(len(y)) or real(self, X, y, **kw)
    )
    X, y = _synthetic(40_000, seed=1)
    m = LatencyRegressor(kind=kind, n_trees=60).fit(X[:20_000], y[:20_000])
    assert fits == [16_000]  # one fit on the rows left after the 20 % calibration split
    p, lo, hi = m.predict_interval(X[20_000:])
    assert np.all(lo <= p) and np.all(p <= hi)
    cover = float(np.mean((y[20_000:] >= lo) & (y[20_000:] <= hi)))
    assert abs(cover - 0.9) < 0.03, cover
    # the interval is about as wide as the noise makes it (|N(0, 0.1)| < 0.165 for 90 %)
    assert 0.12 < m.log_halfwidth_ < 0.3, m.log_halfwidth_


def test_small_n_interval_is_still_k_fold_out_of_fold():
    X, y = _synthetic(300, seed=2)
    m = LatencyRegressor(kind="linear").fit(X, y)
    folds = np.random.default_rng(0).permutation(300) % 5
    resid = []
    for f in range(5):
        lr = LatencyRegressor(kind="linear")
        Xs = lr._select(X)
        ref = lr._fit_one(Xs[folds != f], y[folds != f])
        resid.append(np.abs(np.log(lr._raw(ref, Xs[folds == f]) / y[folds == f])))
    r = np.concatenate(resid)
    q = min(1.0, math.ceil((len(r) + 1) * 0.9) / len(r))
    assert m.log_halfwidth_ == float(np.quantile(r, q))
    assert "gcv_mode" not in m._model[-1].get_params() or m._model[-1].gcv_mode is None


def test_parallel_fit_equals_sequential_and_facts_rows_are_capped(monkeypatch):
    monkeypatch.setattr(M, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(M, "FACTS_MAX_ROWS", 900)
    data = {}
    for i, n in enumerate((600, 400, 100)):
        X, y = _synthetic(n, seed=10 + i)
        data[f"c{i}"] = (X, y * (i + 1), y * 3.0 if i != 1 else None)
    facts = {f"c{i}": {"cores": 2 + 2 * i, "freq_mhz": 1500 + 300 * i, "memory_mb": 2048} for i in range(3)}
    seen: list[int] = []
    real = LatencyRegressor.fit

    def spy(self, X, y):
        if X.shape[1] > len(FEATURE_NAMES):  # the facts model: facts | features
            seen.append(len(y))
        return real(self, X, y)

    monkeypatch.setattr(LatencyRegressor, "fit", spy)
    kw = {"kind": "linear", "class_facts": facts}
    seq = PredictorSet.fit(data, n_jobs=1, **kw)
    assert seen == [900]  # 400 (of 600) + 400 + 100 (the workers' fits below are not seen by the spy)
    par = PredictorSet.fit(data, n_jobs=2, **kw)
    assert list(par.classes) == list(seq.classes) == ["c0", "c1", "c2"]
    assert [sorted(e) for e in par.classes.values()] == [sorted(e) for e in seq.classes.values()]
    F = _synthetic(50, seed=99)[0]
    for c in data:
        a, b = seq.predict(F, device_class=c), par.predict(F, device_class=c)
        np.testing.assert_array_equal(a.latency_hi, b.latency_hi)
        if a.energy_mj is not None:
            np.testing.assert_array_equal(a.energy_mj, b.energy_mj)
    f = {"cores": 4, "freq_mhz": 1800, "memory_mb": 2048}
    np.testing.assert_array_equal(seq.predict(F, facts=f).latency_ms, par.predict(F, facts=f).latency_ms)
    # a bad class raises before anything is fitted, in class order, whatever n_jobs
    X, y, _ = data["c2"]
    bad = {**data, "c2": (X, np.where(np.arange(len(y)) == 3, np.nan, y), None)}
    with pytest.raises(EdgeatlasError, match="'c2' \\(latency\\): 0 rows with NaN/inf features and 1"):
        PredictorSet.fit(bad, kind="linear", n_jobs=2)


def test_fits_in_worker_processes_equal_sequential_ones(monkeypatch):
    """From PARALLEL_MIN_ROWS the fits run in loky worker processes, each task's rows sent as their
    distinct rows and an index: the fitted estimators must be the sequential ones, bit for bit."""
    monkeypatch.setattr(M, "PARALLEL_MIN_ROWS", 0)
    data = {}
    for i, n in enumerate((60, 45)):  # enough variants for the additive kind's trees and process
        Xv, yv = _synthetic(n, seed=20 + i)
        idx = np.random.default_rng(i).integers(0, n, 3 * n)  # repeats of each variant
        noise = np.exp(np.random.default_rng(5 + i).normal(0, 0.05, len(idx)))
        data[f"c{i}"] = (Xv[idx], yv[idx] * noise, 2.0 * yv[idx] if i == 0 else None)
    seq, par = PredictorSet.fit(data, kind="auto", n_jobs=1), PredictorSet.fit(data, kind="auto", n_jobs=2)
    F = _synthetic(50, seed=98)[0]
    for c in data:
        a, b = seq.predict(F, device_class=c), par.predict(F, device_class=c)
        np.testing.assert_array_equal(a.latency_ms, b.latency_ms)
        np.testing.assert_array_equal(a.latency_hi, b.latency_hi)
        assert seq.classes[c]["latency"].chosen_kind_ == par.classes[c]["latency"].chosen_kind_
    np.testing.assert_array_equal(
        seq.predict(F, device_class="c0").energy_mj, par.predict(F, device_class="c0").energy_mj
    )


def test_facts_rows_per_class():
    assert M._facts_rows_per_class({"a": 100, "b": 10}, max_rows=200) is None
    assert M._facts_rows_per_class({"a": 100, "b": 10, "c": 1000}, max_rows=300) == 190  # 10 + 100 + 190
    assert M._facts_rows_per_class({"a": 500, "b": 500}, max_rows=300) == 150


def _collect_rowwise(store):
    """The collect this replaced (ORM records, one Python row at a time), for comparison."""
    rows = [r for r in store.list_measurements(status="ok") if r.split_id is None]
    feats = {v.id: features_from_dict(v.features).vector() for v in store.list_variants() if v.features}
    groups: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: r.key):
        groups.setdefault(r.device_class or r.board, []).append(r)
    out = {}
    for c, rs in groups.items():
        en = np.array([np.nan if r.energy_mj is None else r.energy_mj for r in rs], dtype=np.float64)
        out[c] = (
            np.array([feats[r.variant_id] for r in rs]),
            np.array([r.latency_ms for r in rs]),
            en if np.isfinite(en).any() else None,
            [r.variant_id for r in rs],
        )
    return out


def _row(key: str, vid: str, cls: str | None, board: str, ms: float, mj: float | None = None, **kw) -> dict:
    return {
        "key": key,
        "board": board,
        "variant_id": vid,
        "runtime": "r",
        "config": {},
        "status": "ok",
        "latency_ms": ms,
        "energy_mj": mj,
        "energy_source": "measured:test" if mj is not None else None,
        "device_class": cls,
        "source": "probe",
        **kw,
    }


def test_vectorised_collect_matches_the_row_by_row_one(pred_store):
    store = pred_store
    vids = [v.id for v in store.list_variants()]
    extra = [_row(f"zz-{i}", v, None, "boardless", 2.0 + i, 9.0 + i) for i, v in enumerate(vids[:30])]
    extra += [_row("00-ü-first", vids[0], "pixel3", "p", 1.5)]  # non-ASCII key sorts like Python
    extra += [_row("split-row", vids[1], "pixel3", "p", 1.0, split_id=7)]  # split rows are left out
    extra += [_row("failed-row", vids[2], "pixel3", "p", None, status="failed")]
    store.add_measurements_bulk(extra)
    data, ref = collect(store), _collect_rowwise(store)
    assert list(data.per_class) == list(ref) and "boardless" in ref
    assert data.n_rows == sum(len(v[1]) for v in ref.values())
    for c, (X, lat, en, ids) in ref.items():
        X2, lat2, en2 = data.per_class[c]
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(lat2, lat)
        assert (en is None) == (en2 is None)
        if en is not None:
            np.testing.assert_array_equal(en2, en)
        assert data.variant_ids[c] == ids
    # one class only
    only = collect(store, device_class="pixel3")
    assert list(only.per_class) == ["pixel3"] and only.data_hash != data.data_hash


def test_data_hash_is_deterministic_and_sees_every_key_latency_and_energy(pred_store, tmp_path):
    store = pred_store
    h0 = collect(store).data_hash
    assert collect(store).data_hash == h0
    vid = store.list_variants()[0].id
    store.add_measurements_bulk([_row("k-new", vid, "pixel3", "p", 3.0)])
    h1 = collect(store).data_hash
    assert h1 != h0
    hashes = {h0, h1}
    for latency, energy in ((3.0000000000000004, None), (3.0, 7.0), (3.0, 7.5)):
        store.add_measurement(
            "k-new", "p", vid, "r", {}, "ok", latency_ms=latency, energy_mj=energy,
            energy_source="measured:test" if energy else None, device_class="pixel3", replace=True,
        )  # fmt: skip
        hashes.add(collect(store).data_hash)
    assert len(hashes) == 5
    # a retrain on unchanged data is a no-op; a changed value makes it train again
    rep = train(store, kind="linear", report_dir=tmp_path / "r")
    assert train(store, kind="linear", promote="if_better", report_dir=tmp_path / "r")["status"] == "no new data"
    store.add_measurement("k-new", "p", vid, "r", {}, "ok", latency_ms=3.5, device_class="pixel3", replace=True)
    again = train(store, kind="linear", promote="if_better", report_dir=tmp_path / "r")
    assert again["status"] != "no new data" and again["data_hash"] != rep["data_hash"]


def test_bad_rows_name_the_first_one_in_id_order(pred_store):
    store = pred_store
    vid = store.list_variants()[0].id
    store.add_measurements_bulk(
        [
            _row("zz-bad-energy", vid, "pixel3", "p", 2.0, -1.0),
            _row("aa-bad-latency", vid, "pixel3", "p", 0.0),
        ]
    )
    with pytest.raises(EdgeatlasError) as exc:
        collect(store)
    msg = str(exc.value)
    assert msg.startswith("1 ok measurements have a missing/NaN/non-positive latency_ms and 1 a NaN/non-positive")
    assert "key aa-bad-latency" in msg and "latency_ms=0.0" in msg


def test_measurement_columns(pred_store):
    store = pred_store
    cols = store.measurement_columns(("key", "latency_ms"), device_class="pixel3")
    ms = store.list_measurements(device_class="pixel3")
    assert cols == {"key": [m.key for m in ms], "latency_ms": [m.latency_ms for m in ms]}
    assert store.measurement_columns(("key",), device_class="nope") == {"key": []}
    with pytest.raises(EdgeatlasError, match="no column nope"):
        store.measurement_columns(("key", "nope"))
    # a column that needs result processing (a datetime on SQLite) goes through SQLAlchemy's rows
    dated = store.measurement_columns(("key", "created_at"), device_class="pixel3")
    assert dated["key"] == cols["key"] and all(isinstance(t, datetime) for t in dated["created_at"])


def test_large_gbm_fit_is_one_row_per_variant_and_stops_early():
    """From 10k rows a gradient-boosting fit folds a variant's repeats into one row (their mean log
    target) and stops early: repeats, their count and row order no longer change the model."""
    rng = np.random.default_rng(3)
    F, base = _synthetic(800, seed=3)
    reps = rng.integers(10, 20, size=len(F))
    idx = np.repeat(np.arange(len(F)), reps)
    noise = np.exp(rng.normal(0, 0.1, len(idx)))
    y = base[idx] * noise
    est = LatencyRegressor(kind="gbm")
    big = est._fit_large_gbm(F[idx], y)
    # the same model from one row per variant carrying the geometric mean of its repeats
    geo = np.exp(np.bincount(idx, weights=np.log(y)) / reps)
    perm = rng.permutation(len(F))
    folded = est._fit_large_gbm(F[perm], geo[perm])
    np.testing.assert_allclose(big.predict(F), folded.predict(F), rtol=1e-12)
    assert big.n_iter_ < est.n_trees  # early stopping on a 10 % validation split of the variants
    # the public fit takes that path for its training part (80 % of >= SPLIT_CONFORMAL_ROWS rows,
    # so from 10k rows, not 12.5k), and calibrates on whole variants it never saw: the interval
    # covers about 90 % of the measurements of new variants
    F2, base2 = _synthetic(3000, seed=5)
    idx2 = np.repeat(np.arange(len(F2)), 4)
    y2 = base2[idx2] * np.exp(rng.normal(0, 0.1, len(idx2)))
    assert M.SPLIT_CONFORMAL_ROWS <= len(idx2) < M.SPLIT_CONFORMAL_ROWS / (1 - M.CALIBRATION_FRACTION)
    m = LatencyRegressor(kind="gbm").fit(F2[idx2], y2)
    assert m._model.n_iter_ < m.n_trees
    Fn, basen = _synthetic(2000, seed=6)
    yn = basen * np.exp(rng.normal(0, 0.1, len(basen)))
    p, lo, hi = m.predict_interval(Fn)
    assert 0.85 < float(np.mean((yn >= lo) & (yn <= hi))) < 0.95


def test_calibration_rows_are_whole_variants():
    """From 10k rows, no variant has rows on both sides of the calibration split."""
    rng = np.random.default_rng(7)
    F, base = _synthetic(2500, seed=7)
    idx = np.repeat(np.arange(len(F)), rng.integers(3, 6, len(F)))
    y = base[idx] * np.exp(rng.normal(0, 0.1, len(idx)))
    seen: list[np.ndarray] = []
    real = LatencyRegressor._fit_one

    def spy(self, X, yy, **kw):
        seen.append(X)
        return real(self, X, yy, **kw)

    est = LatencyRegressor(kind="linear")
    est._fit_one = spy.__get__(est)
    est.fit(F[idx], y)
    train_rows = {r.tobytes() for r in seen[0]}
    Fs = est._select(F)  # the fit sees the columns its kind reads
    cal_variants = [v for v in range(len(F)) if Fs[v].tobytes() not in train_rows]
    n_cal = int(np.isin(idx, cal_variants).sum())
    assert abs(n_cal - 0.2 * len(idx)) <= 6  # whole variants, about a fifth of the rows
    assert len(seen[0]) + n_cal == len(idx)


def test_row_groups_match_the_exact_row_sort_even_on_a_hash_collision(monkeypatch):
    rng = np.random.default_rng(8)
    F = rng.integers(0, 5, size=(300, 6)).astype(float)  # many exact duplicates
    first, inv, counts = M.row_groups(F)
    np.testing.assert_array_equal(F[first][inv], F)
    assert len(first) == len(np.unique(F, axis=0)) and counts.sum() == len(F)
    # identical rows are one group wherever they sit: a float projection X @ w (the hash before)
    # gave the last variant's 3 identical rows of this matrix different values (OpenBLAS treats
    # the last rows in a remainder kernel), and one variant became two groups
    Fv, _ = _synthetic(2500, seed=7)
    idx = np.repeat(np.arange(2500), np.random.default_rng(7).integers(3, 6, 2500))
    W = LatencyRegressor(kind="linear")._select(Fv[idx])
    first, inv, _ = M.row_groups(W)
    assert len(first) == 2500 and np.array_equal(idx[first][inv], idx)
    # a hash that collides everywhere (a fault injected here): the exact row sort decides
    monkeypatch.setattr(M, "_row_keys", lambda X: np.zeros(len(X), np.uint64))
    X = np.array([[1.0, -2.0], [0.0, 0.0], [1.0, -2.0]])
    first, inv, counts = M.row_groups(X)
    np.testing.assert_array_equal(X[first][inv], X)
    assert sorted(counts.tolist()) == [1, 2]


def test_groups_found_once_give_the_same_folds_as_hashing_each_subset_again():
    """A large fit finds its rows' groups once (kind="auto" fits two kinds on them; the training part
    and the calibration rows are subsets): subset_groups and fold_refined must give exactly what
    row_groups / fold_repeats of the subset would, rows that differ only outside a kind's columns
    folded together with their count-weighted mean."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 4, size=(40, 5)).astype(float)
    X = base[rng.integers(0, 40, 600)]  # repeats of at most 40 distinct rows
    logy = rng.normal(size=600)
    groups = M.row_groups(X)
    rows = np.sort(rng.choice(600, 350, replace=False))
    first, inv, counts = M.subset_groups(groups, rows)
    wfirst, winv, wcounts = M.row_groups(X[rows])
    np.testing.assert_array_equal(X[rows][first], X[rows][wfirst])  # same groups, same canonical order
    np.testing.assert_array_equal(inv, winv)
    np.testing.assert_array_equal(counts, wcounts)
    # fold_refined on the first 3 columns from the whole rows' groups == fold_repeats on those columns
    sub = M.subset_groups(groups, rows)
    for cols in (slice(None), slice(0, 3), slice(0, 1)):
        got = M.fold_refined(X[rows][:, cols], logy[rows], sub)
        want = M.fold_repeats(X[rows][:, cols], logy[rows])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])  # bit for bit: the same sums in the same order
        np.testing.assert_array_equal(got[2], want[2])
    assert len(M.fold_refined(X[:, :1], logy, groups)[0]) == 4  # only the first column's 4 values remain


class _DiesInWorker(LatencyRegressor):
    """A FAULT INJECTION, not a model: a worker process that fits it dies at once (os._exit, as an
    out-of-memory kill would end it); in the process that made it, it fits as LatencyRegressor."""

    def fit(self, X, y):
        if os.getpid() != self._made_in:
            os._exit(9)
        return super().fit(X, y)


def _dies_in_worker() -> _DiesInWorker:
    est = _DiesInWorker(kind="linear")
    est._made_in = os.getpid()  # (pickled with it: a worker sees its maker's pid, not its own)
    return est


def test_a_dead_worker_falls_back_to_fitting_in_process(monkeypatch):
    monkeypatch.setattr(M, "PARALLEL_MIN_ROWS", 0)
    data = {f"c{i}": _synthetic(120, seed=40 + i) for i in range(2)}
    tasks = [(c, _dies_in_worker(), X, y) for c, (X, y) in data.items()]
    with pytest.warns(RuntimeWarning, match="could not run in worker processes .*fitting 2 models in this process"):
        M._fit_all(tasks, n_jobs=2)
    for _, est, X, y in tasks:
        ref = LatencyRegressor(kind="linear").fit(X, y)
        np.testing.assert_array_equal(est.predict(X[:20]), ref.predict(X[:20]))
