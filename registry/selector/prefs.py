"""App preferences (prefs.toml or a JSON dict): hard constraints, QoE weights, utility shapes.

A prefs file looks like this (every section is optional; see examples/prefs/)::

    app = "realtime_camera"

    [constraints]
    max_latency_ms = 33            # end to end, device + transfer + edge
    min_accuracy = 0.60            # top-1 as a fraction in [0, 1]
    max_device_energy_mj = 80      # head compute + radio, per inference
    max_payload_kb = 200           # bytes sent over the network / 1000
    raw_data_stays_on_device = false   # true forbids all-on-edge

    [weights]                      # relative; normalised to sum to 1
    accuracy = 0.3
    latency = 0.6
    energy = 0.1

    [utility.latency]              # "deadline" (default) or "linear"
    shape = "deadline"
    target_ms = 33                 # full utility at or under the target ...
    decay_ms = 16                  # ... then exp(-(L - target) / decay)

    [utility.accuracy]             # "linear" (default): (a - floor) / (ceiling - floor)
    floor = 0.5
    ceiling = 0.8

    [utility.energy]               # "linear" (default): 1 - E / zero_mj, or "budget"
    shape = "budget"
    budget_mj = 40

Defaults: a latency target falls back to ``constraints.max_latency_ms``, an energy scale to
``constraints.max_device_energy_mj``. A utility whose weight is zero needs no parameters.
Every error names the file, the line (when it can be found), the field and the fix.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry.errors import EdgeatlasError, ErrorCode

OBJECTIVES = ("accuracy", "latency", "energy")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constraints(_Strict):
    max_latency_ms: float | None = Field(None, gt=0, description="end-to-end latency limit")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="accuracy floor, a fraction in [0, 1]")
    max_device_energy_mj: float | None = Field(None, gt=0, description="device energy per inference")
    max_payload_kb: float | None = Field(None, ge=0, description="bytes on the network / 1000")
    raw_data_stays_on_device: bool = Field(False, description="forbid all-on-edge (raw input upload)")

    def active(self) -> list[str]:
        names = [n for n in ("max_latency_ms", "min_accuracy", "max_device_energy_mj", "max_payload_kb")]
        out = [n for n in names if getattr(self, n) is not None]
        if self.raw_data_stays_on_device:
            out.append("raw_data_stays_on_device")
        return out


class Weights(_Strict):
    accuracy: float = Field(0.4, ge=0)
    latency: float = Field(0.4, ge=0)
    energy: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _positive_sum(self) -> Weights:
        if self.accuracy + self.latency + self.energy <= 0:
            raise ValueError("at least one weight must be positive")
        return self

    def vector(self) -> np.ndarray:
        """Weights (accuracy, latency, energy), normalised to sum to 1."""
        w = np.array([self.accuracy, self.latency, self.energy], dtype=float)
        return w / w.sum()


class LatencyUtility(_Strict):
    shape: Literal["deadline", "linear"] = "deadline"
    target_ms: float | None = Field(None, gt=0, description="deadline: full utility up to here")
    decay_ms: float | None = Field(None, gt=0, description="deadline: e-folding past the target (default target_ms)")
    zero_ms: float | None = Field(None, gt=0, description="linear: utility 0 at this latency")


class AccuracyUtility(_Strict):
    shape: Literal["linear"] = "linear"
    floor: float = Field(0.0, ge=0, le=1, description="utility 0 at or below")
    ceiling: float = Field(1.0, ge=0, le=1, description="utility 1 at or above")

    @model_validator(mode="after")
    def _order(self) -> AccuracyUtility:
        if self.ceiling <= self.floor:
            raise ValueError(f"ceiling ({self.ceiling}) must be greater than floor ({self.floor})")
        return self


class EnergyUtility(_Strict):
    shape: Literal["linear", "budget"] = "linear"
    zero_mj: float | None = Field(None, gt=0, description="linear: utility 0 at this energy")
    budget_mj: float | None = Field(None, gt=0, description="budget: full utility up to here")
    decay_mj: float | None = Field(None, gt=0, description="budget: e-folding past the budget (default budget_mj)")


class Utility(_Strict):
    latency: LatencyUtility = LatencyUtility()
    accuracy: AccuracyUtility = AccuracyUtility()
    energy: EnergyUtility = EnergyUtility()


class Prefs(_Strict):
    """Validated preferences. Use :func:`load_prefs` / :func:`prefs_from_dict` to build one."""

    app: str | None = Field(None, description="app name (learned QoE weights are stored per app)")
    description: str | None = None
    constraints: Constraints = Constraints()
    weights: Weights = Weights()
    utility: Utility = Utility()
    strict_intervals: bool = Field(
        False, description="check constraints on the pessimistic end of the prediction interval"
    )
    source: str = Field("<dict>", exclude=True, description="where these prefs came from")

    @model_validator(mode="after")
    def _resolve(self) -> Prefs:
        w = self.weights
        lat = self.utility.latency
        if w.latency > 0:
            if lat.shape == "deadline" and (lat.target_ms or self.constraints.max_latency_ms) is None:
                raise ValueError(
                    "utility.latency.target_ms: a deadline needs a target "
                    "(set utility.latency.target_ms or constraints.max_latency_ms)"
                )
            if lat.shape == "linear" and (lat.zero_ms or lat.target_ms or self.constraints.max_latency_ms) is None:
                raise ValueError(
                    "utility.latency.zero_ms: a linear latency utility needs the latency of zero utility "
                    "(set utility.latency.zero_ms or constraints.max_latency_ms)"
                )
        en = self.utility.energy
        if w.energy > 0:
            if en.shape == "linear" and (en.zero_mj or self.constraints.max_device_energy_mj) is None:
                raise ValueError(
                    "utility.energy.zero_mj: a linear energy utility needs the energy of zero utility "
                    "(set utility.energy.zero_mj or constraints.max_device_energy_mj, or set weights.energy = 0)"
                )
            if en.shape == "budget" and (en.budget_mj or self.constraints.max_device_energy_mj) is None:
                raise ValueError(
                    "utility.energy.budget_mj: an energy budget needs budget_mj "
                    "(set utility.energy.budget_mj or constraints.max_device_energy_mj)"
                )
        return self

    # resolved utility parameters --------------------------------------------------------
    def latency_params(self) -> tuple[str, float, float]:
        """(shape, a, b): deadline -> (target, decay); linear -> (zero_ms, 0)."""
        lat, c = self.utility.latency, self.constraints
        if lat.shape == "deadline":
            target = lat.target_ms or c.max_latency_ms or math.inf
            return "deadline", target, lat.decay_ms or target
        return "linear", lat.zero_ms or lat.target_ms or c.max_latency_ms or math.inf, 0.0

    def energy_params(self) -> tuple[str, float, float]:
        en, c = self.utility.energy, self.constraints
        if en.shape == "budget":
            budget = en.budget_mj or c.max_device_energy_mj or math.inf
            return "budget", budget, en.decay_mj or budget
        return "linear", en.zero_mj or c.max_device_energy_mj or math.inf, 0.0

    def with_weights(self, weights: dict[str, float]) -> Prefs:
        """A copy using other weights (e.g. learned ones); constraints and shapes are kept."""
        data = self.model_dump()
        data["weights"] = {k: float(weights.get(k, 0.0)) for k in OBJECTIVES}
        data["source"] = self.source
        return Prefs.model_validate(data)


# --- utilities (vectorised) ---------------------------------------------------------------


def utilities(prefs: Prefs, latency_ms: np.ndarray, device_energy_mj: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Utility parts in [0, 1], shape (3, N), rows ordered as :data:`OBJECTIVES`.

    Unknown accuracy (NaN) stays NaN in the accuracy row.
    """
    n = latency_ms.shape[0]
    out = np.empty((3, n), dtype=float)
    acc = prefs.utility.accuracy
    np.clip((accuracy - acc.floor) / (acc.ceiling - acc.floor), 0.0, 1.0, out=out[0])
    shape, a, b = prefs.latency_params()
    out[1] = _hinge_or_linear(latency_ms, shape == "deadline", a, b)
    shape, a, b = prefs.energy_params()
    out[2] = _hinge_or_linear(device_energy_mj, shape == "budget", a, b)
    return out


