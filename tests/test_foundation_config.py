"""devices.toml: the shipped fleet loads; every kind of broken file is one line naming file, line, field and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry.cli import main
from registry.config import load_devices
from registry.errors import EdgeatlasError

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
[defaults]
user = "pi"
key_file = "{key}"
known_hosts = "{data_dir}/fleet/known_hosts"

[classes.rpi4]
arch = "aarch64"
cores = 4
freq_mhz = 1500
memory_mb = 4096
runtimes = ["onnxruntime", "litert"]

[[boards]]
name = "pi-a"
class = "rpi4"
host = "10.0.0.5"
port = 22
role = "device"
tags = ["lab"]

[[boards]]
name = "gpu-box"
class = "rpi4"
host = "10.0.0.9"
role = "edge"
energy = {{ backend = "hwmon", options = {{ chip = "ina3221" }} }}
"""


@pytest.fixture
def key(tmp_path: Path) -> Path:
    k = tmp_path / "id_ed25519"
    k.write_text("not really a key, only needs to exist\n")
    return k


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devices.toml"
    p.write_text(text)
    return p


def test_shipped_fleet_loads() -> None:
    fleet = load_devices(REPO / "devices.toml")
    assert len(fleet.devices()) >= 3 and len(fleet.edges()) >= 1
    assert len({b.class_name for b in fleet.devices()}) >= 2
    assert all(b.emulate is not None for b in fleet.boards)
    assert fleet.board("edge-1").role == "edge"
    assert fleet.classes["emu-little"].facts()["cpu_quota"] == 0.25


def test_good_real_board_file(tmp_path: Path, key: Path) -> None:
    fleet = load_devices(write(tmp_path, GOOD.format(key=key, data_dir="{data_dir}")))
    pi = fleet.board("pi-a")
    assert pi.user == "pi" and pi.key_file == key and pi.address == "pi@10.0.0.5:22"
    assert fleet.board("gpu-box").energy.options == {"chip": "ina3221"}
    assert fleet.board("gpu-box").port == 22


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(EdgeatlasError) as e:
        load_devices(write(tmp_path, text))
    msg = str(e.value)
    assert "\n" not in msg and "fix:" in msg and "devices.toml" in msg
    return msg


