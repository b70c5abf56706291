"""devices.toml (the fleet) -> typed objects.

Loaded with tomllib into pydantic models. Every error is an :class:`EdgeatlasError`
whose one line names the file, the line (where one can be found), the board or
class and the field, and says how to fix it.

Schema (see README "devices.toml"):

    [defaults]            user, key_file, known_hosts, remote_dir, trust_new_hosts
    [classes.NAME]        arch, cores, freq_mhz, memory_mb, accelerator, runtimes,
                          cpu_quota, cpus (emulated classes), power (declared power model)
    [[boards]]            name, class, host, port, role (device|edge), user, key_file,
                          emulate {cpu_quota, cpus, link_mbit, rtt_ms, link_shaper},
                          energy {backend, options}, tags, remote_dir

Paths may use ``{data_dir}`` (the edgeatlas data directory) and ``~``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import data_dir

SECRET_KEYS = {"password", "passwd", "passphrase", "secret", "token", "private_key"}
RUNTIMES = {"onnxruntime", "litert"}
LINK_SHAPERS = ("auto", "netns", "proxy")
ENERGY_BACKENDS = {"powercap", "rapl", "hwmon", "ina2xx", "ina3221", "tegrastats", "command", "estimated", "none"}
_NAME_RE = re.compile(r"^[^\x00-\x1f/]{1,200}$")
#: The accelerator kinds a device may declare, and the group the zero-shot facts model puts each in
#: (predictors.features.facts_vector). A name holding one of them also counts ("mali-gpu",
#: "hexagon-dsp", "edgetpu"). A ``--device-facts`` file or the API's device_facts with any other
#: name ("quantum") is refused; a devices.toml class (and its stored facts) may still name another
#: accelerator ("vpu", "apple-neural-engine"), which the facts model counts as tpu/asic/fpga, as it
#: always has: refusing them would break fleets that loaded before.
ACCELERATORS: dict[str, str] = {
    "none": "none",
    "cpu": "none",
    "gpu": "gpu",
    "npu": "npu_dsp",
    "dsp": "npu_dsp",
    "hexagon": "npu_dsp",
    "tpu": "tpu_asic_fpga",
    "asic": "tpu_asic_fpga",
    "fpga": "tpu_asic_fpga",
}
ACCELERATOR_HINT = (
    f'use one of {", ".join(ACCELERATORS)} (or a name holding one, e.g. "mali-gpu"); none for a CPU-only device'
)


def accelerator_group(value: Any, strict: bool = True) -> str | None:
    """The facts-model group of an accelerator name (None, "" and "none" -> "none"). A name that is
    not one of :data:`ACCELERATORS` and holds none of them: None, or with ``strict=False``
    "tpu_asic_fpga" (how the facts model has always counted another accelerator)."""
    if value is None:
        return "none"
    v = str(value).strip().lower()
    if v == "":
        return "none"
    if v in ACCELERATORS:
        return ACCELERATORS[v]
    for name, group in ACCELERATORS.items():  # gpu before npu/dsp before tpu/asic/fpga, as the facts model reads it
        if group != "none" and name in v:
            return group
    return None if strict else "tpu_asic_fpga"


def _not_bool(v: Any) -> Any:
    """Numbers are numbers: ``true``/``false`` is refused (pydantic would read it as 1/0)."""
    if isinstance(v, bool):
        raise PydanticCustomError("bool_not_number", "{value} is a boolean, not a number", {"value": str(v).lower()})
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerModel(_Strict):
    """A declared power model for *estimated* energy (never reported as measured)."""

    idle_w: float = Field(ge=0)
    active_w: float = Field(gt=0)
    radio_nj_per_byte: float = Field(default=0.0, ge=0)
    source: str = Field(default="declared in devices.toml", description="where the figures come from")

    @field_validator("idle_w", "active_w", "radio_nj_per_byte", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return _not_bool(v)


class EmulateSpec(_Strict):
    cpu_quota: float = Field(gt=0, le=64, description="CPU share in cores (0.5 = half of one core)")
    cpus: str = Field(default="0", description="cpuset, e.g. '0' or '0-1'")
    link_mbit: float | None = Field(default=None, gt=0)
    rtt_ms: float | None = Field(default=None, ge=0)
    link_shaper: str = Field(
        default="auto",
        description="how `fleet up` shapes the link: auto (tbf on a veth into the board's network namespace "
        "+ the delay proxy, else the proxy alone), netns (require tbf on a veth), proxy (user-space proxy only)",
    )

    @field_validator("link_shaper")
    @classmethod
    def _link_shaper(cls, v: str) -> str:
        if v not in LINK_SHAPERS:
            raise ValueError(
                f"link_shaper must be one of {', '.join(repr(x) for x in LINK_SHAPERS)}, not {v!r}: "
                '"auto" = tbf on a veth in the board\'s network namespace when this host allows it, else the '
                'user-space proxy; "netns" = require the namespace and tbf; "proxy" = the user-space proxy only'
            )
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", v):
            raise ValueError("cpus must be a cpuset list such as '0', '0-1' or '0,2'")
        return v


class EnergySpec(_Strict):
    backend: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in ENERGY_BACKENDS:
            raise ValueError(f"unknown energy backend {v!r}; use one of {', '.join(sorted(ENERGY_BACKENDS))}")
        return v


class DefaultsSpec(_Strict):
    user: str = "root"
    key_file: str = "{data_dir}/fleet/id_ed25519"
    known_hosts: str = "{data_dir}/fleet/known_hosts"
    remote_dir: str = "/tmp/edgeatlas-probe"
    trust_new_hosts: bool = False


class ClassSpecModel(_Strict):
    arch: str
    cores: int = Field(gt=0)
    freq_mhz: float | None = Field(default=None, gt=0)
    memory_mb: int = Field(gt=0)
    accelerator: str = "none"
    runtimes: list[str] = Field(default_factory=lambda: ["onnxruntime"])
    cpu_quota: float | None = Field(default=None, gt=0)
    cpus: str | None = None
    power: PowerModel | None = None
    description: str = ""

    @field_validator("cores", "freq_mhz", "memory_mb", "cpu_quota", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return _not_bool(v)

    @field_validator("runtimes")
    @classmethod
    def _runtimes(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r not in RUNTIMES]
        if bad:
            raise ValueError(f"unknown runtime(s) {bad}; use {sorted(RUNTIMES)}")
        return v


class DeviceFactsModel(ClassSpecModel):
    """A ``--device-facts`` file: the facts of a devices.toml class (:class:`ClassSpecModel`), for
    one device nobody has measured. Differences: an optional ``name``; ``freq_mhz`` is required
    and ``arch`` optional (the zero-shot facts model reads cores, freq_mhz and memory_mb)."""

    name: str | None = None
    arch: str = ""
    freq_mhz: float = Field(gt=0)

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        """A facts file names an accelerator the facts model knows (:data:`ACCELERATORS`)."""
        if accelerator_group(v) is None:
            raise PydanticCustomError(
                "accelerator",
                "unknown accelerator '{value}'",
                {"value": v},
            )
        return v


class BoardSpecModel(_Strict):
    name: str
    class_: str = Field(alias="class")
    host: str
    port: int = Field(default=22, gt=0, lt=65536)
    role: Literal["device", "edge"] = "device"
    user: str | None = None
    key_file: str | None = None
    emulate: EmulateSpec | None = None
    energy: EnergySpec | None = None
    tags: list[str] = Field(default_factory=list)
    remote_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v) or not v.strip():
            raise ValueError("a board name must be 1-200 printable characters without '/'")
        return v


class FleetModel(_Strict):
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    classes: dict[str, ClassSpecModel] = Field(default_factory=dict)
    boards: list[BoardSpecModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _nonempty(self) -> FleetModel:
        return self


# --------------------------------------------------------------------- records
@dataclass(frozen=True)
class Defaults:
    user: str
    key_file: Path
    known_hosts: Path
    remote_dir: str
    trust_new_hosts: bool = False


@dataclass(frozen=True)
class DeviceClassSpec:
    name: str
    arch: str
    cores: int
    freq_mhz: float | None
    memory_mb: int
    accelerator: str
    runtimes: tuple[str, ...]
    cpu_quota: float | None = None
    cpus: str | None = None
    power: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def facts(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "cores": self.cores,
            "freq_mhz": self.freq_mhz,
            "memory_mb": self.memory_mb,
            "accelerator": self.accelerator,
            "runtimes": list(self.runtimes),
            "cpu_quota": self.cpu_quota,
            "cpus": self.cpus,
            "power": dict(self.power),
        }


@dataclass(frozen=True)
class BoardSpec:
    name: str
    class_name: str
    host: str
    port: int
    role: str
    user: str
    key_file: Path
    known_hosts: Path
    emulate: EmulateSpecRecord | None
    energy: EnergySpecRecord | None
    tags: tuple[str, ...]
    remote_dir: str
    trust_new_hosts: bool = False

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def emulated(self) -> bool:
        return self.emulate is not None


@dataclass(frozen=True)
class EmulateSpecRecord:
    cpu_quota: float
    cpus: str
    link_mbit: float | None
    rtt_ms: float | None
    link_shaper: str = "auto"


@dataclass(frozen=True)
class EnergySpecRecord:
    backend: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Fleet:
    path: Path
    defaults: Defaults
    classes: dict[str, DeviceClassSpec]
    boards: tuple[BoardSpec, ...]

    def board(self, name: str) -> BoardSpec:
        for b in self.boards:
            if b.name == name:
                return b
        raise EdgeatlasError(
            f"{self.path}: no board named {name!r}",
            ErrorCode.NOT_FOUND,
            hint=f"boards in this file: {', '.join(b.name for b in self.boards) or 'none'}",
        )

    def devices(self) -> list[BoardSpec]:
        return [b for b in self.boards if b.role == "device"]

    def edges(self) -> list[BoardSpec]:
        return [b for b in self.boards if b.role == "edge"]

    def emulated(self) -> list[BoardSpec]:
        return [b for b in self.boards if b.emulate is not None]

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[BoardSpec]:
        if not names:
            return list(self.boards)
        return [self.board(n) for n in names]


# --------------------------------------------------------------------- loading
def expand_path(value: str) -> Path:
    return Path(value.replace("{data_dir}", str(data_dir()))).expanduser()


class _Locator:
    """Find the line of a table/array entry/field in the raw TOML text (tomllib has no positions)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def _header(self, pattern: re.Pattern[str], nth: int = 0) -> int | None:
        count = 0
        for i, line in enumerate(self.lines):
            if pattern.match(line.strip()):
                if count == nth:
                    return i
                count += 1
        return None

    _BLOCK_END = re.compile(r"^\[\[\s*boards\s*\]\]|^\[\s*classes\.[^\].]+\]$|^\[\s*defaults\s*\]")

    def _field_in_block(self, start: int | None, fld: str | None) -> int | None:
        """1-based line of ``fld`` inside the block starting at 0-based line ``start``."""
        if start is None:
            return None
        if fld is None:
            return start + 1
        key = re.compile(rf"^\s*\"?{re.escape(fld)}\"?\s*=")
        sub = re.compile(rf"^\[\s*\w+\.(\"?[^\]]*\"?\.)?{re.escape(fld)}\s*\]")
        for j in range(start + 1, len(self.lines)):
            s = self.lines[j].strip()
            if self._BLOCK_END.match(s):
                break
            if key.match(s) or sub.match(s):
                return j + 1
        return start + 1

    def board(self, index: int, fld: str | None = None) -> int | None:
        return self._field_in_block(self._header(re.compile(r"^\[\[\s*boards\s*\]\]"), index), fld)

    def klass(self, name: str, fld: str | None = None) -> int | None:
        pat = re.compile(rf"^\[\s*classes\.\"?{re.escape(name)}\"?(\.[^\]]+)?\s*\]")
        start = self._header(pat)
        return self._field_in_block(start, fld)

    def defaults(self, fld: str | None = None) -> int | None:
        return self._field_in_block(self._header(re.compile(r"^\[\s*defaults\s*\]")), fld)

    def key(self, key: str) -> int | None:
        pat = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i, line in enumerate(self.lines):
            if pat.match(line):
                return i + 1
        return None


