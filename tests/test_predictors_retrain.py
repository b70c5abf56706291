"""Scheduled retraining (issue 8 item 2) and bad input (issue 6), on a real SQLite store holding
real HELP NB201 measurements (tests/fixtures_predictors.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_predictors import add_featureless_variant, new_class_rows

from predictors.features import FEATURE_NAMES
from predictors.training import train
from registry.commands.predictors import group
from registry.errors import EdgeatlasError


def _snapshot(store, home: Path) -> tuple:
    return (
        [(p.id, p.version, p.status, p.data_hash) for p in store.list_predictors()],
        sorted(p.name for p in (home / "predictors").glob("*")),
        sorted(p.name for p in (home / "reports").glob("*")),
    )


def test_retrain_twice_without_new_data_changes_nothing(pred_store, tmp_path):
    store, home = pred_store, tmp_path
    env = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}
    runner = CliRunner()
    first = runner.invoke(group, ["retrain", "--kind", "linear", "--json"], env=env)
    assert first.exit_code == 0, first.output
    rep = json.loads(first.output)
    assert rep["status"] == "promoted" and rep["promoted"] is True and rep["champion"] is None
    before = _snapshot(store, home)
    out = runner.invoke(group, ["retrain", "--kind", "linear"], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("no new data")
    out = runner.invoke(group, ["retrain", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "no new data"
    assert _snapshot(store, home) == before  # no version row, no file, no report


def test_retrain_with_new_data_writes_a_valid_report(pred_store, tmp_path):
    store = pred_store
    train(store, kind="linear")
    store.add_measurements_bulk(new_class_rows(store, "emu-slow", 2.5))
    rep_dir = tmp_path / "rep"
    out = CliRunner().invoke(
        group, ["retrain", "--kind", "linear", "--report", str(rep_dir), "--json"], env={"EDGEATLAS_DB": store.url}
    )
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["champion_version_before"] == 1 and rep["version"] == 2
    on_disk = json.loads((rep_dir / "default-v2.json").read_text())
    for side in ("champion", "challenger"):
        assert {"acc10", "mape", "spearman", "per_class"} <= set(on_disk[side]), side
    # the champion never saw emu-slow: it cannot score that class, the challenger can
    assert "emu-slow" in on_disk["challenger"]["per_class"] and "emu-slow" not in on_disk["champion"]["per_class"]
    assert isinstance(on_disk["promoted"], bool)
    assert on_disk["promoted"] == (on_disk["challenger"]["mape"] < on_disk["champion"]["mape"])
    img = mpimg.imread(rep_dir / "default-v2.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    statuses = [p.status for p in store.list_predictors("default")]
    assert statuses.count("champion") == 1 and len(statuses) == 2
    # the same data again (whether that challenger was promoted or rejected): no new data
    again = train(store, kind="linear", promote="if_better")
    assert again["status"] == "no new data" and len(store.list_predictors("default")) == 2


def test_schedule_prints_systemd_and_cron(pred_store, tmp_path):
    url = pred_store.url
    out = CliRunner().invoke(
        group, ["retrain", "--schedule", "--report", str(tmp_path / "r")], env={"EDGEATLAS_DB": url}
    )
    assert out.exit_code == 0, out.output
    text = out.output
    assert "[Service]" in text and "Type=oneshot" in text and "[Timer]" in text and "OnCalendar=" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_line[len("ExecStart=") :])
    assert Path(argv[0]).name in ("edgeatlas", "python", "python3") and Path(argv[0]).exists()
    assert argv[argv.index("--db") + 1] == url and "retrain" in argv and "--json" in argv
    cron = [line for line in text.splitlines() if line and line[0].isdigit()]
    assert len(cron) == 1 and len(cron[0].split()[:5]) == 5 and url in cron[0]
    assert pred_store.list_predictors() == []  # --schedule trains nothing
    # a name holding % or $: doubled in the unit (systemd's specifiers and variables), \% in cron
    out = CliRunner().invoke(group, ["retrain", "--schedule", "--name", "lab%h$HOME"], env={"EDGEATLAS_DB": url})
    assert out.exit_code == 0, out.output
    exec_line = next(line for line in out.output.splitlines() if line.startswith("ExecStart="))
    cron = next(line for line in out.output.splitlines() if line and line[0].isdigit())
    assert "lab%%h$$HOME" in exec_line and "lab\\%h$HOME" in cron


def test_jobs_reaches_the_fits_and_the_schedule(pred_store, tmp_path, monkeypatch):
    """--jobs N caps the worker processes of a large training (1: all in-process), a nightly unit
    keeps it, and 0 is refused by name."""
    import predictors.models as M

    seen: list[int | None] = []
    real = M._fit_all
    monkeypatch.setattr(M, "_fit_all", lambda tasks, n_jobs: seen.append(n_jobs) or real(tasks, n_jobs))
    env = {"EDGEATLAS_DB": pred_store.url, "EDGEATLAS_HOME": str(tmp_path)}
    out = CliRunner().invoke(group, ["train", "--kind", "linear", "--jobs", "1", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert seen == [1]
    out = CliRunner().invoke(group, ["retrain", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert seen[1:] in ([], [None])  # no new data: nothing fitted; else the default (every CPU)
    out = CliRunner().invoke(group, ["retrain", "--schedule", "--jobs", "2"], env=env)
    assert out.exit_code == 0, out.output
    exec_line = next(line for line in out.output.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_line[len("ExecStart=") :])
    assert argv[argv.index("--jobs") + 1] == "2"
    out = CliRunner().invoke(group, ["train", "--jobs", "0"], env=env)
    assert out.exit_code == 2 and "--jobs" in out.output and "0" in out.output


def test_bad_input_nan_and_missing_features(pred_store, tmp_path):
    store = pred_store
    vid = store.list_variants()[0].id
    store.add_measurements_bulk(
        [
            {
                "key": "nan-row",
                "board": "b",
                "variant_id": vid,
                "runtime": "r",
                "config": {},
                "status": "ok",
                "latency_ms": float("nan"),
                "device_class": "pixel3",
                "source": "probe",
            }
        ]
    )
    with pytest.raises(EdgeatlasError, match="NaN") as exc:
        train(store, kind="linear")
    assert "nan-row"[:7] in str(exc.value) and store.list_predictors() == []


def test_predict_refuses_variant_without_features_and_unknown_device(pred_store, tmp_path):
    store = pred_store
    train(store, kind="linear")
    add_featureless_variant(store, "nofeat-v")
    env = {"EDGEATLAS_DB": store.url}
    out = CliRunner().invoke(group, ["predict", "--variant", "nofeat-v", "--device", "pixel3", "--json"], env=env)
    assert isinstance(out.exception, EdgeatlasError) and "no ONNX graph features" in str(out.exception)
    vid = store.list_variants(family="nb201")[0].id
    out = CliRunner().invoke(group, ["predict", "--variant", vid, "--device", "jetson-x", "--json"], env=env)
    assert isinstance(out.exception, EdgeatlasError) and "unknown device class 'jetson-x'" in str(out.exception)
    assert "--probe-latencies" in (out.exception.hint or "")


def test_too_few_measurements_says_how_many(pred_store):
    store = pred_store
    vids = [v.id for v in store.list_variants(family="nb201")][:7]
    store.add_measurements_bulk(
        [
            {
                "key": f"few-{v}",
                "board": "new-1",
                "variant_id": v,
                "runtime": "r",
                "config": {},
                "status": "ok",
                "latency_ms": 5.0 + i,
                "device_class": "new",
                "source": "probe",
            }
            for i, v in enumerate(vids)
        ]
    )
    with pytest.raises(EdgeatlasError, match="'new' has 7 measurements; at least 20 are needed") as exc:
        train(store, kind="linear", device_class="new")
    assert "13 more" in (exc.value.hint or "") and "--class" not in (exc.value.hint or "")  # it was given
    with pytest.raises(EdgeatlasError, match="'new' has 7 measurements") as exc:
        train(store, kind="linear", source="probe")  # the thin class alone: training one class is a way out
    assert "13 more" in (exc.value.hint or "") and "train one class with --class" in (exc.value.hint or "")
    # a whole-fleet run leaves the thin class out (k-shot covers it), says so, and never fits on it
    rep = train(store, kind="linear")
    assert rep["skipped_classes"] == {"new": "7 measurements; at least 20 are needed"}
    assert "new" not in rep["classes"] and rep["classes"]
    rep = train(store, kind="linear", source="dataset:*")
    assert "new" not in rep["classes"]
    F = np.array([[v.features[n] for n in FEATURE_NAMES] for v in store.list_variants(family="nb201")[:3]])
    from predictors.training import load_champion

    _, pset = load_champion(store)
    with pytest.raises(EdgeatlasError, match="unknown device class 'new'"):
        pset.predict(F, device_class="new")


def test_retrain_with_another_kind_is_not_no_new_data(pred_store, tmp_path):
    """The no-op check is per kind: the same data under another --kind trains a challenger."""
    store = pred_store
    env = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(tmp_path)}
    runner = CliRunner()
    assert runner.invoke(group, ["retrain", "--kind", "linear", "--json"], env=env).exit_code == 0
    out = runner.invoke(group, ["retrain", "--kind", "additive", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["status"] in ("promoted", "kept champion")
    out = runner.invoke(group, ["retrain", "--kind", "additive", "--json"], env=env)
    assert json.loads(out.output)["status"] == "no new data"
    listed = json.loads(runner.invoke(group, ["list", "--json"], env=env).output)
    assert sorted(r["kind"] for r in listed) == ["additive", "linear"]


def test_evaluation_devices_are_never_trained_on(pred_store, tmp_path):
    """An imported evaluation device (facts evaluation=true, as `predictors import` marks them) is left
    out of training and named in the report; --class on it is refused; --include-evaluation keeps it."""
    store = pred_store
    store.upsert_device_class("pixel2", {"evaluation": True, "dataset": "help-nb201", "device": "pixel2"})
    store.add_measurements_bulk(new_class_rows(store, "pixel2", 1.3))
    env = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(tmp_path)}
    out = CliRunner().invoke(group, ["train", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["evaluation_left_out"] == ["pixel2"] and "pixel2" not in rep["classes"] and len(rep["classes"]) == 3
    out = CliRunner().invoke(group, ["train", "--class", "pixel2", "--kind", "linear"], env=env)
    msg = str(out.exception)  # the subgroup alone: the error is raised (the top-level group prints it)
    assert out.exit_code == 1 and "evaluation device" in msg and "--probe-latencies" in msg
    rep = train(store, kind="linear", include_evaluation=True)
    assert "pixel2" in rep["classes"] and rep["evaluation_left_out"] == []


@pytest.mark.parametrize(
    ("calendar", "cron"),
    [
        ("*-*-* 03:17:00", "17 3 * * *"),
        ("Mon *-*-* 04:00:00", "0 4 * * 1"),
        ("Mon..Fri *-*-* 22:30", "30 22 * * 1-5"),
        ("weekly", "0 0 * * 1"),
        ("hourly", "0 * * * *"),
        ("Sat..Sun *-*-* 01:00", "0 1 * * 6-7"),
        ("Mon,Wed,Fri *-*-* 01:00:00", "0 1 * * 1,3,5"),
    ],
)
def test_schedule_cron_follows_on_calendar(pred_store, calendar, cron):
    out = CliRunner().invoke(
        group, ["retrain", "--schedule", "--on-calendar", calendar, "--json"], env={"EDGEATLAS_DB": pred_store.url}
    )
    assert out.exit_code == 0, out.output
    units = json.loads(out.output)
    assert units["cron"].startswith(cron + " ") and f"OnCalendar={calendar}" in units["timer"]


@pytest.mark.parametrize(
    "calendar",
    ["garbage", "Fri..Mon *-*-* 01:00", "*-*-* 03:17:30", "*-*-* 03:17:*", "Monxyz *-*-* 01:00", "Mon\n*-*-* 03:00"],
)
def test_schedule_refuses_a_calendar_cron_cannot_follow(pred_store, calendar):
    """Wrapping day ranges (systemd refuses them), seconds other than 0, bad day names, newlines."""
    out = CliRunner().invoke(
        group, ["retrain", "--schedule", "--on-calendar", calendar], env={"EDGEATLAS_DB": pred_store.url}
    )
    msg = str(out.exception)
    assert out.exit_code == 1 and f"--on-calendar {calendar!r}" in msg and "systemd-analyze" in msg


def test_schedule_never_writes_a_store_password():
    from registry.commands.predictors import schedule_units

    units = schedule_units("postgresql+psycopg2://atlas:s3cret@db/atlas", ["predictors", "retrain"])
    assert "s3cret" not in units["text"] and "***" not in units["cron"] and ".pgpass" in units["text"]
    assert "postgresql+psycopg2://atlas@db/atlas" in units["cron"]


# ------------------------------------------------- a retrain is the champion's predictor, refitted


def _argv(output: str) -> list[str]:
    exec_line = next(line for line in output.splitlines() if line.startswith("ExecStart="))
    return shlex.split(exec_line[len("ExecStart=") :])


def _opt(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_retrain_keeps_the_champions_kind(pred_store, tmp_path):
    """`train --kind linear --name lin`, then at once `retrain --name lin`: no new data, nothing
    written (it trained an auto challenger and promoted it); with new data a linear challenger."""
    store, home = pred_store, tmp_path
    env, runner = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}, CliRunner()
    assert runner.invoke(group, ["train", "--kind", "linear", "--name", "lin", "--json"], env=env).exit_code == 0
    before = _snapshot(store, home)
    out = runner.invoke(group, ["retrain", "--name", "lin"], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("no new data") and _snapshot(store, home) == before
    argv = _argv(runner.invoke(group, ["retrain", "--name", "lin", "--schedule"], env=env).output)
    assert _opt(argv, "--kind") == "linear" and _opt(argv, "--name") == "lin"
    store.add_measurements_bulk(new_class_rows(store, "emu-slow", 2.5))
    out = runner.invoke(group, ["retrain", "--name", "lin", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["version"] == 2 and rep["kind"] == "linear" and "emu-slow" in rep["classes"]
    assert [p.metrics["kind"] for p in store.list_predictors("lin")] == ["linear", "linear"]
    listed = json.loads(runner.invoke(group, ["list", "--json"], env=env).output)
    assert [r["kind"] for r in listed] == ["linear", "linear"]
    # an explicit other kind is a challenger of the same predictor (test_retrain_with_another_kind_...)
    out = runner.invoke(group, ["retrain", "--name", "lin", "--kind", "gbm", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["kind"] == "gbm", out.output
    # `train` of an existing name keeps the champion's kind too (no --kind: not auto)
    champion_kind = store.champion("lin").metrics["kind"]
    out = runner.invoke(group, ["train", "--name", "lin", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["kind"] == champion_kind, out.output


def test_retrain_keeps_the_champions_class(pred_store, tmp_path):
    """`train --class pixel3 --name tpu`, then `retrain --name tpu`: no new data (it fitted every
    class and was rejected); new rows of pixel3 and of another class: fitted on pixel3's only."""
    store, home = pred_store, tmp_path
    env, runner = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}, CliRunner()
    out = runner.invoke(group, ["train", "--class", "pixel3", "--kind", "linear", "--name", "tpu", "--json"], env=env)
    assert out.exit_code == 0, out.output
    n = json.loads(out.output)["rows"]
    before = _snapshot(store, home)
    out = runner.invoke(group, ["retrain", "--name", "tpu", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "no new data", out.output
    assert json.loads(out.output)["class"] == "pixel3" and _snapshot(store, home) == before
    # another class under the same name is refused up front, naming the way out
    out = runner.invoke(group, ["retrain", "--name", "tpu", "--class", "samsung_a50"], env=env)
    assert out.exit_code == 1 and "device class 'pixel3' only, not on 'samsung_a50'" in str(out.exception)
    assert "--class samsung_a50 --name NAME" in out.exception.hint and _snapshot(store, home) == before
    argv = _argv(runner.invoke(group, ["retrain", "--name", "tpu", "--schedule"], env=env).output)
    assert _opt(argv, "--class") == "pixel3" and _opt(argv, "--kind") == "linear"
    rows = new_class_rows(store, "pixel3", 1.05, tag="|run2")
    store.add_measurements_bulk(rows + new_class_rows(store, "emu-slow", 2.5))
    out = runner.invoke(group, ["retrain", "--name", "tpu", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["classes"] == ["pixel3"] and rep["rows"] == n + len(rows) and rep["class"] == "pixel3"
    assert [p.device_class for p in store.list_predictors("tpu")] == ["pixel3", "pixel3"]
    # `retrain --class C` alone retrains the predictor `train --class C` made: class:C
    assert runner.invoke(group, ["train", "--class", "emu-slow", "--kind", "linear"], env=env).exit_code == 0
    out = runner.invoke(group, ["retrain", "--class", "emu-slow", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "no new data", out.output
    assert json.loads(out.output)["name"] == "class:emu-slow"


def test_retrain_keeps_the_champions_target(pred_store, tmp_path):
    """`train --target energy --name en`, then `retrain --name en`: no new data (it made a rejected
    latency version); new energy rows: an energy challenger; --target latency is refused."""
    store, home = pred_store, tmp_path
    env, runner = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}, CliRunner()
    store.add_measurements_bulk(new_class_rows(store, "emu-e", 1.5, watts=2.0))
    out = runner.invoke(group, ["train", "--target", "energy", "--kind", "linear", "--name", "en", "--json"], env=env)
    assert out.exit_code == 0, out.output
    before = _snapshot(store, home)
    out = runner.invoke(group, ["retrain", "--name", "en", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "no new data", out.output
    assert json.loads(out.output)["target"] == "energy" and _snapshot(store, home) == before
    out = runner.invoke(group, ["retrain", "--name", "en", "--target", "latency"], env=env)
    assert out.exit_code == 1 and "predicts energy, not latency" in str(out.exception)
    assert "--target latency --name NAME" in out.exception.hint and _snapshot(store, home) == before
    argv = _argv(runner.invoke(group, ["retrain", "--name", "en", "--schedule"], env=env).output)
    assert _opt(argv, "--target") == "energy"
    store.add_measurements_bulk(new_class_rows(store, "emu-e", 1.6, tag="|run2", watts=2.1))
    out = runner.invoke(group, ["retrain", "--name", "en", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["target"] == "energy" and rep["version"] == 2
    assert list(rep["challenger"]["per_class"]) == ["emu-e"]  # scored on energy: the one class with energy
    assert [p.target for p in store.list_predictors("en")] == ["energy", "energy"]


def test_retrain_keeps_the_champions_source(pred_store, tmp_path):
    """`train --source 'dataset:*' --name ds`: the fleet's own rows arriving later are not its new
    data; `--source '*'` asks for every source explicitly."""
    store, home = pred_store, tmp_path
    env, runner = {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}, CliRunner()
    out = runner.invoke(group, ["train", "--source", "dataset:*", "--kind", "linear", "--name", "ds"], env=env)
    assert out.exit_code == 0, out.output
    store.add_measurements_bulk(new_class_rows(store, "emu-slow", 2.5))  # source probe
    before = _snapshot(store, home)
    out = runner.invoke(group, ["retrain", "--name", "ds", "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "no new data", out.output
    assert json.loads(out.output)["source"] == "dataset:*" and _snapshot(store, home) == before
    argv = _argv(runner.invoke(group, ["retrain", "--name", "ds", "--schedule"], env=env).output)
    assert _opt(argv, "--source") == "dataset:*"
    out = runner.invoke(group, ["retrain", "--name", "ds", "--source", "*", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["source"] is None and "emu-slow" in rep["classes"]
    listed = json.loads(runner.invoke(group, ["list", "--json"], env=env).output)
    assert [(r["version"], r["source"]) for r in listed if r["name"] == "ds"] == [(1, "dataset:*"), (2, "*")]
