"""Kernel-level features (nn-Meter-style kernel rows and their bucketed terms), the feature set
version (stale stored features are refused, refreshed by `zoo refresh-features` or a re-import),
and the additive kind's output calibration."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fixtures_predictors import add_featureless_variant
from onnx import TensorProto, helper, numpy_helper

from predictors.features import (
    FEATURE_NAMES,
    FEATURES_VERSION,
    KERNEL_NAMES,
    feature_dict,
    features_from_dict,
    kernel_bucket,
    onnx_features,
)
from predictors.models import LatencyRegressor, _fit_additive
from registry.errors import EdgeatlasError


def _version_1(d: dict) -> dict:
    """A feature dict as edgeatlas stored it before feature set version 2 (no kernel terms, no version)."""
    return {k: x for k, x in d.items() if k not in KERNEL_NAMES and k != "features_version"}


def _net(res: int = 32) -> onnx.ModelProto:
    """conv 3x3 s2 (3 -> 12) + BN + ReLU, depthwise 3x3 s1, pointwise 1x1 (12 -> 20), 5x5 s1 (20 -> 8)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        w("w0", 12, 3, 3, 3),
        w("s", 12),
        w("b", 12),
        w("m", 12),
        numpy_helper.from_array(np.ones(12, np.float32), "v"),
        w("wd", 12, 1, 3, 3),
        w("wp", 20, 12, 1, 1),
        w("w5", 8, 20, 5, 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c0", "s", "b", "m", "v"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wd"], ["d"], pads=[1] * 4, group=12),
        helper.make_node("Conv", ["d", "wp"], ["p"]),
        helper.make_node("Conv", ["p", "w5"], ["y"], pads=[2] * 4),
    ]
    g = helper.make_graph(
        nodes,
        "k",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, res, res])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, res // 2, res // 2])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_kernel_buckets():
    assert kernel_bucket(3, 2, False) == "conv_k3s2"
    assert kernel_bucket(1, 1, False) == "conv_k1s1"
    assert kernel_bucket(4, 3, False) == "conv_k5s2"  # k rounds up, stride >= 2 is 2
    assert kernel_bucket(11, 4, False) == "conv_k7s2"
    assert kernel_bucket(3, 1, True) == "dw_k3s1"
    assert kernel_bucket(1, 1, True) == "dw_k3s1"  # no 1x1 depthwise bucket
    assert len(KERNEL_NAMES) == len(set(KERNEL_NAMES)) and set(KERNEL_NAMES) <= set(FEATURE_NAMES)


def test_kernel_terms_of_a_known_graph():
    f = onnx_features(_net(32))
    v = f.values
    hw = 16 * 16  # every conv after the stem works on 16x16
    # the stem: 3x3 stride 2, 3 -> 12 channels; padded to the SIMD block of 8: 8 in, 16 out
    assert v["kernel_conv_k3s2_count"] == 1
    assert v["kernel_conv_k3s2_macs"] == hw * 12 * 3 * 9
    assert v["kernel_conv_k3s2_padded_macs"] == hw * 16 * 8 * 9
    assert v["kernel_conv_k3s2_in_elems"] == 3 * 32 * 32
    assert v["kernel_conv_k3s2_out_elems"] == 12 * hw
    assert v["kernel_dw_k3s1_macs"] == hw * 12 * 9 and v["kernel_dw_k3s1_padded_macs"] == hw * 16 * 9
    assert v["kernel_conv_k1s1_macs"] == hw * 20 * 12 and v["kernel_conv_k1s1_padded_macs"] == hw * 24 * 16
    assert v["kernel_conv_k5s1_macs"] == hw * 8 * 20 * 25
    # the kernel terms split the convolutions' MACs without losing or adding any
    kernel_macs = sum(v[n] for n in KERNEL_NAMES if n.endswith("_macs") and not n.endswith("padded_macs"))
    assert kernel_macs == v["conv_macs"] + v["depthwise_macs"] + v["pointwise_macs"]
    # nn-Meter-style rows, one per convolution kernel, in graph order
    assert [r["kernel"] for r in f.kernels] == ["conv_k3s2", "dw_k3s1", "conv_k1s1", "conv_k5s1"]
    assert f.kernels[2] | {} == {
        "kernel": "conv_k1s1",
        "k": 1,
        "kernel_volume": 1,
        "stride": 1,
        "groups": 1,
        "cin_per_group": 12,
        "cout": 20,
        "out_positions": hw,
        "in_elems": 12 * hw,
        "macs": float(hw * 20 * 12),
    }