def _err(path: Path, line: int | None, where: str, message: str, hint: str) -> EdgeatlasError:
    loc = f"{path}:{line}" if line else f"{path}"
    where = f" {where}:" if where else ""
    return EdgeatlasError(f"{loc}:{where} {message}", ErrorCode.INVALID_CONFIG, hint=hint)


def _find_secrets(obj: Any, trail: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).lower() in SECRET_KEYS:
                return (*trail, k)
            found = _find_secrets(v, (*trail, k))
            if found:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _find_secrets(v, (*trail, i))
            if found:
                return found
    return None


def _describe(raw: dict[str, Any], loc: tuple[Any, ...], locator: _Locator) -> tuple[int | None, str, str]:
    """(line, where, field) for a location inside the raw document."""
    if not loc:
        return None, "", ""
    head = loc[0]
    if head == "boards" and len(loc) >= 2 and isinstance(loc[1], int):
        idx = loc[1]
        boards = raw.get("boards") or []
        name = boards[idx].get("name") if idx < len(boards) and isinstance(boards[idx], dict) else None
        fld = ".".join(str(x) for x in loc[2:]) or None
        where = f"board {name!r}" if name else f"boards[{idx}]"
        return locator.board(idx, str(loc[2]) if len(loc) > 2 else None), where, fld or ""
    if head == "classes" and len(loc) >= 2:
        fld = ".".join(str(x) for x in loc[2:]) or None
        return locator.klass(str(loc[1]), str(loc[2]) if len(loc) > 2 else None), f"class {loc[1]!r}", fld or ""
    if head == "defaults":
        fld = ".".join(str(x) for x in loc[1:])
        return locator.defaults(str(loc[1]) if len(loc) > 1 else None), "[defaults]", fld
    return locator.key(str(loc[-1])), "", ".".join(str(x) for x in loc)


