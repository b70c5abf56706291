"""Job / Result records exchanged between the controller (FleetRunner) and the board agent.

Decision: ``probes/agent.py`` is self-contained (it is copied to boards alone, with energy.py),
so it owns the wire constants: :class:`ErrorCode`, ``PROTOCOL_VERSION`` and the stdout marker.
This module imports them from the agent and adds typed, frozen records for the controller side.
The agent itself works on plain dicts with the same keys (``Job.to_dict()`` is what it reads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from probes.agent import (
    AGENT_VERSION,
    DEFAULT_PROTOCOL,
    FACTS_MARKER,
    PROTOCOL_VERSION,
    RESULT_MARKER,
    ErrorCode,
)

__all__ = [
    "AGENT_VERSION",
    "DEFAULT_PROTOCOL",
    "FACTS_MARKER",
    "PROTOCOL_VERSION",
    "RESULT_MARKER",
    "ErrorCode",
    "Job",
    "MeasureProtocol",
    "Result",
    "parse_marked",
]


@dataclass(frozen=True)
class MeasureProtocol:
    warmup_runs: int = 1
    warmup_s: float = 0.5
    repeat: int = 5
    number: int = 10
    min_repeat_ms: float = 200.0
    cooldown_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One unit of work for the agent. Paths are paths ON the board."""

    job_id: str
    model: str
    kind: str = "model"  # model | split_head | split_tail
    runtime: str = "onnxruntime"
    threads: int = 1
    graph_opt: str = "all"  # onnxruntime graph optimization level (agent.GRAPH_OPT_LEVELS)
    cpus: tuple[int, ...] | None = None
    pin: bool = True
    protocol: MeasureProtocol = field(default_factory=MeasureProtocol)
    timeout_s: float = 300.0
    energy: dict[str, Any] | None = None  # {"backend": "rapl", "options": {...}}
    power_model: dict[str, Any] | None = None  # declared, for estimated energy
    codecs: tuple[str, ...] = ()
    codec_params: dict[str, Any] | None = None
    payload_dir: str | None = None
    payloads: dict[str, str] | None = None  # split_tail: codec -> payload path on the board
    drift_ref: str | None = None  # the drift reference model on the board (probes.drift); None: none

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpus"] = list(self.cpus) if self.cpus is not None else None
        d["codecs"] = list(self.codecs)
        d["protocol_version"] = PROTOCOL_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        d.pop("protocol_version", None)
        d["protocol"] = MeasureProtocol(**(d.get("protocol") or {}))
        if d.get("cpus") is not None:
            d["cpus"] = tuple(d["cpus"])
        d["codecs"] = tuple(d.get("codecs") or ())
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class Result:
    """What came back from one job. ``raw`` keeps everything the agent reported."""

    job_id: str | None
    status: str  # ok | error
    error_code: ErrorCode = ErrorCode.OK
    error_message: str | None = None
    latency_ms: float | None = None
    stats: dict[str, Any] | None = None
    energy_mj: float | None = None
    energy_source: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    system: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_agent(cls, d: dict[str, Any]) -> Result:
        return cls(
            job_id=d.get("job_id"),
            status=d.get("status", "error"),
            error_code=ErrorCode(int(d.get("error_code", ErrorCode.AGENT_ERROR))),
            error_message=d.get("error_message"),
            latency_ms=d.get("latency_ms"),
            stats=d.get("stats"),
            energy_mj=d.get("energy_mj"),
            energy_source=d.get("energy_source"),
            runtime=d.get("runtime"),
            runtime_version=d.get("runtime_version"),
            system={"before": d.get("system_before"), "after": d.get("system_after")},
            raw=d,
        )

    @classmethod
    def failure(cls, job_id: str | None, code: ErrorCode, message: str) -> Result:
        return cls(job_id=job_id, status="error", error_code=code, error_message=message)

    def to_json(self) -> str:
        d = asdict(self)
        d["error_code"] = int(self.error_code)
        return json.dumps(d, default=str)

    @classmethod
    def from_json(cls, text: str) -> Result:
        d = json.loads(text)
        d["error_code"] = ErrorCode(int(d.get("error_code", 0)))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


def parse_marked(stdout: str, marker: str = RESULT_MARKER) -> dict[str, Any] | None:
    """The last ``marker<json>`` line of an agent's stdout, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            try:
                return json.loads(line[len(marker) :])
            except ValueError:
                return None
    return None
