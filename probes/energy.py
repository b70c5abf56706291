"""Energy sensor backends. Standard library only: this file is copied to the board with agent.py.

Each backend measures the energy spent between ``start()`` and ``stop()``; ``stop()`` returns
millijoules for the whole window (the agent divides by the number of inferences) and the agent
labels the value ``measured:<backend name>``. With no sensor, energy is estimated from a declared
power model (:func:`estimate_mj`), labelled ``estimated:<method>``, and never shown as measured.

Backends
- ``rapl``: Linux powercap (``/sys/class/powercap/intel-rapl:*/energy_uj``), counter deltas with
  wrap-around at ``max_energy_range_uj``.
- ``hwmon``: INA2xx / INA3221 power monitors under ``/sys/class/hwmon``: ``power*_input`` (uW),
  or ``curr*_input`` (mA) x ``in*_input`` (mV); sampled in a thread and integrated (trapezoids).
- ``tegrastats``: Jetson ``tegrastats --interval N`` output lines (``VDD_IN 5123mW/5000mW`` or the
  older ``POM_5V_IN 5123/5000``), integrated over the window.
- ``command``: an external meter command that prints a cumulative energy counter (``unit`` mJ/J/uJ);
  the delta between stop and start is the energy.

Every sysfs backend takes ``root`` (default ``/``) so tests can point it at a stand-in tree.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import threading
import time
from typing import Any

HWMON_NAMES = ("ina2xx", "ina219", "ina226", "ina230", "ina231", "ina3221", "ina3221x", "ina238")


class EnergyError(Exception):
    pass


def _read_int(path: str) -> int:
    # A sensor file can read empty while its driver updates it: retry briefly before failing.
    text = ""
    for _ in range(5):
        with open(path) as f:
            text = f.read().strip()
        if text:
            break
        time.sleep(0.001)
    try:
        return int(text)
    except ValueError as e:
        raise EnergyError(f"{path}: expected an integer, read {text!r}") from e


class RaplBackend:
    """Powercap/RAPL energy counters. ``zones``: glob patterns under the powercap dir."""

    name = "rapl"

    def __init__(self, root: str = "/", zones: list[str] | None = None):
        base = os.path.join(root, "sys/class/powercap")
        pats = zones or ["intel-rapl:[0-9]", "intel-rapl:[0-9][0-9]"]  # packages, not sub-zones
        self.zones = sorted({z for p in pats for z in glob.glob(os.path.join(base, p))})
        self.zones = [z for z in self.zones if os.path.exists(os.path.join(z, "energy_uj"))]
        if not self.zones:
            raise EnergyError(f"no powercap zone with energy_uj under {base}")
        self._start: list[int] = []

    def _read(self) -> list[int]:
        return [_read_int(os.path.join(z, "energy_uj")) for z in self.zones]

    def _range(self, z: str) -> int:
        try:
            return _read_int(os.path.join(z, "max_energy_range_uj"))
        except OSError:
            return 2**32

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        end = self._read()
        total_uj = 0
        for z, a, b in zip(self.zones, self._start, end, strict=True):
            d = b - a
            if d < 0:  # the counter wrapped once
                d += self._range(z) + 1
            total_uj += d
        return total_uj / 1000.0


def _hwmon_channels(root: str, names: tuple[str, ...], channel: str | None) -> list[tuple[str, str, str | None]]:
    """(kind, path_a, path_b): kind "power" (uW file) or "vi" (mA file, mV file)."""
    out: list[tuple[str, str, str | None]] = []
    for d in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
        try:
            with open(os.path.join(d, "name")) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name not in names:
            continue
        powers = sorted(glob.glob(os.path.join(d, "power*_input")))
        for p in powers:
            idx = re.search(r"power(\d+)_input", p).group(1)  # type: ignore[union-attr]
            if channel in (None, idx, _label(d, "power", idx), _label(d, "in", idx)):
                out.append(("power", p, None))
        if powers:
            continue
        for c in sorted(glob.glob(os.path.join(d, "curr*_input"))):
            idx = re.search(r"curr(\d+)_input", c).group(1)  # type: ignore[union-attr]
            v = os.path.join(d, f"in{idx}_input")
            if os.path.exists(v) and channel in (None, idx, _label(d, "curr", idx), _label(d, "in", idx)):
                out.append(("vi", c, v))
    return out


def _label(d: str, kind: str, idx: str) -> str | None:
    try:
        with open(os.path.join(d, f"{kind}{idx}_label")) as f:
            return f.read().strip()
    except OSError:
        return None


class _Integrator:
    """Samples a power function (W) in a thread and integrates it over time (J)."""

    def __init__(self, sample_w: Any, interval_s: float):
        self.sample_w = sample_w
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._joules = 0.0
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.error: Exception | None = None

    def _loop(self) -> None:
        t_prev = time.monotonic()
        w_prev = self.sample_w()
        self.samples = 1
        while not self._stop.wait(self.interval_s):
            try:
                w = self.sample_w()
            except Exception as e:  # noqa: BLE001 - reported at stop()
                self.error = e
                return
            t = time.monotonic()
            self._joules += (w + w_prev) / 2.0 * (t - t_prev)
            t_prev, w_prev = t, w
            self.samples += 1
        t = time.monotonic()
        self._joules += w_prev * (t - t_prev)

    def start(self) -> None:
        self.sample_w()  # fail early, in the caller's thread
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.error:
            raise EnergyError(f"power sampling failed: {self.error}")
        return self._joules * 1000.0


class HwmonBackend:
    """INA2xx / INA3221 monitors; sums the selected channels (a ``channel`` index or label)."""

    name = "hwmon"

    def __init__(self, root: str = "/", channel: str | None = None, interval_s: float = 0.01, names: Any = None):
        self.channels = _hwmon_channels(root, tuple(names or HWMON_NAMES), channel)
        if not self.channels:
            raise EnergyError(f"no INA2xx/INA3221 hwmon channel under {os.path.join(root, 'sys/class/hwmon')}")
        self._integ = _Integrator(self.power_w, float(interval_s))

    def power_w(self) -> float:
        total = 0.0
        for kind, a, b in self.channels:
            if kind == "power":
                total += _read_int(a) / 1e6  # uW
            else:
                total += _read_int(a) / 1e3 * _read_int(b) / 1e3  # mA x mV
        return total

    def start(self) -> None:
        self._integ.start()

    def stop(self) -> float:
        return self._integ.stop()


_TEGRA_NEW = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)mW/(\d+)mW")
_TEGRA_OLD = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)/(\d+)\b")


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rail -> instantaneous power (mW) from one tegrastats line (both output formats)."""
    rails = {m.group(1): float(m.group(2)) for m in _TEGRA_NEW.finditer(line)}
    if not rails:
        rails = {m.group(1): float(m.group(2)) for m in _TEGRA_OLD.finditer(line) if "_" in m.group(1)}
    return rails