def _one_conv(x_shape, w_shape, **attrs) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones(w_shape, np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs", "bucket", "padded"),
    [
        # 1x7: a volume of 7, bucketed by its longest side
        ((1, 16, 20, 20), (16, 16, 1, 7), {"pads": [0, 3, 0, 3]}, "conv_k7s1", 400 * 16 * 16 * 7),
        # 1-D, k=3
        ((2, 4, 50), (8, 4, 3), {"pads": [1, 1]}, "conv_k3s1", 2 * 50 * 8 * 8 * 3),
        # grouped (ResNeXt-like): 4 groups of 4 channels, each padded to 8 in and out
        ((1, 16, 10, 10), (16, 4, 3, 3), {"pads": [1] * 4, "group": 4}, "conv_k3s1", 100 * 4 * 8 * 8 * 9),
    ],
)
def test_kernel_terms_follow_the_kernel_volume_and_groups(x_shape, w_shape, attrs, bucket, padded):
    f = onnx_features(_one_conv(x_shape, w_shape, **attrs))
    v = f.values
    assert [r["kernel"] for r in f.kernels] == [bucket]
    assert v[f"kernel_{bucket}_macs"] == v["conv_macs"] + v["pointwise_macs"]  # the category's MACs exactly
    assert v[f"kernel_{bucket}_padded_macs"] == padded


def test_stored_features_carry_their_version_and_old_ones_are_refused():
    d = onnx_features(_net()).to_dict()
    assert d["features_version"] == FEATURES_VERSION
    assert feature_dict(features_from_dict(d).vector()) == d  # the stored dict round-trips
    old = _version_1(d)
    with pytest.raises(EdgeatlasError, match="feature set version 1") as e:
        features_from_dict(old, "variant abc")
    assert "zoo refresh-features" in (e.value.hint or "") and "predictors import" in (e.value.hint or "")
    with pytest.raises(EdgeatlasError, match="newer than") as e:
        features_from_dict({**d, "features_version": FEATURES_VERSION + 1.0})
    assert "upgrade edgeatlas" in (e.value.hint or "")


def test_add_variant_replaces_older_features_only(sqlite_url):
    from registry.store import Store

    store = Store.open(sqlite_url)
    new = onnx_features(_net()).to_dict()
    old = _version_1(new)
    add_featureless_variant(store, "a", old)
    assert "features_version" not in store.get_variant("a").features
    add_featureless_variant(store, "a", new)  # a dataset imported again after the upgrade
    assert store.get_variant("a").features == new
    add_featureless_variant(store, "a", old)  # never downgraded
    assert store.get_variant("a").features == new
    store.dispose()