def _hinge_or_linear(x: np.ndarray, hinge: bool, a: float, b: float) -> np.ndarray:
    if not math.isfinite(a):
        return np.ones_like(x)
    if hinge:  # full utility up to a, then exp(-(x - a) / b)
        d = x - a
        d *= -1.0 / b
        np.minimum(d, 0.0, out=d)
        return np.exp(d, out=d)
    u = x * (-1.0 / a)
    u += 1.0
    return np.clip(u, 0.0, 1.0, out=u)


# --- loading --------------------------------------------------------------------------------


def load_prefs(path: str | Path) -> Prefs:
    """Read and validate a prefs.toml (or a .json file holding the same structure)."""
    from registry.selector.sources import read_text

    p = Path(path)
    if not p.is_file() and not p.is_dir():
        raise EdgeatlasError(
            f"prefs file {p} does not exist",
            ErrorCode.INVALID_CONFIG,
            hint="pass --prefs with a path to a prefs.toml; examples are in examples/prefs/",
        )
    p, text = read_text(p, "prefs")  # (a directory or bytes that are not UTF-8: an error naming the file)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EdgeatlasError(
                f"{p}:{exc.lineno}: not valid JSON: {exc.msg}", ErrorCode.INVALID_CONFIG, hint="fix the JSON syntax"
            ) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise EdgeatlasError(
                f"{p}: not valid TOML: {exc}", ErrorCode.INVALID_CONFIG, hint="fix the TOML syntax at that line"
            ) from None
    return prefs_from_dict(data, source=str(p), text=text)


