"""k-shot evaluation: the log-space calibrator's contract, and evaluation data seen only through the shots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from predictors import datasets as D
from predictors import evaluate as E
from predictors.features import FEATURE_NAMES
from predictors.kshot import CorrectedKShotCalibrator, LogKShotCalibrator
from predictors.models import loo_log_halfwidth
from registry.errors import EdgeatlasError


@parametrize_with_checks([LogKShotCalibrator(), CorrectedKShotCalibrator()])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_log_calibrator_recovers_a_product_of_references():
    rng = np.random.default_rng(0)
    R = rng.uniform(1, 20, size=(200, 3))
    y = 2.0 * R[:, 0] ** 0.7 * R[:, 2] ** 0.3
    cal = LogKShotCalibrator(alpha=1e-6).fit(R[:10], y[:10])
    np.testing.assert_allclose(cal.predict(R[10:]), y[10:], rtol=1e-3)
    p, lo, hi = cal.predict_interval(R[10:])
    assert np.all(lo <= p) and np.all(p <= hi)


def test_log_calibrator_weights_are_non_negative():
    rng = np.random.default_rng(1)
    R = rng.uniform(1, 20, size=(10, 4))
    y = 5.0 / R[:, 1]  # inversely related to a reference: the best w >= 0 is 0 there
    cal = LogKShotCalibrator(alpha=0.1).fit(R, y)
    assert np.all(cal._model[0] >= 0)


def _op_world(seed: int, n: int = 400):
    """References that weigh the 4 op counts alike; a new device that pays extra for op 0 (skip),
    which no non-negative mix of the references can express."""
    rng = np.random.default_rng(seed)
    Z = rng.integers(0, 4, size=(n, 4)).astype(float)
    R = np.column_stack([Z[:, 1:] @ rng.uniform(0.5, 2.0, 3) + rng.uniform(1, 3) for _ in range(3)])
    return rng, Z, R


def test_corrected_calibrator_learns_an_op_the_references_miss():
    rng, Z, R = _op_world(1)
    y = (R @ np.array([0.5, 0.3, 0.2]) + 1.0) * np.exp(0.3 * Z[:, 0])
    sh, q = np.arange(10), np.arange(10, len(y))
    X = np.hstack([R, Z])
    cor = CorrectedKShotCalibrator(n_correction=4).fit(X[sh], y[sh])
    plain = CorrectedKShotCalibrator().fit(R[sh], y[sh])
    assert cor.corrected_ and not plain.corrected_
    assert cor.loo_errors_["corrected"] < 0.7 * cor.loo_errors_["mix"] and "corrected" not in plain.loo_errors_
    # the errors that chose the correction do not also narrow its interval below the mix's
    assert cor.log_halfwidth_ >= plain.log_halfwidth_ > 0
    m_cor, m_plain = E.metrics(cor.predict(X[q]), y[q]), E.metrics(plain.predict(R[q]), y[q])
    assert m_cor["spearman"] > 0.95 > m_plain["spearman"]
    assert m_cor["mape"] < m_plain["mape"] / 2
    p, lo, hi = cor.predict_interval(X[q])
    assert np.all(lo <= p) and np.all(p <= hi) and np.mean((lo <= y[q]) & (y[q] <= hi)) > 0.7


def test_corrected_calibrator_keeps_the_mix_when_the_references_span_the_device():
    rng, Z, R = _op_world(2)
    y = R @ np.array([0.5, 0.3, 0.2]) + 1.0 + rng.normal(0, 0.05, len(R))
    X = np.hstack([R, Z])
    cor = CorrectedKShotCalibrator(n_correction=4).fit(X[:10], y[:10])
    assert not cor.corrected_ and cor.form_ == "mix" and set(cor.loo_errors_) == {"mix", "corrected", "additive"}
    # then it is exactly the plain mix (n_correction=0)
    np.testing.assert_allclose(cor.predict(X[10:]), CorrectedKShotCalibrator().fit(R[:10], y[:10]).predict(R[10:]))
    with pytest.raises(ValueError, match="n_correction"):
        CorrectedKShotCalibrator(n_correction=7).fit(X[:10], y[:10])


def test_calibrator_sums_op_costs_for_a_device_unlike_every_reference():
    """An accelerator among GPUs: its latency is its own sum of per-op costs (op 0 dear, op 3 free),
    which neither a non-negative mix of the references nor a multiplicative correction of it follows;
    the shots choose the op-count sum form."""
    rng, Z, R = _op_world(3)
    y = Z @ np.array([3.0, 0.2, 1.5, 0.0]) + 2.0 + rng.normal(0, 0.05, len(Z))
    sh, q = np.arange(10), np.arange(10, len(y))
    X = np.hstack([R, Z])
    cal = CorrectedKShotCalibrator(n_correction=4).fit(X[sh], y[sh])
    two = CorrectedKShotCalibrator(n_correction=4, additive=False).fit(X[sh], y[sh])
    assert cal.form_ == "additive" and not cal.corrected_ and two.form_ in ("mix", "corrected")
    e = cal.loo_errors_
    assert e["additive"] < 0.7 * min(e["mix"], e["corrected"]) and "additive" not in two.loo_errors_
    m_sum, m_two = E.metrics(cal.predict(X[q]), y[q]), E.metrics(two.predict(X[q]), y[q])
    assert m_sum["acc10"] > 0.95 and m_sum["mape"] < m_two["mape"] / 2
    # the sum reads the op counts only: other reference columns give the same predictions
    X2 = X.copy()
    X2[:, :3] = rng.uniform(1, 50, size=(len(X2), 3))
    np.testing.assert_allclose(cal.predict(X2[q]), cal.predict(X[q]))

    # its interval is at least its own leave-one-shot-out quantile (the whole procedure refitted
    # without each shot), and at least the mix's, which it was compared with
    def sum_loo(test: np.ndarray) -> np.ndarray:
        (i,) = np.flatnonzero(test)  # ten shots: each one left out alone
        m = ~test
        return np.array(
            [abs(math.log(CorrectedKShotCalibrator().fit(Z[sh][m], y[sh][m]).predict(Z[sh][i : i + 1])[0] / y[i]))]
        )

    own = loo_log_halfwidth(10, sum_loo, cal.coverage)
    mix = CorrectedKShotCalibrator().fit(R[sh], y[sh]).log_halfwidth_
    assert cal.log_halfwidth_ >= max(own, mix) > 0 and cal.log_halfwidth_ == pytest.approx(
        max(own, mix, two.log_halfwidth_)
    )
    p, lo, hi = cal.predict_interval(X[q])
    assert np.all(lo <= p) and np.all(p <= hi) and np.mean((lo <= y[q]) & (y[q] <= hi)) > 0.7


def test_nb201_op_counts_count_each_op_over_the_six_edges():
    from predictors import nb201

    a = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    np.testing.assert_array_equal(nb201.op_counts([a], live=False), [[1, 1, 2, 1]])
    # node 1 -> node 3 only through pooling is live; the 'none' edge stays none
    assert nb201.op_counts([a], live=True).sum() == 5


def test_make_calibrator_rejects_an_unknown_space():
    with pytest.raises(EdgeatlasError):
        E.make_calibrator("sqrt")


def _hwnas_table(n_arch=150, seed=0):
    """A small HW-NAS-Bench-360-shaped table: 3 tasks, pi5 runtimes (latency + energy) and a pixel."""
    rng = np.random.default_rng(seed)
    ref = D.help_reference_indices("nb201")
    idx = np.array(ref + [i for i in range(1000, 1000 + n_arch - len(ref))])
    base = rng.uniform(1, 10, size=(n_arch, 4))
    tasks = ("cifar100", "darcy", "ninapro")
    devs = ("pi5-litert", "pi5-onnx", "pi5-torchmobile", "pixel-litert")
    feats, lat, en, grp, keys, index = [], [], [], [], [], []
    for t, task in enumerate(tasks):
        f = np.zeros((n_arch, len(FEATURE_NAMES)))
        f[:, :4] = base * (1 + t)
        f[:, 4] = 1.0 + t
        feats.append(f)
        L = np.column_stack([(base @ rng.uniform(0.5, 2, 4)) * (1 + t) * (1 + k) for k in range(len(devs))])
        lat.append(L)
        Ej = L * rng.uniform(1.5, 2.5, size=(1, len(devs)))
        Ej[:, 3] = np.nan  # the pixel has no energy
        en.append(Ej)
        grp += [task] * n_arch
        keys += [f"nb201-{task}:{i}" for i in idx]
        index.append(idx)
    return D.Table(
        "hwnasbench360",
        tuple(keys),
        np.concatenate(index),
        np.vstack(feats),
        devs,
        np.vstack(lat),
        energy_mj=np.vstack(en),
        group=np.array(grp),
    )


def test_hwnas_energy_sees_the_evaluation_task_only_through_its_shots():
    T = _hwnas_table()
    ref = E.hwnas_reference_matrix(T, "cifar100", kind="linear")
    rows, pred, _ = E.hwnas_energy_predict(T, "pi5-onnx", reference=ref)
    # blank every pi5 cifar100 value (latency and energy, all runtimes) except the shots' energy
    lat, en = T.latency_ms.copy(), T.energy_mj.copy()
    cifar = T.group == "cifar100"
    shots = cifar & np.isin(T.index, D.help_reference_indices("nb201")[:10])
    for j, d in enumerate(T.devices):
        if d.startswith("pi5"):
            lat[cifar, j] = np.nan
            en[cifar & ~shots, j] = np.nan
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, lat, energy_mj=en, group=T.group)
    ref_b = E.hwnas_reference_matrix(Tb, "cifar100", kind="linear")
    np.testing.assert_array_equal(ref[0], ref_b[0])
    np.testing.assert_array_equal(ref[1], ref_b[1])
    rows_b, pred_b, _ = E.hwnas_energy_predict(Tb, "pi5-onnx", reference=ref_b)
    np.testing.assert_array_equal(rows, rows_b)
    np.testing.assert_allclose(pred, pred_b)
    assert len(rows) == cifar.sum() - 10


def test_hwnas_energy_eval_scores_log_calibration():
    T = _hwnas_table(seed=2)
    ref = E.hwnas_reference_matrix(T, "cifar100", kind="linear")
    m = E.hwnas_energy_eval(T, "pi5-litert", reference=ref)
    assert set(E.METRIC_KEYS) <= set(m) and m["n"] == 150 - 10
    with pytest.raises(EdgeatlasError):
        E.hwnas_energy_eval(T, "pixel-litert", reference=ref)  # no energy on the pixel


def test_hwnas_latency_of_the_pixel_never_reads_its_own_task_values():
    """--target latency on HW-NAS-Bench-360: the pixel (a development device) is predicted from the
    other devices and its own *other* tasks; its values on the target task are read only at the
    shots. Energy on the pixel (none measured) is an error that names --target latency."""
    T = _hwnas_table(seed=4)
    rows, pred, _ = E.hwnas_energy_predict(T, "pixel-litert", target="latency")
    _, _, names = E.hwnas_reference_matrix(T, "cifar100", target_device="pixel-litert")
    assert names and not any(n.endswith(":pixel-litert:cifar100") for n in names)
    assert any(n.endswith(":pixel-litert:darcy") for n in names)
    lat = T.latency_ms.copy()
    j = T.devices.index("pixel-litert")
    cifar = T.group == "cifar100"
    shots = cifar & np.isin(T.index, D.help_reference_indices("nb201")[:10])
    lat[cifar & ~shots, j] = 1e6  # garbage where only the query is
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, lat, energy_mj=T.energy_mj, group=T.group)
    rows_b, pred_b, _ = E.hwnas_energy_predict(Tb, "pixel-litert", target="latency")
    np.testing.assert_array_equal(rows, rows_b)
    np.testing.assert_allclose(pred, pred_b)
    m = E.hwnas_energy_eval(T, "pixel-litert", target="latency")
    assert m["n"] == 150 - 10 and m["acc10"] > 0.5
    with pytest.raises(EdgeatlasError, match="no energy measurements.*--target latency"):
        E.hwnas_energy_eval(T, "pixel-litert")


def test_eval_target_option_labels_energy_in_mj(tmp_path):
    """`predictors eval --dataset hwnasbench360`: energy by default on the pi5 (rmse_mj, target
    energy), latency with --target latency (the documented keys), and --target energy refused on a
    latency-only dataset."""
    import json
    import os

    from click.testing import CliRunner

    from registry.cli import main

    if not (D.DEFAULT_ROOT / "hwnasbench360").exists():
        pytest.skip("needs ../shared/datasets")
    env = {**os.environ, "EDGEATLAS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    run = lambda *a: CliRunner().invoke(main, ["predictors", "eval", *a], env=env)  # noqa: E731
    r = run("--dataset", "hwnasbench360", "--device", "pi5-litert", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert list(out) == [*E.ENERGY_METRIC_KEYS, "target"] and out["target"] == "energy"
    assert out["acc10"] >= 0.9 and out["n"] > 10000
    r = run("--dataset", "hwnasbench360", "--device", "pi5-litert", "--target", "latency", "--json")
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)) == list(E.METRIC_KEYS)
    # several devices get one target: latency unless every one measured energy (the pixel did not)
    r = run("--dataset", "hwnasbench360", "--device", "pi5-litert,pixel-litert", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["target"] for x in rows] == ["latency", "latency"] and all("rmse_ms" in x for x in rows)
    r = run("--dataset", "help-fbnet", "--device", "raspi4", "--target", "energy")
    assert r.exit_code == 1 and "has no energy" in r.output and "drop --target energy" in r.output


def test_kshot_eval_never_reads_other_evaluation_devices():
    rng = np.random.default_rng(3)
    n = 1200
    F = np.zeros((n, len(FEATURE_NAMES)))
    F[:, :5] = rng.uniform(1, 10, size=(n, 5))
    devs = ("dev_a", "dev_b", "dev_c", "pixel2", "raspi4")
    lat = np.column_stack([F[:, :5] @ rng.uniform(0.2, 2, 5) + 1 for _ in devs])
    T = D.Table("help-nb201", tuple(f"nb201:{i}" for i in range(n)), np.arange(n), F, devs, lat)
    proto = E.Protocol(pool=np.arange(900), query=np.arange(900, n), shots=np.arange(900, 910), trim=False)
    m, pred, _ = E.kshot_eval(T, "pixel2", proto)
    lat_b = lat.copy()
    lat_b[:, devs.index("raspi4")] = np.nan  # another evaluation device: never a reference
    lat_b[~np.isin(np.arange(n), proto.shots), devs.index("pixel2")] = np.nan  # the target: shots only
    Tb = D.Table(T.name, T.keys, T.index, F, devs, lat_b)
    proto_b = E.Protocol(pool=proto.pool, query=proto.shots, shots=proto.shots, trim=False)
    _, pred_b, _ = E.kshot_eval(Tb, "pixel2", proto_b)
    # the shots as query: the same calibrated model must give the same values there
    _, pred_s, _ = E.kshot_eval(T, "pixel2", proto_b)
    np.testing.assert_allclose(pred_b, pred_s)
    for space in ("raw", "log"):
        _, p1, _ = E.kshot_eval(T, "pixel2", proto_b, space=space)
        _, p2, _ = E.kshot_eval(Tb, "pixel2", proto_b, space=space)
        np.testing.assert_allclose(p1, p2)
    assert m["n"] == n - 900 and np.all(np.isfinite(pred))


def test_kshot_eval_corrects_nb201_tables_with_their_op_counts_and_reads_only_the_shots():
    from predictors import nb201

    rng = np.random.default_rng(4)
    archs = [nb201.arch_str(a) for a in nb201.all_archs()]
    archs = [archs[i] for i in rng.choice(len(archs), 1100, replace=False)]
    Z = nb201.op_counts(archs, live=False)
    n = len(archs)
    F = np.zeros((n, len(FEATURE_NAMES)))
    F[:, :4] = Z
    F[:, 4] = 1.0
    devs = ("dev_a", "dev_b", "dev_c", "eyeriss")
    lat = np.column_stack([Z[:, 1:] @ rng.uniform(0.5, 2, 3) + 2 for _ in devs[:3]] + [np.zeros(n)])
    lat[:, 3] = (lat[:, :3] @ np.array([0.4, 0.4, 0.2]) + 1) * np.exp(0.3 * Z[:, 0])
    meta = {"arch_str": archs, "graph": "eager"}
    T = D.Table("help-nb201", tuple(f"nb201:{i}" for i in range(n)), np.arange(n), F, devs, lat, meta=meta)
    proto = E.Protocol(pool=np.arange(900), query=np.arange(900, n), shots=np.arange(900, 910), trim=False)
    m_cor, pred, _ = E.kshot_eval(T, "eyeriss", proto, additive=False)  # help-nb201 is in KSHOT_CORRECTED
    m_plain, _, _ = E.kshot_eval(T, "eyeriss", proto, corrected=False)
    assert m_cor["spearman"] > m_plain["spearman"] + 0.05
    assert (m_cor["calibration"], m_plain["calibration"]) == ("mix x op-count correction", "mix")
    # by default the op-count sum may win too: here (a sum of per-op costs times a skip factor) it does
    m_any, _, _ = E.kshot_eval(T, "eyeriss", proto)
    assert m_any["calibration"] == "op-count sum" and m_any["spearman"] > m_plain["spearman"] + 0.05
    lat_b = lat.copy()
    lat_b[~np.isin(np.arange(n), proto.shots), 3] = np.nan  # the target: shots only
    Tb = D.Table(T.name, T.keys, T.index, F, devs, lat_b, meta=meta)
    proto_b = E.Protocol(pool=proto.pool, query=proto.shots, shots=proto.shots, trim=False)
    np.testing.assert_allclose(E.kshot_eval(Tb, "eyeriss", proto_b)[1], E.kshot_eval(T, "eyeriss", proto_b)[1])


def test_hwnas_reference_columns_are_the_arch_measured_elsewhere_with_regressor_fill():
    T = _hwnas_table(seed=4)
    rows, R, names = E.hwnas_reference_matrix(T, "cifar100", kind="linear", measured=True)
    assert all(":cifar100" not in n or n.startswith("latency:pixel") for n in names)
    j = names.index("energy:pi5-onnx:darcy")
    darcy = {int(T.index[i]): i for i in np.flatnonzero(T.group == "darcy")}
    k = T.devices.index("pi5-onnx")
    want = np.array([T.energy_mj[darcy[int(T.index[r])], k] for r in rows])
    np.testing.assert_array_equal(R[:, j], want)
    # an arch not measured on pi5-onnx darcy: its column value comes from the regressor instead
    en = T.energy_mj.copy()
    gone = darcy[int(T.index[rows[20]])]
    en[gone, k] = np.nan
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, T.latency_ms, energy_mj=en, group=T.group)
    rows_b, R_b, _ = E.hwnas_reference_matrix(Tb, "cifar100", kind="linear")
    np.testing.assert_array_equal(rows_b, rows)
    assert np.isfinite(R_b[20, j]) and R_b[20, j] > 0 and R_b[20, j] != want[20]
    np.testing.assert_array_equal(np.delete(R_b[:, j], 20), np.delete(want, 20))
    # predicted-only columns differ from the measured ones
    _, R_p, _ = E.hwnas_reference_matrix(T, "cifar100", kind="linear", measured=False)
    assert not np.array_equal(R_p[:, j], R[:, j])
