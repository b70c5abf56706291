"""--device-facts and --probe-latencies files from a new user: every bad file is one line naming the
file, the line, the field and the fix (the schema of a devices.toml class), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from predictors.features import FACT_NAMES, facts_vector
from registry.cli import main
from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.sources import read_device_facts, read_probe_latencies, resolve_device
from registry.store import Store

PHONE = {"name": "my-phone", "arch": "aarch64", "cores": 8, "freq_mhz": 2840, "memory_mb": 6144, "accelerator": "gpu"}
REPO = Path(__file__).resolve().parents[1]


def _predict(tmp_path: Path, *args: str) -> Result:
    db = f"sqlite:///{tmp_path / 'atlas.db'}"
    return CliRunner().invoke(main, ["predictors", "predict", "--variant", "nb201:0", *args, "--db", db])


def _facts_error(tmp_path: Path, facts: dict, name: str = "facts.json") -> str:
    """The one error line of `predictors predict --device-facts` on ``facts`` written as JSON, one key a line."""
    path = tmp_path / name
    path.write_text(json.dumps(facts, indent=2))
    res = _predict(tmp_path, "--device-facts", str(path))
    out = res.stderr.strip()
    assert res.exit_code == 1 and "Traceback" not in res.output and len(out.splitlines()) == 1, res.output
    assert str(path) in out and "fix:" in out, out
    return out


def test_the_example_phone_facts_are_valid() -> None:
    facts = read_device_facts(REPO / "examples" / "devices" / "phone.json")
    assert facts == PHONE
    assert facts_vector(facts)[FACT_NAMES.index("accel_gpu")] == 1.0


@pytest.mark.parametrize(
    ("edit", "line", "expect"),
    [
        ({"frequency_ghz": 2.8}, 8, ["'frequency_ghz'", "unknown field", "did you mean 'freq_mhz'?"]),
        ({"acclerator": "gpu"}, 8, ["'acclerator'", "unknown field", "did you mean 'accelerator'?"]),
        ({"accelerator": "quantum"}, 7, ["'accelerator'", "'quantum'", "none, cpu, gpu, npu, dsp"]),
        ({"cores": True}, 4, ["'cores'", "true is a boolean, not a number", "write cores as the number of CPU cores"]),
        ({"cores": "eight"}, 4, ["'cores'", "valid integer", "'eight'", "write cores as"]),
        ({"cpu_quota": -3}, 8, ["'cpu_quota'", "greater than 0", "-3", "CPU share in cores"]),
        ({"cpu_quota": "half"}, 8, ["'cpu_quota'", "valid number", "'half'", "CPU share in cores"]),
    ],
    ids=["unknown-field", "misspelt", "accelerator", "bool", "word", "negative", "half"],
)
def test_a_malformed_facts_file_names_file_line_field_and_fix(
    tmp_path: Path, edit: dict, line: int, expect: list[str]
) -> None:
    out = _facts_error(tmp_path, {**PHONE, **edit})
    assert f"facts.json:{line}: device facts: field" in out, out
    for text in expect:
        assert text in out, (text, out)


def test_a_missing_number_points_at_the_facts_file_not_devices_toml(tmp_path: Path) -> None:
    out = _facts_error(tmp_path, {k: v for k, v in PHONE.items() if k != "freq_mhz"})
    assert "'freq_mhz'" in out and "required field is missing" in out and "devices.toml class" in out
    assert "in devices.toml)" not in out  # the fix is in this file


def test_toml_facts_are_checked_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "facts.toml"
    path.write_text("cores = 4\nfreq_mhz = 1800\nmemory_mb = 2048\n\n[power]\nidle_w = 1.0\nactive_w = true\n")
    with pytest.raises(EdgeatlasError) as e:
        read_device_facts(path)
    assert e.value.code == ErrorCode.INVALID_CONFIG
    assert f"{path}:7: device facts: field 'power.active_w'" in str(e.value) and "not a number" in str(e.value)
    path.write_text("cores = 4\nfreq_mhz = 1800\nmemory_mb = 2048\naccelerator = 'hexagon-dsp'\n")
    assert facts_vector(read_device_facts(path))[FACT_NAMES.index("accel_npu_dsp")] == 1.0


def test_non_utf8_and_directory_facts_and_probe_files(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{\n  "name": "t\xe9l\xe9phone",\n  "cores": 4\n}\n'.encode("latin-1"))
    for flag in ("--device-facts", "--probe-latencies"):
        res = _predict(tmp_path, flag, str(bad))
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert f"{bad}:2:" in res.stderr and "not UTF-8" in res.stderr and "fix: save it as UTF-8" in res.stderr
    folder = tmp_path / "facts-dir"
    folder.mkdir()
    res = _predict(tmp_path, "--device-facts", str(folder))
    assert res.exit_code == 1 and "is a directory" in res.stderr and "does not exist" not in res.stderr
    with pytest.raises(EdgeatlasError, match="is a directory"):
        read_probe_latencies(folder)


def test_recommend_reads_facts_through_the_same_check(tmp_path: Path) -> None:
    """The selector's resolve_device (recommend, decision-table) refuses what predict refuses."""
    store = Store.open(f"sqlite:///{tmp_path / 'atlas.db'}")
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({**PHONE, "accelerator": "quantum"}))
    with pytest.raises(EdgeatlasError, match="unknown accelerator 'quantum'"):
        resolve_device(store, facts=path)
    path.write_text(json.dumps(PHONE))
    spec = resolve_device(store, facts=path)
    assert spec.name == "my-phone" and spec.class_name is None and spec.facts["cores"] == 8


