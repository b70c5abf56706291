"""`edgeatlas bench run|results` and `fleet check` through click's CliRunner on real sshd boards."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from fixtures_probes import write_devices

from probes.fleet import sha256_file
from registry.cli import main
from registry.store import Store

pytest_plugins = ["fixtures_probes"]
pytestmark = pytest.mark.sshd


@pytest.fixture
def cli_env(tmp_path, monkeypatch, sshd_boards, client_key, tiny_models):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    boards = sshd_boards["boards"]
    spec = [
        {"name": boards["a"].name, "port": boards["a"].port},
        {"name": boards["b"].name, "port": boards["b"].port, "role": "edge"},
        {"name": boards["noruntime"].name, "port": boards["noruntime"].port},
    ]
    devices = write_devices(
        tmp_path / "devices.toml", spec, client_key, sshd_boards["known_hosts"], str(tmp_path / "r")
    )
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store.open(db)
    full, head, tail = tiny_models["full"], tiny_models["head"], tiny_models["tail"]
    vid = sha256_file(full)
    store.add_variant(vid, "tiny", "onnx", str(full), 1000, 100000, full.stat().st_size, (1, 3, 32, 32), "fp32")
    store.add_split(
        vid, "relu0", 2, str(head), sha256_file(head), str(tail), sha256_file(tail), (1, 8, 32, 32), "float32", 32768
    )
    store.dispose()
    return {"devices": str(devices), "db": db, "vid": vid, "boards": boards}


FAST = ["--repeat", "2", "--number", "3", "--min-repeat-ms", "5", "--warmup-s", "0"]


def test_bench_run_results_and_rerun(cli_env):
    r = CliRunner()
    base = ["--devices", cli_env["devices"], "--db", cli_env["db"]]
    a = cli_env["boards"]["a"].name
    out = r.invoke(main, ["bench", "run", *base, "--boards", a, "--variants", cli_env["vid"][:10], *FAST, "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["done"] == 1 and s["failed"] == 0 and s["uploaded_bytes"] > 0
    again = json.loads(r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--json"]).output)
    assert again["skipped"] == 1 and again["uploaded_bytes"] == 0
    sp = r.invoke(
        main, ["bench", "run", *base, "--boards", a, "--grid", "--splits", *FAST, "--codecs", "fp16,int8", "--json"]
    )
    assert sp.exit_code == 0 and json.loads(sp.output)["done"] == 2, sp.output
    rows = json.loads(r.invoke(main, ["bench", "results", "--db", cli_env["db"], "--board", a, "--json"]).output)
    kinds = sorted((x["kind"], x["codec"] or "") for x in rows)
    assert kinds == [("model", ""), ("split", "fp16"), ("split", "int8")]
    assert all(x["energy_source"].startswith("estimated:") for x in rows)
    text = r.invoke(main, ["bench", "results", "--db", cli_env["db"], "--csv"]).output
    assert len(list(csv.DictReader(io.StringIO(text)))) == 3
    table = r.invoke(main, ["bench", "results", "--db", cli_env["db"]])
    assert table.exit_code == 0 and "measurements" in table.output


def test_graph_opt_is_its_own_runtime_config(cli_env):
    """--graph-opt reaches the agent through the queue and keys its own measurements; the default
    level keeps the keys measurements had before the option existed."""
    from probes.fleet import SweepConfig
    from probes.protocol import MeasureProtocol

    r = CliRunner()
    base = ["--devices", cli_env["devices"], "--db", cli_env["db"]]
    a = cli_env["boards"]["a"].name
    first = json.loads(r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--json"]).output)
    assert first["done"] == 1
    ext = r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--graph-opt", "extended", "--json"])
    assert ext.exit_code == 0, ext.output
    ext = json.loads(ext.output)
    assert ext["done"] == 1 and ext["skipped"] == 0 and ext["uploaded_bytes"] == 0  # another config, same artifact
    again = r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--graph-opt", "extended", "--json"])
    assert json.loads(again.output)["skipped"] == 1
    rows = json.loads(r.invoke(main, ["bench", "results", "--db", cli_env["db"], "--board", a, "--json"]).output)
    assert sorted(x["graph_opt"] for x in rows) == ["all", "extended"] and all(x["status"] == "ok" for x in rows)
    store = Store.open(cli_env["db"])
    by_level = {(m.config or {}).get("graph_opt", "all"): m for m in store.list_measurements(board=a)}
    # the agent on the board ran at the level asked for, and said so
    assert {g: m.system["graph_opt"] for g, m in by_level.items()} == {"all": "all", "extended": "extended"}
    proto = MeasureProtocol(warmup_s=0.0, repeat=2, number=3, min_repeat_ms=5.0)
    for g, m in by_level.items():
        cfg = SweepConfig(graph_opt=g, protocol=proto)
        assert m.key == store.measurement_key(cli_env["vid"], a, {"kind": "model", **cfg.runtime_config()})
    store.dispose()
    assert "graph_opt" not in SweepConfig().runtime_config()
    out = r.invoke(main, ["bench", "run", *base, "--grid", "--runtime", "litert", "--graph-opt", "extended"])
    assert out.exit_code == 1 and "onnxruntime only" in out.output
    with pytest.raises(ValueError, match="use one of"):
        SweepConfig(graph_opt="max")
    with pytest.raises(ValueError, match="onnxruntime only"):
        SweepConfig(runtime="litert", graph_opt="extended")
    # a queued job carries the level to the worker; a payload queued before the option means 'all'
    from probes.queue import config_from_payload, config_payload

    payload = config_payload(SweepConfig(graph_opt="extended"))
    assert config_from_payload(payload, SweepConfig()).graph_opt == "extended"
    old = {k: v for k, v in payload.items() if k != "graph_opt"}
    assert config_from_payload(old, SweepConfig()).graph_opt == "all"


def test_drift_ref_end_to_end_on_a_board(cli_env):
    """bench run --drift-ref over real sshd: the reference is uploaded once like an artifact, the
    measurement gets its own key, and bench results shows the reference's columns."""
    r = CliRunner()
    base = ["--devices", cli_env["devices"], "--db", cli_env["db"]]
    a = cli_env["boards"]["a"].name
    plain = json.loads(r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--json"]).output)
    assert plain["done"] == 1
    out = r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--drift-ref", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    assert res["done"] == 1 and res["skipped"] == 0 and 0 < res["uploaded_bytes"] < 20000  # the reference only
    again = json.loads(
        r.invoke(main, ["bench", "run", *base, "--boards", a, "--grid", *FAST, "--drift-ref", "--json"]).output
    )
    assert again["skipped"] == 1 and again["uploaded_bytes"] == 0
    rows = json.loads(r.invoke(main, ["bench", "results", "--db", cli_env["db"], "--board", a, "--json"]).output)
    assert len(rows) == 2 and all(x["status"] == "ok" for x in rows)
    ref_rows = [x for x in rows if x["ref_p50_ms"] is not None]
    assert len(ref_rows) == 1 and ref_rows[0]["p50_per_ref"] == pytest.approx(
        ref_rows[0]["p50_ms"] / ref_rows[0]["ref_p50_ms"]
    )
    text = r.invoke(main, ["bench", "results", "--db", cli_env["db"], "--board", a, "--csv"]).output
    assert text.splitlines()[0].endswith("graph_opt,ref_p50_ms,p50_per_ref,edge,error_message,created_at,source")
    bad = r.invoke(main, ["bench", "run", *base, "--grid", "--runtime", "litert", "--drift-ref"])
    assert bad.exit_code == 1 and "--drift-ref" in bad.output and "Traceback" not in bad.output


def test_bench_run_bad_input_is_one_clear_line(cli_env):
    r = CliRunner()
    base = ["--devices", cli_env["devices"], "--db", cli_env["db"]]
    out = r.invoke(main, ["bench", "run", *base])
    assert out.exit_code == 1 and "--variants" in out.output and "Traceback" not in out.output
    out = r.invoke(main, ["bench", "run", *base, "--grid", "--boards", "nope"])
    assert out.exit_code == 1 and "no board named 'nope'" in out.output
    out = r.invoke(main, ["bench", "run", *base, "--grid", "--runtime", "litert"])
    assert out.exit_code == 1 and "tflite" in out.output


def test_fleet_check_reports_facts_and_names_the_broken_board(cli_env):
    r = CliRunner()
    out = r.invoke(main, ["fleet", "check", "--devices", cli_env["devices"], "--db", cli_env["db"], "--json"])
    assert out.exit_code == 1  # the 'noruntime' board is up but lacks the runtime its class declares
    rows = {x["name"]: x for x in json.loads(out.output[: out.output.rindex("]") + 1])}
    a = rows[cli_env["boards"]["a"].name]
    assert a["status"] == "ok" and a["facts"]["runtimes"]["onnxruntime"]
    nr = rows["noruntime"]
    assert nr["status"] == "error" and nr["error_code"] == "RUNTIME_MISSING" and "onnxruntime" in nr["error"]
    assert Store.open(cli_env["db"]).get_board("noruntime").facts["runtimes"]["onnxruntime"] is None
    table = CliRunner().invoke(main, ["fleet", "check", "--devices", cli_env["devices"], "--db", cli_env["db"]])
    assert table.exit_code == 1 and "RUNTIME_MISSING" in table.output