def test_refresh_features_restores_what_build_stored(zoo_env, tmp_path):
    """A store written before the kernel terms (features without them, no version) is refused,
    and `zoo refresh-features` recomputes exactly what `zoo build` stores now: ONNX variants from
    their artifact, TFLite ones from the ONNX graph of the recipe's model."""
    from registry.commands.zoo import group
    from registry.store import Store
    from registry.zoo.build import stale_features

    src = zoo_env.url.removeprefix("sqlite:///")
    copy = tmp_path / "old.db"
    shutil.copyfile(src, copy)
    url = f"sqlite:///{copy}"
    store = Store.open(url)
    built = {v.id: v.features for v in store.list_variants(artifacts_only=True)}
    assert built and all(f["features_version"] == FEATURES_VERSION for f in built.values())
    for vid, f in built.items():
        store.set_variant_features(vid, _version_1(f))
    assert all(stale_features(v) for v in store.list_variants(artifacts_only=True))
    with pytest.raises(EdgeatlasError, match="feature set version 1"):
        features_from_dict(store.list_variants(artifacts_only=True)[0].features)
    out = CliRunner().invoke(group, ["refresh-features", "--db", url, "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["stale"] == len(built) and sorted(rep["refreshed"]) == sorted(built) and rep["failed"] == []
    formats = {v.format for v in store.list_variants(artifacts_only=True)}
    assert formats == {"onnx", "tflite"}
    for v in store.list_variants(artifacts_only=True):
        assert v.features == pytest.approx(built[v.id]), v.id
    # nothing left to do
    again = json.loads(CliRunner().invoke(group, ["refresh-features", "--db", url, "--json"]).output)
    assert again["stale"] == 0 and again["refreshed"] == []
    store.dispose()


def test_old_feature_set_predictor_is_refused():
    from predictors.training import _check_features_version, libs

    _check_features_version(libs(), "p")  # this version's own
    with pytest.raises(EdgeatlasError, match="feature set version 1") as e:
        _check_features_version({"scikit-learn": "x"}, "predictor latency v3")
    assert "retrain" in (e.value.hint or "")


def _throttled(work_ms: np.ndarray, quota: float = 10.0, period: float = 20.0) -> np.ndarray:
    """Wall time of a run of ``work_ms`` of CPU under a CFS-like quota: each full quota costs a
    whole period (a deterministic stand-in for an emulated board's throttle)."""
    return work_ms + np.floor(work_ms / quota) * (period - quota)


def test_additive_output_calibration_learns_a_monotone_wall_clock_map():
    rng = np.random.default_rng(0)
    n = 200
    X = rng.uniform(0, 1, (n, 3)) * np.array([8.0, 4.0, 2.0])  # work = sum of three op costs
    work = X.sum(axis=1) + 0.2
    y = _throttled(work * 3.0)
    tr, te = np.arange(150), np.arange(150, n)
    m = _fit_additive(X[tr], y[tr])
    assert m["calibration_x"] is not None and np.all(np.diff(m["calibration_y"]) >= 0)
    cal = LatencyRegressor(kind="additive").fit(X[tr], y[tr]).predict(X[te])
    plain = np.maximum(X[te] @ m["coef"] + m["overhead"], 1e-6)
    err_cal, err_plain = np.abs(np.log(cal / y[te])), np.abs(np.log(plain / y[te]))
    assert err_cal.mean() < 0.5 * err_plain.mean()
    # a staircase is no smooth function of the features: the Gaussian process stage fails its own
    # leave-one-out check and is left out
    assert "kriging" not in m
    # beyond the largest measured model, the ratio at the end carries over (no clipped constant)
    big = LatencyRegressor(kind="additive").fit(X[tr], y[tr]).predict(X[te][:1] * 10)
    assert big[0] > 5 * y[tr].max()


def test_additive_output_calibration_is_left_out_when_latency_is_linear():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (120, 3))
    y = (X @ np.array([2.0, 1.0, 0.5]) + 0.1) * rng.lognormal(0, 0.02, 120)
    m = _fit_additive(X, y)
    assert m["calibration_x"] is None  # the identity wins out of fold
    few = _fit_additive(X[:20], y[:20])  # too few variants to try
    assert few["calibration_x"] is None


def test_auto_kind_keeps_the_kind_with_the_lower_held_out_error():
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (300, 3)) * np.array([8.0, 4.0, 2.0])
    additive_law = _throttled((X.sum(axis=1) + 0.2) * 3.0)
    a = LatencyRegressor(kind="auto").fit(X, additive_law)
    assert a.chosen_kind_ == "additive"
    # an interaction no sum of non-negative costs can follow: trees win
    tree_law = np.where(X[:, 0] > 4.0, 20.0, 2.0) * np.where(X[:, 1] > 2.0, 0.2, 1.0) + 0.1
    t = LatencyRegressor(kind="auto").fit(X, tree_law)
    assert t.chosen_kind_ == "gbm"
    # each is the chosen kind's own fit: same predictions and interval
    for est, law, kind in ((a, additive_law, "additive"), (t, tree_law, "gbm")):
        ref = LatencyRegressor(kind=kind).fit(X, law)
        np.testing.assert_allclose(est.predict(X[:20]), ref.predict(X[:20]))
        assert est.log_halfwidth_ == ref.log_halfwidth_
        assert (
            est.heldout_log_error_
            <= LatencyRegressor(kind="gbm" if kind == "additive" else "additive").fit(X, law).heldout_log_error_
        )