def test_toml_syntax_error_names_line(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace("port = 22\n", "port = = 22\n")
    msg = _error(tmp_path, text)
    assert "devices.toml:17" in msg and "syntax" in msg


def test_missing_field(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace('host = "10.0.0.5"\n', "")
    msg = _error(tmp_path, text)
    assert "board 'pi-a'" in msg and "'host'" in msg and "missing" in msg and "devices.toml:13" in msg


def test_wrong_type_names_field_and_line(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace("port = 22\n", 'port = "twenty-two"\n')
    msg = _error(tmp_path, text)
    assert "devices.toml:17" in msg and "'port'" in msg and "board 'pi-a'" in msg


def test_duplicate_board(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace('name = "gpu-box"', 'name = "pi-a"')
    msg = _error(tmp_path, text)
    assert "duplicate" in msg and "devices.toml:22" in msg


def test_unknown_class(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace(
        'class = "rpi4"\nhost = "10.0.0.9"', 'class = "jetson"\nhost = "10.0.0.9"'
    )
    msg = _error(tmp_path, text)
    assert "unknown class 'jetson'" in msg and "board 'gpu-box'" in msg and "devices.toml:23" in msg and "rpi4" in msg


def test_password_refused(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace(
        'role = "device"\n', 'role = "device"\npassword = "raspberry"\n'
    )
    msg = _error(tmp_path, text)
    assert "password" in msg and "secrets" in msg and "key_file" in msg and "devices.toml:19" in msg


def test_missing_key_file(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD.format(key=tmp_path / "nope", data_dir="{data_dir}"))
    assert "does not exist" in msg and "ssh-keygen" in msg and "devices.toml:3" in msg


def test_bad_role_and_unknown_field(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}")
    msg = _error(tmp_path, text.replace('role = "device"', 'role = "phone"'))
    assert "'role'" in msg and '"edge"' in msg
    msg = _error(tmp_path, text.replace('tags = ["lab"]', 'tagz = ["lab"]'))
    assert "'tagz'" in msg and "devices.toml:19" in msg


@pytest.mark.parametrize(
    "edit",
    [
        ("port = 22\n", "port = = 22\n"),
        ('host = "10.0.0.5"\n', ""),
        ("port = 22\n", 'port = "x"\n'),
        ('name = "gpu-box"', 'name = "pi-a"'),
        ('class = "rpi4"\nhost = "10.0.0.9"', 'class = "nope"\nhost = "10.0.0.9"'),
        ('role = "device"\n', 'role = "device"\npassword = "x"\n'),
    ],
    ids=["syntax", "missing", "type", "duplicate", "unknown-class", "password"],
)
def test_cli_one_line_no_traceback(tmp_path: Path, key: Path, edit: tuple[str, str]) -> None:
    path = write(tmp_path, GOOD.format(key=key, data_dir="{data_dir}").replace(*edit))
    res = CliRunner().invoke(main, ["fleet", "list", "--devices", str(path), "--db", f"sqlite:///{tmp_path}/a.db"])
    assert res.exit_code == 1
    out = res.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert str(path) in out and "fix:" in out


def test_fleet_list_json_prints_repo_boards(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["fleet", "list", "--json", "--devices", str(REPO / "devices.toml"), "--db", f"sqlite:///{tmp_path}/a.db"]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    names = [r["name"] for r in rows]
    assert names == [b.name for b in load_devices(REPO / "devices.toml").boards]
    assert {"name", "class", "role", "address", "emulate"} <= set(rows[0])


def test_cli_error_keeps_bracketed_text(tmp_path: Path, key: Path) -> None:
    """The console line shows "[classes.jetson]" as written: messages are not read as rich markup."""
    text = GOOD.format(key=key, data_dir="{data_dir}").replace(
        'class = "rpi4"\nhost = "10.0.0.9"', 'class = "jetson"\nhost = "10.0.0.9"'
    )
    path = write(tmp_path, text)
    res = CliRunner().invoke(main, ["fleet", "list", "--devices", str(path), "--db", f"sqlite:///{tmp_path}/a.db"])
    assert res.exit_code == 1
    assert "declare [classes.jetson]" in res.output and "[INVALID_CONFIG]" in res.output, res.output


def test_class_facts_refuse_booleans_and_suggest_a_spelling(tmp_path: Path, key: Path) -> None:
    """The class schema is the one --device-facts files are checked against (test_device_facts_input.py).
    An accelerator the facts model does not know still loads from devices.toml (fleets that loaded
    before keep loading) and counts as tpu/asic/fpga, as it always did; a facts file refuses it."""
    from predictors.features import FACT_NAMES, facts_vector

    text = GOOD.format(key=key, data_dir="{data_dir}")
    msg = _error(tmp_path, text.replace("cores = 4\n", "cores = true\n"))
    assert "devices.toml:8: class 'rpi4': field 'cores'" in msg and "boolean, not a number" in msg
    fleet = load_devices(write(tmp_path, text.replace("cores = 4\n", 'cores = 4\naccelerator = "vpu"\n')))
    facts = {"cores": 4, "freq_mhz": 1500, "memory_mb": 4096, "accelerator": fleet.classes["rpi4"].accelerator}
    assert facts_vector(facts)[FACT_NAMES.index("accel_tpu_asic_fpga")] == 1.0
    msg = _error(tmp_path, text.replace("cores = 4\n", 'cores = 4\nacclerator = "gpu"\n'))
    assert "'acclerator'" in msg and "did you mean 'accelerator'?" in msg
    fleet = load_devices(write(tmp_path, text.replace("cores = 4\n", 'cores = 4\naccelerator = "mali-gpu"\n')))
    assert fleet.classes["rpi4"].accelerator == "mali-gpu"


def test_an_error_in_a_capitalised_class_names_the_class_and_the_field(tmp_path: Path, key: Path) -> None:
    text = GOOD.format(key=key, data_dir="{data_dir}").replace("rpi4", "RPi4").replace("runtimes =", "runtime =")
    msg = _error(tmp_path, text)
    assert "devices.toml:11: class 'RPi4': field 'runtime'" in msg and "did you mean 'runtimes'?" in msg
