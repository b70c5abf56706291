"""Scheduled retraining (issue 8 item 2) and bad input (issue 6), on a real SQLite store holding
real HELP NB201 measurements (tests/fixtures_predictors.py)."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_predictors import add_featureless_variant

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


def _new_class_rows(store, cls: str, scale: float) -> list[dict]:
    """A new board class measured on every variant: latency from the pixel3 rows times ``scale``."""
    base = {m.variant_id: m.latency_ms for m in store.list_measurements(device_class="pixel3")}
    return [
        {
            "key": hashlib.sha256(f"{vid}|{cls}".encode()).hexdigest(),
            "board": f"{cls}-1",
            "variant_id": vid,
            "runtime": "onnxruntime",
            "config": {},
            "status": "ok",
            "latency_ms": scale * ms,
            "device_class": cls,
            "source": "probe",
        }
        for vid, ms in base.items()
    ]


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
    store.add_measurements_bulk(_new_class_rows(store, "emu-slow", 2.5))
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
    store.add_measurements_bulk(_new_class_rows(store, "pixel2", 1.3))
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