def test_auto_kind_trains_saves_and_reports_its_choices(pred_store, tmp_path):
    from predictors.training import load_champion, train

    rep = train(pred_store, kind="auto")
    assert rep["status"] == "promoted"
    kinds = rep["chosen_kinds"]
    assert kinds and all(set(t.values()) <= {"gbm", "additive"} for t in kinds.values())
    rec, pset = load_champion(pred_store)  # the skops file round-trips the nested estimators
    assert pset.chosen_kinds() == kinds and rec.metrics["kind"] == "auto" and rec.metrics["chosen_kinds"] == kinds
    from registry.commands.predictors import group

    out = CliRunner().invoke(group, ["list", "--db", pred_store.url, "--json"])
    assert out.exit_code == 0, out.output
    (row,) = [r for r in json.loads(out.output) if r["version"] == rec.version]
    n = sum(len(t) for t in kinds.values())
    assert row["kind"].startswith("auto: ") and row["chosen_kinds"] == kinds
    assert sum(int(part.split()[-1]) for part in row["kind"].removeprefix("auto: ").split(", ")) == n
    F = np.array([features_from_dict(v.features).vector() for v in pred_store.list_variants()[:5]])
    c = next(iter(kinds))
    p = pset.predict(F, device_class=c)
    assert np.all(np.isfinite(p.latency_ms)) and np.all(p.latency_lo <= p.latency_ms)


def test_auto_kind_holds_out_whole_variants():
    """Variants measured 5 times each: with repeats on both sides of a fold, trees would recall
    them and look better held out than they are; folds of whole variants keep the comparison fair."""
    rng = np.random.default_rng(3)
    V = rng.uniform(0, 1, (150, 3)) * np.array([8.0, 4.0, 2.0])
    law = _throttled((V.sum(axis=1) + 0.2) * 3.0)
    idx = np.repeat(np.arange(150), 5)
    y = law[idx] * rng.lognormal(0, 0.05, len(idx))
    est = LatencyRegressor(kind="auto").fit(V[idx], y)
    assert est.chosen_kind_ == "additive"
    unseen = rng.uniform(0, 1, (60, 3)) * np.array([8.0, 4.0, 2.0])
    truth = _throttled((unseen.sum(axis=1) + 0.2) * 3.0)
    errs = {
        k: float(np.mean(np.abs(np.log(LatencyRegressor(kind=k).fit(V[idx], y).predict(unseen) / truth))))
        for k in ("gbm", "additive")
    }
    assert errs["additive"] < errs["gbm"]
    # nothing held out (cv=1): no comparison is possible, the first of AUTO_KINDS is kept
    assert LatencyRegressor(kind="auto", cv=1).fit(V[idx], y).chosen_kind_ == "gbm"
    # a refit of the same object with another kind forgets the earlier choice
    assert not hasattr(est.set_params(kind="gbm").fit(V[idx], y), "chosen_kind_")


def test_training_reads_only_the_measured_variants_features(pred_store):
    """An unmeasured variant whose features are of an older feature set does not block training."""
    from predictors.training import train

    add_featureless_variant(pred_store, "stale-unmeasured", _version_1(onnx_features(_net()).to_dict()))
    assert train(pred_store, kind="linear")["status"] == "promoted"


def test_cli_kind_choices_are_the_regressor_kinds(pred_store):
    """The CLI keeps its own list (importing predictors.models there would load scikit-learn on
    every command); it must name exactly the kinds the regressor takes, and without a champion the
    default is auto (with one, the champion's kind: test_predictors_retrain)."""
    from predictors.models import KINDS
    from predictors.training import predictor_settings
    from registry.commands.predictors import kind_option

    @kind_option
    def cmd(kind):  # a bare function carrying the option
        return kind

    (param,) = cmd.__click_params__
    assert set(param.type.choices) == set(KINDS) and param.default is None
    assert predictor_settings(pred_store, "never-trained").kind == "auto"
    with pytest.raises(ValueError, match="kind must be one of"):
        LatencyRegressor(kind="nope").fit(np.ones((10, 2)), np.ones(10))