DEVICES_SCHEMA = "see the schema in README.md, section devices.toml"
FACTS_SCHEMA = (
    "a device-facts file holds the fields of a devices.toml class: cores, freq_mhz and memory_mb (required), "
    "name, arch, accelerator, cpu_quota, runtimes, cpus, power, description; see examples/devices/phone.json"
)
_HINTS = {
    "missing": "add the field",
    "extra_forbidden": "remove it or fix its spelling",
    "literal_error": "use one of the allowed values",
    "int_parsing": "write a whole number without quotes",
    "int_type": "write a whole number without quotes",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number without quotes",
    "float_type": "write a number without quotes",
    "bool_not_number": "write a number without quotes, not true/false",
    "greater_than": "write a number in the allowed range",
    "greater_than_equal": "write a number in the allowed range",
    "less_than": "write a number in the allowed range",
    "less_than_equal": "write a number in the allowed range",
    "string_type": "write a quoted string",
    "bool_type": "write true or false",
    "list_type": 'write a list, e.g. ["a", "b"]',
    "accelerator": ACCELERATOR_HINT,
}
#: kinds of error whose hint ends with the schema reference
_SCHEMA_KINDS = {"missing", "extra_forbidden"}
_NUMBER_KINDS = {
    "int_parsing",
    "int_type",
    "int_from_float",
    "float_parsing",
    "float_type",
    "bool_not_number",
    "greater_than",
    "greater_than_equal",
}
#: what a numeric fact is, for the fix of a wrong value
_FIELD_HINTS = {
    "cores": "the number of CPU cores, a whole number > 0 (e.g. 4)",
    "memory_mb": "the RAM in MB, a whole number > 0 (e.g. 4096)",
    "freq_mhz": "the CPU clock in MHz, a number > 0 (e.g. 1800)",
    "cpu_quota": "the CPU share in cores, a number > 0 (e.g. 0.5 for half of one core)",
}


