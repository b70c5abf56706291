"""Training, versioning, skops persistence, retrain promotion, CLI, on a real SQLite store with
real HELP measurements (a small slice) and NB201 graph features."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_predictors import add_featureless_variant

from predictors.features import FEATURE_NAMES
from predictors.training import TRUSTED_TYPES, load_champion, load_file, predict_matrix, train
from registry.commands.predictors import group
from registry.errors import EdgeatlasError


@pytest.fixture()
def store(pred_store):
    """A real SQLite store with a slice of HELP NB201 measurements (tests/fixtures_predictors.py)."""
    return pred_store


def test_train_list_predict_retrain(store, tmp_path):
    rep = train(store, kind="linear")
    assert rep["status"] == "promoted" and rep["challenger"]["n"] > 20
    assert (tmp_path / "reports" / "default-v1.json").exists() and (tmp_path / "reports" / "default-v1.png").exists()
    rec, pset = load_champion(store)
    assert rec.libs["scikit-learn"] and rec.data_hash == rep["data_hash"]
    F = np.array([v.features[n] for v in store.list_variants()[:5] for n in FEATURE_NAMES]).reshape(5, -1)
    p = predict_matrix(pset, F, device_class="pixel3")
    assert p.latency_ms.shape == (5,) and np.all(p.latency_lo <= p.latency_hi)
    # retrain without new data: nothing changes
    again = train(store, kind="linear", promote="if_better")
    assert again["status"] == "no new data"
    assert len(store.list_predictors()) == 1

    runner = CliRunner()
    env = {"EDGEATLAS_DB": store.url}
    out = runner.invoke(group, ["list", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["status"] == "champion"
    vid = store.list_variants()[0].id
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "pixel3", "--json"], env=env)
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["latency_lo"] <= d["latency_ms"] <= d["latency_hi"] and d["method"] == "class:pixel3"
    probes = {
        pid: 2.0 * float(pset.predict(pset.probe_features[i], device_class="pixel3").latency_ms[0])
        for i, pid in enumerate(pset.probe_ids)
    }
    pf = tmp_path / "probes.json"
    pf.write_text(json.dumps(probes))
    out = runner.invoke(group, ["predict", "--variant", vid, "--probe-latencies", str(pf), "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["method"].startswith("kshot")
    # an id outside the probe set is named and not used; a value that is not a number names file and id
    pf.write_text(json.dumps({**probes, "nb201:not-a-probe": 3.0}))
    out = runner.invoke(group, ["predict", "--variant", vid, "--probe-latencies", str(pf), "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["ignored_probes"] == ["nb201:not-a-probe"] and "not used" in out.stderr
    for bad in ("fast", float("nan"), -1.0, True):
        pf.write_text(json.dumps({**probes, pset.probe_ids[0]: bad}))
        out = runner.invoke(group, ["predict", "--variant", vid, "--probe-latencies", str(pf)], env=env)
        msg = str(out.exception)
        assert out.exit_code == 1 and str(pf) in msg and pset.probe_ids[0] in msg and "fix:" in msg, msg
    ff = tmp_path / "facts.json"
    ff.write_text(json.dumps({"cores": 4, "freq_mhz": 2100, "memory_mb": 4096}))
    out = runner.invoke(group, ["predict", "--variant", vid, "--device-facts", str(ff), "--json"], env=env)
    assert out.exit_code == 0, out.output
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "nope", "--json"], env=env)
    assert (
        out.exit_code != 0
        and isinstance(out.exception, EdgeatlasError)
        and "unknown device class" in str(out.exception)
    )


def test_tampered_and_foreign_version_files_are_refused(store, tmp_path):
    train(store, kind="gbm")
    rec, _ = load_champion(store)
    import skops.io as sio

    assert set(sio.get_untrusted_types(file=rec.path)) <= set(TRUSTED_TYPES)
    path = tmp_path / "copy.skops"
    data = bytearray(open(rec.path, "rb").read())
    path.write_bytes(bytes(data))
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.skops"
    bad.write_bytes(bytes(data))
    with pytest.raises(EdgeatlasError, match="tampered"):
        load_file(bad, rec.file_sha256)
    # a file written by another scikit-learn version
    pset = load_file(path, rec.file_sha256)
    pset.meta = {**pset.meta, "libs": {**pset.meta["libs"], "scikit-learn": "0.24.2"}}
    other = tmp_path / "old.skops"
    sio.dump(pset, other)
    with pytest.raises(EdgeatlasError, match="scikit-learn 0.24.2"):
        load_file(other)


def test_retrain_promotes_only_when_better(store):
    first = train(store, kind="linear")
    # new data arrives: another device class
    more = [
        {
            "key": hashlib.sha256(f"{v.id}x".encode()).hexdigest(),
            "board": "b2",
            "variant_id": v.id,
            "runtime": "r",
            "config": {},
            "status": "ok",
            "latency_ms": 1.0 + v.macs / 1e7,
            "device_class": "extra",
            "source": "probe",
        }
        for v in store.list_variants()
    ]
    store.add_measurements_bulk(more)
    rep = train(store, kind="linear", promote="if_better")
    assert rep["data_hash"] != first["data_hash"] and rep["champion"] is not None
    assert rep["status"] in ("promoted", "kept champion")
    statuses = [p.status for p in store.list_predictors()]
    assert statuses.count("champion") == 1


def test_graph_levels_train_apart(store, tmp_path):
    """Measurements at another onnxruntime graph level (`bench run --graph-opt`) are another runtime
    config: the default predictor never sees them, and one trained on them predicts them."""
    first = train(store, kind="linear")
    assert first["graph_opt"] == "all"
    pixel3 = store.measurement_columns(("variant_id", "latency_ms"), device_class="pixel3")
    store.add_measurements_bulk(
        [
            {
                "key": hashlib.sha256(f"{v}-extended".encode()).hexdigest(),
                "board": "pixel3-b",
                "variant_id": v,
                "runtime": "onnxruntime",
                "config": {"kind": "model", "graph_opt": "extended"},
                "status": "ok",
                "latency_ms": 3.0 * lat,
                "device_class": "pixel3",
                "source": "probe",
            }
            for v, lat in zip(pixel3["variant_id"], pixel3["latency_ms"], strict=True)
        ]
    )
    # the default level's data did not change, so a retrain finds nothing new
    assert train(store, kind="linear", promote="if_better")["status"] == "no new data"
    ext = train(store, name="ext", kind="linear", graph_opt="extended")
    assert ext["graph_opt"] == "extended" and ext["rows"] == len(pixel3["variant_id"])
    assert ext["classes"] == ["pixel3"] and store.champion("ext").metrics["graph_opt"] == "extended"
    F = np.array([v.features[n] for v in store.list_variants()[:20] for n in FEATURE_NAMES]).reshape(20, -1)
    ratio = (
        predict_matrix(load_champion(store, "ext")[1], F, device_class="pixel3").latency_ms
        / predict_matrix(load_champion(store)[1], F, device_class="pixel3").latency_ms
    )
    assert np.median(ratio) == pytest.approx(3.0, rel=0.1)
    # one predictor is one level: without --graph-opt a retrain keeps the champion's level, and
    # another level under the same name is refused (train and retrain) before any rows are read
    assert train(store, name="ext", kind="linear", promote="if_better")["status"] == "no new data"
    for promote in ("if_better", "always"):
        with pytest.raises(EdgeatlasError, match="graph level 'all', not 'extended'") as e:
            train(store, kind="linear", promote=promote, graph_opt="extended")
        assert "--name NAME" in e.value.hint
    with pytest.raises(EdgeatlasError, match="unknown graph level 'ext'"):
        train(store, name="new", graph_opt="ext")
    runner = CliRunner()
    env = {"EDGEATLAS_DB": store.url}
    out = runner.invoke(
        group, ["train", "--graph-opt", "extended", "--name", "ext2", "--kind", "linear", "--json"], env=env
    )
    assert out.exit_code == 0 and json.loads(out.output)["graph_opt"] == "extended", out.output
    out = runner.invoke(group, ["retrain", "--name", "ext2", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["graph_opt"] == "extended", out.output
    out = runner.invoke(group, ["train", "--graph-opt", "basic", "--name", "b", "--json"], env=env)
    assert (
        out.exit_code == 1 and "empty training set" in str(out.exception) and "--graph-opt basic" in str(out.exception)
    )
    assert "bench run --graph-opt basic" in out.exception.hint
    # the schedule carries the champion's level, and refuses another one up front
    out = runner.invoke(group, ["retrain", "--name", "ext2", "--schedule"], env=env)
    assert out.exit_code == 0 and "--graph-opt extended" in out.output
    out = runner.invoke(group, ["retrain", "--name", "ext2", "--graph-opt", "all", "--schedule"], env=env)
    assert out.exit_code == 1 and "graph level 'extended', not 'all'" in str(out.exception)
    rows = json.loads(runner.invoke(group, ["list", "--json"], env=env).output)
    assert {r["name"]: r["graph_opt"] for r in rows} == {"default": "all", "ext": "extended", "ext2": "extended"}


def test_bad_training_input(store, tmp_path, monkeypatch):
    from registry.store import Store

    empty = Store.open(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(EdgeatlasError, match="empty training set"):
        train(empty)
    store.add_measurements_bulk(
        [
            {
                "key": "k1",
                "board": "tiny",
                "variant_id": store.list_variants()[0].id,
                "runtime": "r",
                "config": {},
                "status": "ok",
                "latency_ms": 3.0,
                "device_class": "tiny",
                "source": "probe",
            }
        ]
    )
    with pytest.raises(EdgeatlasError, match="'tiny' has 1 measurements; at least 20"):
        train(store, device_class="tiny")
    add_featureless_variant(store, "nofeat")
    store.add_measurements_bulk(
        [
            {
                "key": "k2",
                "board": "tiny",
                "variant_id": "nofeat",
                "runtime": "r",
                "config": {},
                "status": "ok",
                "latency_ms": 3.0,
                "device_class": "tiny",
                "source": "probe",
            }
        ]
    )
    with pytest.raises(EdgeatlasError, match="no ONNX features"):
        train(store)
    with pytest.raises(EdgeatlasError, match="no trained predictor"):
        load_champion(store, "missing")


def test_predict_on_a_tflite_without_features_names_the_cli_fix(store):
    """A .tflite added with `zoo add` has no graph features: the fix is a command, not a Python call."""
    from registry.cli import main

    store.add_variant(
        id="t" * 64,
        family="user",
        format="tflite",
        path="",
        params=1,
        macs=1,
        size_bytes=1,
        input_shape=(1, 32, 32, 3),
        precision="fp32",
    )
    out = CliRunner().invoke(
        main, ["predictors", "predict", "--variant", "t" * 12, "--device", "pixel3"], env={"EDGEATLAS_DB": store.url}
    )
    assert out.exit_code == 1 and "has no ONNX graph features" in out.stderr, out.output
    assert "`edgeatlas zoo add MODEL.onnx`" in out.stderr and "onnx_features(" not in out.stderr


def test_eval_cli_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = CliRunner().invoke(group, ["eval", "--dataset", "help-fbnet", "--device", "fpga", "--shots", "10", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert list(d) == ["spearman", "kendall", "acc10", "acc5", "rmse_ms", "mape", "n"]
    assert d["spearman"] > 0.8 and d["n"] > 700
    out = CliRunner().invoke(group, ["eval", "--dataset", "help-fbnet", "--device", "fpga,raspi4", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["device"] for r in rows] == ["fpga", "raspi4"]
    assert rows[0]["spearman"] == d["spearman"] and rows[0]["help_spearman"] == 0.892  # HELP's published figure
    assert [r["calibration"] for r in rows] == ["mix", "mix"]  # FBNet: no op-count correction
    out = CliRunner().invoke(group, ["eval", "--dataset", "help-fbnet", "--device", "nope", "--json"])
    assert isinstance(out.exception, EdgeatlasError) and "unknown device" in str(out.exception)


def test_additive_kind_trains_saves_and_predicts_through_the_cli(store, tmp_path):
    """`predictors train --kind additive`: the version file (skops, trusted types only) loads back
    and predicts what the in-memory set predicts."""
    runner = CliRunner()
    env = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(tmp_path)}
    out = runner.invoke(group, ["train", "--kind", "additive", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["status"] == "promoted" and 0 < rep["challenger"]["mape"] < 100
    rec, pset = load_champion(store)
    assert pset.classes["pixel3"]["latency"].kind == "additive"
    vid = store.list_variants()[0].id
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "pixel3", "--json"], env=env)
    assert out.exit_code == 0, out.output
    F = np.array([[store.get_variant(vid).features[n] for n in FEATURE_NAMES]])
    assert json.loads(out.output)["latency_ms"] == pytest.approx(
        float(predict_matrix(pset, F, device_class="pixel3").latency_ms[0])
    )


def test_drift_correct_takes_the_host_drift_out(store, tmp_path):
    """A class measured with the drift reference on a host whose speed drifts (each row up to 1.6x
    slower or faster, the reference with it): --drift-correct fits each row's p50 in reference
    units times the class's median reference p50, and predicts its held-out variants better than
    the raw p50s do. Rows without the reference keep their p50. The setting is kept on retrain."""
    from predictors.training import collect

    pixel3 = store.measurement_columns(("variant_id", "latency_ms"), device_class="pixel3")
    rng = np.random.default_rng(0)
    speed = np.exp(rng.uniform(np.log(1 / 1.6), np.log(1.6), len(pixel3["variant_id"])))
    ref_ms = 0.9 * speed  # the reference slows with the host
    store.add_measurements_bulk(
        [
            {
                "key": hashlib.sha256(f"{v}-drifty".encode()).hexdigest(),
                "board": "drifty-1",
                "variant_id": v,
                "runtime": "onnxruntime",
                "config": {"kind": "model"},
                "status": "ok",
                "latency_ms": lat * s,
                "stats": {"p50_ms": lat * s, "ref_p50_ms": r, "p50_per_ref": lat * s / r, "ref_n": 40},
                "device_class": "drifty",
                "source": "probe",
            }
            for v, lat, s, r in zip(pixel3["variant_id"], pixel3["latency_ms"], speed, ref_ms, strict=True)
        ]
    )
    raw, fixed = collect(store), collect(store, drift_correct=True)
    assert raw.data_hash != fixed.data_hash
    true = dict(zip(pixel3["variant_id"], pixel3["latency_ms"], strict=True))
    want = np.array([true[v] for v in fixed.variant_ids["drifty"]]) * np.median(ref_ms) / 0.9
    np.testing.assert_allclose(fixed.per_class["drifty"][1], want, rtol=1e-9)
    np.testing.assert_array_equal(fixed.per_class["pixel3"][1], raw.per_class["pixel3"][1])  # no reference: raw

    plain = train(store, name="plain", kind="linear")
    rep = train(store, name="drift", kind="linear", drift_correct=True)
    n = len(pixel3["variant_id"])
    assert plain["drift_correct"] is None
    assert rep["drift_correct"]["rows_corrected"] == n and rep["drift_correct"]["rows"] == 4 * n
    assert rep["drift_correct"]["classes"]["drifty"]["ref_p50_ms"] == pytest.approx(float(np.median(ref_ms)))
    assert rep["drift_correct"]["classes"]["pixel3"] == {"rows_corrected": 0, "rows": n}
    assert store.champion("drift").metrics["drift_correct"] is True

    def drifty_mape(name: str) -> float:
        _, pset = load_champion(store, name)
        X = fixed.per_class["drifty"][0]
        pred = predict_matrix(pset, X, device_class="drifty").latency_ms
        return float(np.mean(np.abs(pred / want - 1)))

    assert drifty_mape("drift") < 0.85 * drifty_mape("plain")  # 0.113 against 0.149 (the linear fit's floor)
    # a retrain keeps the champion's setting: same data, nothing new; off is other data, and trains
    assert train(store, name="drift", kind="linear", promote="if_better")["status"] == "no new data"
    off = train(store, name="drift", kind="linear", promote="if_better", drift_correct=False)
    assert off["drift_correct"] is None and off["status"] in ("promoted", "kept champion")
    runner = CliRunner()
    env = {"EDGEATLAS_DB": store.url}
    out = runner.invoke(group, ["train", "--name", "d2", "--kind", "linear", "--drift-correct", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["drift_correct"]["rows_corrected"] == n, out.output
    out = runner.invoke(group, ["retrain", "--name", "d2", "--schedule"], env=env)
    assert out.exit_code == 0 and "--drift-correct" in out.output
    rows = json.loads(runner.invoke(group, ["list", "--json"], env=env).output)
    assert {r["name"]: r["drift_correct"] for r in rows if r["status"] == "champion"} == {
        "plain": False,
        "drift": not off["promoted"],  # the raw fit's challenger is scored on the raw p50s
        "d2": True,
    }
    # asked for with no reference measured in the slice: a clear error, nothing trained
    out = runner.invoke(group, ["train", "--name", "d3", "--class", "pixel3", "--drift-correct", "--json"], env=env)
    assert out.exit_code == 1 and "none of the" in str(out.exception) and "--drift-ref" in out.exception.hint
    assert store.champion("d3") is None