class TegrastatsBackend:
    """Jetson: runs ``tegrastats`` and integrates one rail (default VDD_IN / POM_5V_IN)."""

    name = "tegrastats"

    def __init__(self, command: str = "tegrastats --interval 20", rail: str | None = None):
        self.argv = shlex.split(command)
        self.rail = rail
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[tuple[float, float]] = []
        self._thread: threading.Thread | None = None

    def _pick(self, rails: dict[str, float]) -> float | None:
        for r in [self.rail] if self.rail else ["VDD_IN", "POM_5V_IN", "VDD_TOTAL"]:
            if r in rails:
                return rails[r]
        return None

    def _reader(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            mw = self._pick(parse_tegrastats_line(line))
            if mw is not None:
                self._lines.append((time.monotonic(), mw))

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            raise EnergyError(f"cannot start {self.argv[0]}: {e}") from e
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()
        self._t0 = time.monotonic()

    def stop(self) -> float:
        t1 = time.monotonic()
        assert self._proc
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        if self._thread:
            self._thread.join(timeout=5)
        return integrate_mw(self._lines, self._t0, t1)


def integrate_mw(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """mJ over [t0, t1] from (time, mW) samples, holding each value until the next sample."""
    pts = [(t, w) for t, w in samples if t0 <= t <= t1]
    if not pts:
        raise EnergyError("no power sample inside the measurement window")
    mj = pts[0][1] * (pts[0][0] - t0)
    for (ta, wa), (tb, _wb) in zip(pts, pts[1:], strict=False):
        mj += wa * (tb - ta)
    mj += pts[-1][1] * (t1 - pts[-1][0])
    return mj  # mW x s = mJ


class CommandBackend:
    """An external meter: ``command`` prints a cumulative energy counter (last number on stdout)."""

    name = "command"
    _UNITS = {"uJ": 1e-3, "mJ": 1.0, "J": 1e3, "Wh": 3.6e6}

    def __init__(self, command: str, unit: str = "mJ", timeout_s: float = 10.0):
        if unit not in self._UNITS:
            raise EnergyError(f"unit must be one of {sorted(self._UNITS)}, not {unit!r}")
        self.argv = shlex.split(command)
        self.scale = self._UNITS[unit]
        self.timeout_s = timeout_s
        self._a = 0.0

    def _read(self) -> float:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise EnergyError(f"meter command {self.argv!r} failed: {e}") from e
        nums = re.findall(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", out)
        if not nums:
            raise EnergyError(f"meter command printed no number: {out[:80]!r}")
        return float(nums[-1]) * self.scale

    def start(self) -> None:
        self._a = self._read()

    def stop(self) -> float:
        return self._read() - self._a


BACKENDS = {"rapl": RaplBackend, "hwmon": HwmonBackend, "tegrastats": TegrastatsBackend, "command": CommandBackend}


def open_backend(name: str, options: dict[str, Any] | None = None) -> Any:
    if name not in BACKENDS:
        raise EnergyError(f"unknown energy backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name](**(options or {}))


def detect_backends(root: str = "/") -> list[str]:
    """Which sensors this machine has (names usable in devices.toml ``energy.backend``)."""
    found = []
    try:
        RaplBackend(root)
        found.append("rapl")
    except (EnergyError, OSError):
        pass
    if _hwmon_channels(root, HWMON_NAMES, None):
        found.append("hwmon")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and os.access(os.path.join(d, "tegrastats"), os.X_OK):
            found.append("tegrastats")
            break
    return found


def estimate_mj(power_model: dict[str, Any], latency_ms: float) -> tuple[float | None, str | None]:
    """Estimated energy of one inference from a declared power model: active_w x latency."""
    active = power_model.get("active_w") if power_model else None
    if active is None:
        return None, None
    return float(active) * float(latency_ms), "estimated:power-model-active_w"