def _unwrap(t: Any) -> Any:
    """``X | None`` -> X."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed where ``loc[-1]`` stands (for a did-you-mean), [] if not a model."""
    t: Any = model
    for part in loc[:-1]:
        t = _unwrap(t)
        if typing.get_origin(t) in (list, tuple, dict):
            t = typing.get_args(t)[-1]  # ``part`` is an index or a key
            continue
        if not (isinstance(t, type) and issubclass(t, BaseModel)):
            return []
        f = next((f for n, f in t.model_fields.items() if part in (n, f.alias)), None)
        if f is None:
            return []
        t = f.annotation
    t = _unwrap(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [f.alias or n for n, f in t.model_fields.items()]
    return []


def _model_names() -> set[str]:
    """The names of this schema's models."""
    out, todo = set(), [_Strict]
    while todo:
        c = todo.pop()
        out.add(c.__name__)
        todo.extend(c.__subclasses__())
    return out


def _explain(exc: ValidationError, model: type[BaseModel], schema: str) -> tuple[tuple[Any, ...], str, str, str]:
    """(loc, kind, message, hint) of the first error of ``exc``: loc is the path into the document
    (pydantic's union model names dropped, ``class_`` written ``class``); the message says what is
    wrong with the value given; the hint names the fix (a did-you-mean for an unknown field)."""
    e = exc.errors()[0]
    loc = tuple(x for x in e["loc"] if x not in _model_names())  # pydantic may insert union members' names
    kind = e.get("type", "")
    msg = e.get("msg", "invalid value")
    hint = _HINTS.get(kind, schema)
    fld = str(loc[-1]) if loc else ""
    if kind == "missing":
        msg = "required field is missing"
    elif kind == "extra_forbidden":
        msg = "unknown field"
        close = difflib.get_close_matches(fld, _fields_at(model, loc), n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]!r}? {hint}"
    elif kind not in ("accelerator", "bool_not_number") and isinstance(e.get("input"), str | int | float):
        msg = f"{msg} (got {e['input']!r})"
    if kind in _NUMBER_KINDS and fld in _FIELD_HINTS:
        hint = f"write {fld} as {_FIELD_HINTS[fld]}, without quotes"
    if kind in _SCHEMA_KINDS:
        hint = f"{hint}; {schema}"
    return tuple("class" if x == "class_" else x for x in loc), kind, msg, hint


