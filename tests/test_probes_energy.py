"""Energy backends against a STAND-IN sysfs tree in tmp_path (this machine has no sensor).

The stand-in files are written by the test itself; a background thread advances the counters
the way a real sensor would, so the backends read, wrap and integrate real files.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from probes import energy


def standin_rapl(root: Path, start_uj: int, max_uj: int = 2**32) -> Path:
    z = root / "sys/class/powercap/intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0\n")
    (z / "energy_uj").write_text(f"{start_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    sub = root / "sys/class/powercap/intel-rapl:0:0"  # a sub-zone: must not be double counted
    sub.mkdir()
    (sub / "energy_uj").write_text("5\n")
    return z


def test_rapl_counts_the_delta_and_handles_wraparound(tmp_path):
    z = standin_rapl(tmp_path, start_uj=4_000)
    b = energy.open_backend("rapl", {"root": str(tmp_path)})
    b.start()
    (z / "energy_uj").write_text("9_000".replace("_", ""))
    assert b.stop() == pytest.approx(5.0)  # 5000 uJ = 5 mJ
    # wrap-around: counter at 90 of a 100-uJ range, then reads 30 -> 40 uJ spent
    (z / "max_energy_range_uj").write_text("100\n")
    (z / "energy_uj").write_text("90\n")
    b.start()
    (z / "energy_uj").write_text("30\n")
    assert b.stop() == pytest.approx((100 - 90 + 30 + 1) / 1000.0)
    assert "rapl" in energy.detect_backends(str(tmp_path))


def _hwmon(root: Path, name: str) -> Path:
    d = (
        root
        / f"sys/class/hwmon/hwmon{len(list((root / 'sys/class/hwmon').glob('*'))) if (root / 'sys/class/hwmon').exists() else 0}"
    )
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    return d


def test_hwmon_ina2xx_power_channel_integrates_power(tmp_path):
    d = _hwmon(tmp_path, "ina226")
    (d / "power1_input").write_text("2000000\n")  # 2 W in uW, constant
    b = energy.open_backend("hwmon", {"root": str(tmp_path), "interval_s": 0.005})
    t0 = time.monotonic()
    b.start()
    time.sleep(0.2)
    mj = b.stop()
    dt = time.monotonic() - t0
    assert mj == pytest.approx(2.0 * dt * 1000, rel=0.15)  # 2 W x ~0.2 s = ~400 mJ
    assert energy.detect_backends(str(tmp_path)) == ["hwmon"]


def test_hwmon_ina3221_current_times_voltage_and_channel_label(tmp_path):
    d = _hwmon(tmp_path, "ina3221")
    for i, (ma, mv, label) in enumerate([(500, 5000, "VDD_IN"), (100, 1000, "VDD_CPU")], start=1):
        (d / f"curr{i}_input").write_text(f"{ma}\n")
        (d / f"in{i}_input").write_text(f"{mv}\n")
        (d / f"in{i}_label").write_text(label + "\n")
    b = energy.HwmonBackend(root=str(tmp_path), channel="VDD_IN")
    assert b.power_w() == pytest.approx(2.5)  # 0.5 A x 5 V
    assert energy.HwmonBackend(root=str(tmp_path)).power_w() == pytest.approx(2.6)


def test_hwmon_ignores_non_ina_monitors_and_reports_absence(tmp_path):
    d = _hwmon(tmp_path, "k10temp")
    (d / "power1_input").write_text("1\n")
    with pytest.raises(energy.EnergyError, match="INA2xx"):
        energy.open_backend("hwmon", {"root": str(tmp_path)})
    with pytest.raises(energy.EnergyError, match="powercap"):
        energy.open_backend("rapl", {"root": str(tmp_path)})
    with pytest.raises(energy.EnergyError, match="unknown energy backend"):
        energy.open_backend("volts")


def test_tegrastats_parsing_both_formats_and_integration():
    new = "RAM 2000/7000MB CPU [10%@1200] VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 800mW/700mW"
    old = "RAM 1000/3964MB CPU [5%@102] POM_5V_IN 3200/3100 POM_5V_GPU 0/0"
    assert energy.parse_tegrastats_line(new) == {"VDD_IN": 5123.0, "VDD_CPU_GPU_CV": 800.0}
    assert energy.parse_tegrastats_line(old)["POM_5V_IN"] == 3200.0
    # 1000 mW for 1 s then 3000 mW for 1 s = 4000 mJ
    assert energy.integrate_mw([(0.0, 1000.0), (1.0, 3000.0)], 0.0, 2.0) == pytest.approx(4000.0)


def test_tegrastats_backend_reads_a_standin_tegrastats_process(tmp_path):
    # stand-in for the Jetson binary: prints a new-format line every 10 ms at a constant 4 W
    script = tmp_path / "tegrastats_standin.py"
    script.write_text(
        "import time,sys\nwhile True:\n print('RAM 1/2MB VDD_IN 4000mW/4000mW', flush=True)\n time.sleep(0.01)\n"
    )
    b = energy.open_backend("tegrastats", {"command": f"{sys.executable} {script}"})
    b.start()
    time.sleep(0.6)
    mj = b.stop()
    assert 1200 < mj < 2600  # 4 W over ~0.6 s (minus the stand-in's start-up)


def test_command_meter_delta(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("1.5\n")
    b = energy.open_backend("command", {"command": f"cat {counter}", "unit": "J"})
    b.start()
    counter.write_text("meter: 2.0 J\n")
    assert b.stop() == pytest.approx(500.0)
    with pytest.raises(energy.EnergyError):
        energy.CommandBackend("true", unit="kWh")


def test_agent_uses_a_declared_backend_and_labels_it_measured(tmp_path):
    """End to end in the agent: a stand-in RAPL counter advanced by a thread -> measured:rapl."""
    from fixtures_probes import make_onnx

    from probes import agent

    z = standin_rapl(tmp_path, start_uj=0)
    stop = threading.Event()

    def tick() -> None:
        v = 0
        while not stop.is_set():
            v += 1000
            # like sysfs, a reader sees the old or the new value, never a half-written file
            tmp = z / "energy_uj.tmp"
            tmp.write_text(f"{v}\n")
            os.replace(tmp, z / "energy_uj")
            time.sleep(0.002)

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        model = make_onnx(tmp_path / "m.onnx")
        r = agent.run_job(
            {
                "job_id": "e",
                "model": str(model),
                "protocol": {"warmup_s": 0.0, "repeat": 2, "number": 5, "min_repeat_ms": 20},
                "energy": {"backend": "rapl", "options": {"root": str(tmp_path)}},
                "power_model": {"active_w": 3.0},
            }
        )
    finally:
        stop.set()
    assert r["status"] == "ok", r["error_message"]
    assert r["energy_source"] == "measured:rapl" and r["energy_mj"] > 0
    assert energy.estimate_mj({"active_w": 3.0}, 2.0) == (6.0, "estimated:power-model-active_w")
    assert energy.estimate_mj({}, 2.0) == (None, None)