def prefs_from_dict(data: Any, source: str = "<request>", text: str | None = None) -> Prefs:
    """Validate a prefs dict (from TOML, JSON or an HTTP body)."""
    if isinstance(data, Prefs):
        return data
    if not isinstance(data, dict):
        raise EdgeatlasError(
            f"{source}: prefs must be an object/table, got {type(data).__name__}",
            ErrorCode.INVALID_CONFIG,
            hint="send {'constraints': {...}, 'weights': {...}, 'utility': {...}}",
        )
    try:
        return Prefs.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _prefs_error(exc, source, text) from None


def _prefs_error(exc: ValidationError, source: str, text: str | None) -> EdgeatlasError:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc and ":" in msg.split(" ")[0]:  # model-level error that names its field first
        field, msg = msg.split(": ", 1)
        loc = field.split(".")
    field = ".".join(loc) or "(top level)"
    line = _find_line(text, loc) if text else None
    where = f"{source}:{line}" if line else source
    hint = _hint(err, loc, msg)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return EdgeatlasError(f"{where}: field '{field}': {msg}{more}", ErrorCode.INVALID_CONFIG, hint=hint)


def _hint(err: dict, loc: list[str], msg: str) -> str:
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Prefs
        for part in loc[:-1]:
            ann = model.model_fields.get(part)
            if ann is None or not isinstance(ann.default, BaseModel):
                break
            model = type(ann.default)
        allowed = ", ".join(k for k in model.model_fields if k != "source")
        return f"remove or rename '{loc[-1]}'; allowed here: {allowed}"
    if "(set " in msg:
        return msg[msg.index("(set ") + 1 : -1]
    if loc and loc[-1] == "min_accuracy":
        return "give accuracy as a fraction in [0, 1], e.g. 0.72 for 72 %"
    if err["type"] in ("greater_than", "greater_than_equal", "less_than_equal"):
        return f"set {'.'.join(loc)} to a value that satisfies: {msg}"
    if err["type"] == "literal_error":
        return f"use one of the allowed values: {msg}"
    return f"check the type/value of {'.'.join(loc) or 'the prefs'}; see examples/prefs/"


def _find_line(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of ``a.b.key`` in TOML (``[a.b]`` then ``key =``) or JSON text."""
    if not loc:
        return None
    lines = text.splitlines()
    key = loc[-1]
    table = ".".join(loc[:-1])
    key_re = re.compile(rf'^\s*"?{re.escape(key)}"?\s*[=:]')
    json_re = re.compile(rf'"{re.escape(key)}"\s*:')
    current = ""
    fallback = None
    for i, line in enumerate(lines, start=1):
        m = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if m:
            current = m.group(1).strip()
            continue
        if key_re.match(line) and current == table:
            return i
        if (key_re.match(line) or json_re.search(line)) and fallback is None:
            fallback = i
    if fallback is None and table:
        for i, line in enumerate(lines, start=1):
            if re.match(rf"^\s*\[{re.escape(table)}\]", line):
                return i
    return fallback