def _key_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line where the (innermost) key of ``loc`` is written in a JSON or TOML text."""
    lines = text.splitlines()
    start, found = 0, None
    for key in (k for k in loc if isinstance(k, str)):
        pat = re.compile(rf"(^|[{{,\s\[.])[\"']?{re.escape(key)}[\"']?\s*[:=\]]")
        hit = next((i for i in range(start, len(lines)) if pat.search(lines[i])), None)
        if hit is None:
            break
        start, found = hit, hit + 1
    return found


def validate_device_facts(raw: Mapping[str, Any], source: str | Path, text: str | None = None) -> dict[str, Any]:
    """Check one device's facts (a ``--device-facts`` file) against the schema of a devices.toml
    class (:class:`DeviceFactsModel`): unknown fields, wrong types, booleans for numbers, values
    out of range and unknown accelerators are refused. Returns the facts given (numbers as numbers,
    nothing added). An error names ``source``, the field's line (found in ``text``), the field and
    the fix."""
    try:
        model = DeviceFactsModel.model_validate(dict(raw))
    except ValidationError as exc:
        loc, _, msg, hint = _explain(exc, DeviceFactsModel, FACTS_SCHEMA)
        line = _key_line(text, loc) if text and loc else None
        fld = ".".join(str(x) for x in loc)
        raise _err(Path(source), line, "device facts", f"field {fld!r}: {msg}", hint) from None
    return model.model_dump(exclude_unset=True)


def load_devices(path: str | Path, check_keys: bool = True) -> Fleet:
    """Load and validate devices.toml. Raises EdgeatlasError with file:line: where: field: message (fix: ...)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeatlasError(
            f"{path}: file not found",
            ErrorCode.INVALID_CONFIG,
            hint="pass --devices PATH or run from the repository root",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeatlasError(f"{path}: cannot read: {exc}", ErrorCode.INVALID_CONFIG, hint="check the file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"line (\d+)", msg)
        line = int(m.group(1)) if m else None
        raise _err(
            path, line, "", f"TOML syntax error: {msg}", "fix the TOML syntax at that line (https://toml.io)"
        ) from None
    locator = _Locator(text)

    secret = _find_secrets(raw)
    if secret:
        line, where, fld = _describe(raw, secret, locator)
        raise _err(
            path,
            line,
            where,
            f"field {fld or secret[-1]!r}: secrets do not belong in devices.toml",
            'remove it and use key auth: key_file = "~/.ssh/id_ed25519" (load passphrase-protected keys into ssh-agent)',
        )

    try:
        model = FleetModel.model_validate(raw)
    except ValidationError as exc:
        loc, kind, msg, hint = _explain(exc, FleetModel, DEVICES_SCHEMA)
        line, where, fld = _describe(raw, loc, locator)
        if kind == "literal_error" and loc and loc[-1] == "role":
            hint = 'use role = "device" or role = "edge"'
        raise _err(path, line, where, f"field {fld!r}: {msg}", hint) from None

    return _build(path, model, locator, raw, check_keys)


def _build(path: Path, model: FleetModel, locator: _Locator, raw: dict[str, Any], check_keys: bool) -> Fleet:
    d = model.defaults
    defaults = Defaults(
        user=d.user,
        key_file=expand_path(d.key_file),
        known_hosts=expand_path(d.known_hosts),
        remote_dir=d.remote_dir,
        trust_new_hosts=d.trust_new_hosts,
    )
    classes: dict[str, DeviceClassSpec] = {}
    for name, c in model.classes.items():
        classes[name] = DeviceClassSpec(
            name=name,
            arch=c.arch,
            cores=c.cores,
            freq_mhz=c.freq_mhz,
            memory_mb=c.memory_mb,
            accelerator=c.accelerator,
            runtimes=tuple(c.runtimes),
            cpu_quota=c.cpu_quota,
            cpus=c.cpus,
            power=c.power.model_dump() if c.power else {},
            description=c.description,
        )
    seen: dict[str, int] = {}
    addresses: dict[tuple[str, int], str] = {}
    boards: list[BoardSpec] = []
    for i, b in enumerate(model.boards):
        if b.name in seen:
            raise _err(
                path,
                locator.board(i, "name"),
                f"board {b.name!r}",
                f"field 'name': duplicate board name (first defined as boards[{seen[b.name]}])",
                "give every [[boards]] entry a unique name",
            )
        seen[b.name] = i
        if b.class_ not in classes:
            raise _err(
                path,
                locator.board(i, "class"),
                f"board {b.name!r}",
                f"field 'class': unknown class {b.class_!r}",
                f"declare [classes.{b.class_}] or use one of: {', '.join(classes) or '(no classes declared)'}",
            )
        if (b.host, b.port) in addresses:
            raise _err(
                path,
                locator.board(i, "port"),
                f"board {b.name!r}",
                f"field 'port': {b.host}:{b.port} is already used by board {addresses[(b.host, b.port)]!r}",
                "give each board its own host:port",
            )
        addresses[(b.host, b.port)] = b.name
        klass = classes[b.class_]
        emulate = None
        if b.emulate is not None:
            emulate = EmulateSpecRecord(
                b.emulate.cpu_quota, b.emulate.cpus, b.emulate.link_mbit, b.emulate.rtt_ms, b.emulate.link_shaper
            )
        key_file = expand_path(b.key_file) if b.key_file else defaults.key_file
        if check_keys and emulate is None and not key_file.is_file():
            fld = "key_file" if b.key_file else None
            line = locator.board(i, "key_file") if b.key_file else locator.defaults("key_file")
            raise _err(
                path,
                line,
                f"board {b.name!r}",
                f"field {fld or 'defaults.key_file'!r}: key file {key_file} does not exist",
                f"create it with ssh-keygen -t ed25519 -f {key_file} and install the .pub on the board, or point key_file at your key",
            )
        boards.append(
            BoardSpec(
                name=b.name,
                class_name=b.class_,
                host=b.host,
                port=b.port,
                role=b.role,
                user=b.user or defaults.user,
                key_file=key_file,
                known_hosts=defaults.known_hosts,
                emulate=emulate,
                energy=EnergySpecRecord(b.energy.backend, dict(b.energy.options)) if b.energy else None,
                tags=tuple(b.tags),
                remote_dir=b.remote_dir or defaults.remote_dir,
                trust_new_hosts=defaults.trust_new_hosts,
            )
        )
        _ = klass
    return Fleet(path=path, defaults=defaults, classes=classes, boards=tuple(boards))


def sync_fleet_to_store(fleet: Fleet, store: Any) -> None:
    """Record the fleet's classes and boards in the store (idempotent)."""
    for name, c in fleet.classes.items():
        store.upsert_device_class(name, c.facts())
    for b in fleet.boards:
        emulate = None
        if b.emulate is not None:
            emulate = {
                "cpu_quota": b.emulate.cpu_quota,
                "cpus": b.emulate.cpus,
                "link_mbit": b.emulate.link_mbit,
                "rtt_ms": b.emulate.rtt_ms,
            }
        energy = {"backend": b.energy.backend, "options": b.energy.options} if b.energy else None
        store.upsert_board(b.name, b.class_name, b.host, b.port, b.role, emulate=emulate, energy=energy, tags=b.tags)


def fleet_rows(fleet: Fleet) -> list[dict[str, Any]]:
    """One dict per board, as `edgeatlas fleet list` prints it."""
    rows = []
    for b in fleet.boards:
        emu = None
        if b.emulate is not None:
            emu = {
                "cpu_quota": b.emulate.cpu_quota,
                "cpus": b.emulate.cpus,
                "link_mbit": b.emulate.link_mbit,
                "rtt_ms": b.emulate.rtt_ms,
                "link_shaper": b.emulate.link_shaper,
            }
        rows.append(
            {
                "name": b.name,
                "class": b.class_name,
                "role": b.role,
                "address": b.address,
                "emulate": emu,
                "energy": b.energy.backend if b.energy else None,
                "tags": list(b.tags),
            }
        )
    return rows