@pytest.mark.parametrize(
    ("facts", "expect"),
    [
        ({"cpu_quota": "half"}, "'cpu_quota' = 'half' is not a positive number"),
        ({"cores": True}, "'cores' = True is not a positive number"),
        ({"freq_mhz": None}, "lack 'freq_mhz'"),
    ],
)
def test_facts_vector_refuses_what_it_cannot_read(facts: dict, expect: str) -> None:
    """Facts that reach the model another way (a stored class, the HTTP API) are checked too."""
    with pytest.raises(EdgeatlasError) as e:
        facts_vector({**PHONE, **facts})
    assert expect in e.value.message and e.value.hint and "--device-facts" in e.value.hint


def test_recommend_input_files_get_our_errors_not_clicks(tmp_path: Path) -> None:
    """recommend's --prefs, --device-facts and --probe-latencies and feedback's --recommendation:
    a directory, a file that is not UTF-8 and a missing file are errors naming the file with a fix
    (exit 1), not click's usage message or a traceback."""
    from click.testing import CliRunner

    from registry.cli import main

    folder = tmp_path / "a-folder"
    folder.mkdir()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('name = "t\xe9l\xe9phone"\n'.encode("latin-1"))
    prefs = Path(__file__).resolve().parent.parent / "examples" / "prefs" / "realtime_camera.toml"
    env = {"EDGEATLAS_HOME": str(tmp_path / "home")}
    base = [
        "recommend",
        "--edge",
        "x",
        "--bandwidth-mbit",
        "10",
        "--rtt-ms",
        "5",
        "--db",
        f"sqlite:///{tmp_path / 'a.db'}",
    ]
    cases = {
        ("--prefs", "--device", "x"): "prefs",
        ("--device-facts",): "device facts",
        ("--probe-latencies",): "probe latencies",
    }
    for flags, what in cases.items():
        for bad, expect in ((folder, "is a directory"), (latin, "not UTF-8")):
            args = [*base, flags[0], str(bad), *flags[1:]]
            if flags[0] != "--prefs":
                args += ["--prefs", str(prefs)]
            res = CliRunner().invoke(main, args, env=env)
            assert res.exit_code == 1 and "Traceback" not in res.output, (args, res.output)
            assert str(bad) in res.stderr and expect in res.stderr and "fix:" in res.stderr, res.stderr
            assert expect != "is a directory" or f"{what} file" in res.stderr, res.stderr
    for bad, expect in ((folder, "is a directory"), (latin, "not UTF-8"), (tmp_path / "none.json", "does not exist")):
        args = ["feedback", "--app", "a", "--chose", "k", "--rating", "3", "--recommendation", str(bad)]
        res = CliRunner().invoke(main, [*args, "--db", f"sqlite:///{tmp_path / 'a.db'}"], env=env)
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert str(bad) in res.stderr and expect in res.stderr and "fix:" in res.stderr, res.stderr
