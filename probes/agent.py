#!/usr/bin/env python3
"""edgeatlas probe agent: runs ON the board.

Self-contained by design: this file is copied to a board that has neither the
registry nor torch, so it imports only the standard library, numpy (a dependency
of every runtime) and the runtime it is asked for (onnxruntime or ai-edge-litert).
``energy.py`` is copied next to it; when it is absent, energy can only be estimated.

``probes/protocol.py`` (controller side) imports :class:`ErrorCode`, the protocol
version and the result marker from here, so the two sides cannot drift.

Usage::

    python3 agent.py --job job.json        # or: python3 agent.py < job.json
    python3 agent.py --facts               # board facts, runtimes, energy backends
    python3 agent.py --serve               # persistent: one job JSON per stdin line,
                                           # one marked result line per job on stdout

``--serve`` keeps one interpreter (with numpy and the runtime imported) for a whole sweep, so
a board under a small CPU quota does not pay the interpreter start and the imports per job.
It first prints ``EDGEATLAS_SERVE {"pid": ..}`` and then answers each job line with one
``EDGEATLAS_RESULT`` line; it exits at end of input. Native noise on stdout is redirected to
stderr, so the result channel carries marked lines only. Each job starts from the affinity
the process had at start (a job's pinning does not leak into the next one).

The result is printed as one line ``EDGEATLAS_RESULT <json>`` on stdout (runtimes may
print noise on stdout; the controller takes the last marked line). The agent never
crashes on a bad job: every failure is a result with an error code and a message.

Measurement protocol (DESIGN.md; after TVM's runner, TFLite benchmark_model, MLPerf):
warm-up of at least ``warmup_runs`` runs and ``warmup_s`` seconds; ``repeat`` sessions,
each of at least ``number`` runs and ``min_repeat_ms``; every inference timed with
``perf_counter_ns``; n/mean/std/cv/min/p50/p90/p99 and per-session medians; intra-op
threads fixed and the process pinned with ``sched_setaffinity`` where allowed;
``cooldown_s`` after the job; a system snapshot before and after. ``graph_opt`` sets
onnxruntime's graph optimization level (``all``, the runtime's default; ``layout``;
``extended``, everything but the hardware-specific layout transforms such as NCHWc;
``basic``; ``disabled``).

Payload codecs (for split jobs) duplicate the tiny encode/decode of
``registry/zoo/codecs.py`` on purpose: the board has no registry. Wire format per codec:
``b"EAP1" | uint32 header length | JSON header | data``; ``fp32``, ``fp16``, ``int8`` (affine
per tensor) and ``pca`` (channel-wise projection on k components; the basis .npz is a file on
the board named in ``codec_params``). A test checks the bytes equal the zoo's encoder.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import signal
import struct
import sys
import time
import traceback
from enum import IntEnum
from typing import Any

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.1.0"
RESULT_MARKER = "EDGEATLAS_RESULT "
FACTS_MARKER = "EDGEATLAS_FACTS "
SERVE_MARKER = "EDGEATLAS_SERVE "


class ErrorCode(IntEnum):
    """Why a job failed. Stable integers: they are stored with every failed measurement."""

    OK = 0
    DEPLOY_ERROR = 1  # upload / remote dir / agent could not start
    RUNTIME_ERROR = 2  # the runtime raised while running
    TIMEOUT = 3  # the job ran past its timeout
    OOM = 4  # out of memory (MemoryError, or killed by the OOM killer)
    UNSUPPORTED_OP = 5  # the runtime lacks a kernel for an op
    MODEL_LOAD_ERROR = 6  # the model file is missing, corrupt or invalid
    RUNTIME_MISSING = 7  # onnxruntime / ai-edge-litert not importable on the board
    CONNECTION_ERROR = 8  # ssh connect / transport failure (controller side)
    HOST_KEY_ERROR = 9  # unknown or changed host key (controller side)
    AUTH_ERROR = 10  # key refused (controller side)
    BAD_JOB = 11  # the job JSON is malformed
    AGENT_ERROR = 12  # the agent itself failed (a bug): message has the traceback
    CODEC_ERROR = 13  # a payload codec failed or is unknown


class JobError(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _Timeout(Exception):
    pass


# ----------------------------------------------------------------------------- system facts


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_quota() -> float | None:
    """CPU share allowed by the cgroup (v1 or v2), in cores; None when unlimited."""
    try:
        for line in (_read("/proc/self/cgroup") or "").splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and "cpu" in parts[1].split(","):
                base = "/sys/fs/cgroup/" + parts[1] + parts[2]
                if not os.path.exists(base + "/cpu.cfs_quota_us"):
                    base = "/sys/fs/cgroup/cpu" + parts[2]
                q = _read(base + "/cpu.cfs_quota_us")
                p = _read(base + "/cpu.cfs_period_us")
                if q and p and int(q) > 0:
                    return int(q) / int(p)
            elif len(parts) == 3 and parts[0] == "0":
                m = _read("/sys/fs/cgroup" + parts[2] + "/cpu.max")
                if m and not m.startswith("max"):
                    q, p = m.split()
                    return int(q) / int(p)
    except (OSError, ValueError):
        return None
    return None


def _temperatures() -> dict[str, float]:
    out: dict[str, float] = {}
    base = "/sys/class/thermal"
    try:
        zones = sorted(z for z in os.listdir(base) if z.startswith("thermal_zone"))
    except OSError:
        return out
    for z in zones:
        t = _read(f"{base}/{z}/temp")
        kind = _read(f"{base}/{z}/type") or z
        if t and t.lstrip("-").isdigit():
            out[f"{z}:{kind}"] = int(t) / 1000.0
    return out


def system_snapshot() -> dict[str, Any]:
    """Volatile state: governor, frequency, temperature, load, memory, peak RSS."""
    cpus = _allowed_cpus()
    freqs: dict[str, float] = {}
    governors: dict[str, str] = {}
    for c in cpus:
        base = f"/sys/devices/system/cpu/cpu{c}/cpufreq"
        f = _read(base + "/scaling_cur_freq")
        if f and f.isdigit():
            freqs[str(c)] = int(f) / 1000.0
        g = _read(base + "/scaling_governor")
        if g:
            governors[str(c)] = g
    if not freqs:
        for line in (_read("/proc/cpuinfo") or "").splitlines():
            if line.startswith("cpu MHz"):
                freqs[str(len(freqs))] = float(line.split(":", 1)[1])
    mem: dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0]) // 1024
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "time": time.time(),
        "freq_mhz": freqs,
        "governor": governors,
        "temperature_c": _temperatures(),
        "loadavg": load,
        "mem_total_mb": mem.get("MemTotal"),
        "mem_available_mb": mem.get("MemAvailable"),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """Peak resident set size: VmHWM (which ``--serve`` resets per job), else ru_maxrss."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            try:
                return int(line.split()[1]) / 1024.0
            except (IndexError, ValueError):
                break
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a persistent agent reports per-job peaks."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def runtime_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = ort.__version__
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        out["onnxruntime"] = None
    try:
        from importlib.metadata import version

        import ai_edge_litert.interpreter  # noqa: F401

        out["litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        out["litert"] = None
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except Exception:  # noqa: BLE001
        out["numpy"] = None
    return out


def board_facts() -> dict[str, Any]:
    """Static facts: what `fleet check` stores for a board."""
    energy_backends: list[str] = []
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import energy  # type: ignore[import-not-found]

        energy_backends = energy.detect_backends()
    except Exception:  # noqa: BLE001
        energy_backends = []
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cores_online": os.cpu_count(),
        "cores_allowed": _allowed_cpus(),
        "cpu_quota": _cpu_quota(),
        "max_freq_mhz": (int(_read(cpufreq + "/cpuinfo_max_freq") or 0) / 1000.0) or None,
        "runtimes": runtime_versions(),
        "energy_backends": energy_backends,
        "clock": {"time": time.time(), "monotonic": time.monotonic()},
        "agent_version": AGENT_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "snapshot": system_snapshot(),
    }


# ----------------------------------------------------------------------------- statistics


def _percentile(sorted_vals: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_vals:
        return float("nan")
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(samples_ms: list[float], sessions: list[list[float]] | None = None) -> dict[str, Any]:
    n = len(samples_ms)
    s = sorted(samples_ms)
    mean = sum(s) / n if n else float("nan")
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else 0.0
    out: dict[str, Any] = {
        "n": n,
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if n and mean > 0 else float("nan"),
        "min_ms": s[0] if s else float("nan"),
        "max_ms": s[-1] if s else float("nan"),
        "p50_ms": _percentile(s, 50),
        "p90_ms": _percentile(s, 90),
        "p99_ms": _percentile(s, 99),
    }
    if sessions is not None:
        out["session_medians_ms"] = [_percentile(sorted(x), 50) for x in sessions]
        out["session_means_ms"] = [sum(x) / len(x) if x else float("nan") for x in sessions]
        out["session_n"] = [len(x) for x in sessions]
    return out


# ----------------------------------------------------------------------------- codecs


def _int8_params(np: Any, x: Any) -> tuple[float, int]:
    lo = float(min(np.min(x), 0.0)) if x.size else 0.0
    hi = float(max(np.max(x), 0.0)) if x.size else 0.0
    scale = (hi - lo) / 255.0
    if not math.isfinite(scale) or scale <= 0.0:
        return 1.0, 0
    return scale, int(np.clip(np.round(-128.0 - lo / scale), -128, 127))


def encode_payload(arr: Any, codec: str, params: dict[str, Any] | None = None) -> bytes:
    """Encode one tensor; byte-identical to registry/zoo/codecs.encode (a test checks it)."""
    import numpy as np

    x = np.asarray(arr)
    header: dict[str, Any] = {"codec": codec, "shape": list(x.shape), "dtype": str(x.dtype)}
    if codec == "fp32":
        body = np.ascontiguousarray(x, dtype="<f4").tobytes()
    elif codec == "fp16":
        body = np.ascontiguousarray(x, dtype="<f2").tobytes()
    elif codec == "int8":
        xf = x.astype(np.float32)
        scale, zp = _int8_params(np, xf)
        header.update(scale=scale, zero_point=zp)
        body = np.clip(np.round(xf / scale) + zp, -128, 127).astype(np.int8).tobytes()
    elif codec == "pca":
        basis, mean = _pca_basis(params or {})
        if x.ndim < 2 or x.shape[1] != basis.shape[1]:
            raise JobError(ErrorCode.CODEC_ERROR, f"pca basis has {basis.shape[1]} channels, payload is {x.shape}")
        flat = np.moveaxis(x.astype(np.float32), 1, -1).reshape(-1, x.shape[1])
        header.update(k=int(basis.shape[0]))
        body = np.ascontiguousarray((flat - mean) @ basis.T, dtype="<f2").tobytes()
    else:
        raise JobError(ErrorCode.CODEC_ERROR, f"unknown codec {codec!r} (known: fp32, fp16, int8, pca)")
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return b"EAP1" + struct.pack("<I", len(head)) + head + body


def decode_payload(blob: bytes, params: dict[str, Any] | None = None) -> Any:
    import numpy as np

    if len(blob) < 8 or blob[:4] != b"EAP1":
        raise JobError(ErrorCode.CODEC_ERROR, "payload does not start with the EAP1 magic")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        meta = json.loads(blob[8 : 8 + hlen])
    except ValueError as e:
        raise JobError(ErrorCode.CODEC_ERROR, f"corrupt payload header: {e}") from e
    body = blob[8 + hlen :]
    shape = tuple(int(d) for d in meta.get("shape", ()))
    count = int(np.prod(shape)) if shape else 1
    codec = meta.get("codec")
    if codec == "fp32":
        return np.frombuffer(body, dtype="<f4", count=count).reshape(shape).astype(np.float32)
    if codec == "fp16":
        return np.frombuffer(body, dtype="<f2", count=count).reshape(shape).astype(np.float32)
    if codec == "int8":
        q = np.frombuffer(body, dtype=np.int8, count=count).reshape(shape).astype(np.float32)
        return ((q - float(meta["zero_point"])) * float(meta["scale"])).astype(np.float32)
    if codec == "pca":
        basis, mean = _pca_basis(params or {})
        k = int(meta["k"])
        rest = (shape[0],) + shape[2:]
        m = int(np.prod(rest))
        z = np.frombuffer(body, dtype="<f2", count=m * k).reshape(m, k).astype(np.float32)
        flat = z @ basis + mean
        return np.moveaxis(flat.reshape(rest + (shape[1],)), -1, 1).astype(np.float32)
    raise JobError(ErrorCode.CODEC_ERROR, f"unknown codec {codec!r} in payload header")


def _pca_basis(params: dict[str, Any]) -> tuple[Any, Any]:
    import numpy as np

    path = params.get("basis")
    if not path:
        raise JobError(ErrorCode.CODEC_ERROR, "pca codec needs codec_params.basis (an .npz with components, mean)")
    with np.load(path, allow_pickle=False) as z:
        return z["components"].astype(np.float32), z["mean"].astype(np.float32)


# ----------------------------------------------------------------------------- runtimes


#: onnxruntime graph optimization levels by the name a job gives (``all`` is onnxruntime's default).
GRAPH_OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}


def graph_opt_problem(graph_opt: Any, runtime: str) -> str | None:
    """What is wrong with asking ``runtime`` for graph level ``graph_opt`` (None if nothing): the one
    check the agent, the sweep config, the CLI and the HTTP API all make."""
    if graph_opt not in GRAPH_OPT_LEVELS:
        return f"unknown graph_opt {graph_opt!r} (use one of {', '.join(GRAPH_OPT_LEVELS)})"
    if graph_opt != "all" and runtime != "onnxruntime":
        return f"graph_opt {graph_opt!r} applies to onnxruntime only, not {runtime}"
    return None


def graph_level(config: dict[str, Any] | None) -> str:
    """The graph level a measurement's config (or a predictor's metrics) names; one that names none
    was measured at onnxruntime's default, ``all`` (imported rows, litert, rows from before the option)."""
    return str((config or {}).get("graph_opt") or "all")


class _Runner:
    """One loaded model: ``run()`` does exactly one inference on fixed inputs."""

    def __init__(self, runtime: str, model: str, threads: int, seed: int = 0, graph_opt: str = "all"):
        self.runtime = runtime
        problem = graph_opt_problem(graph_opt, runtime)
        if problem:
            raise JobError(ErrorCode.BAD_JOB, problem)
        self.version: str | None = None
        if not os.path.exists(model):
            raise JobError(ErrorCode.MODEL_LOAD_ERROR, f"model file not found on the board: {model}")
        if runtime == "onnxruntime":
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise JobError(ErrorCode.RUNTIME_MISSING, f"onnxruntime is not installed on the board: {e}") from e
            import numpy as np

            rng = np.random.default_rng(seed)
            self.version = ort.__version__
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[graph_opt], None)
            if level is None:
                raise JobError(
                    ErrorCode.RUNTIME_MISSING,
                    f"onnxruntime {ort.__version__} on the board has no graph optimization level {graph_opt!r}: "
                    "upgrade onnxruntime on the board, or use extended or all",
                )
            so.graph_optimization_level = level
            try:
                self.sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001
                raise JobError(_classify(e, loading=True), f"onnxruntime could not load {model}: {e}") from e
            self.inputs = {}
            for i in self.sess.get_inputs():
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
                self.inputs[i.name] = _random_input(np, rng, i.type, shape)
            self.output_names = [o.name for o in self.sess.get_outputs()]
        elif runtime == "litert":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError as e:
                raise JobError(ErrorCode.RUNTIME_MISSING, f"ai-edge-litert is not installed on the board: {e}") from e
            import numpy as np

            rng = np.random.default_rng(seed)
            try:
                from importlib.metadata import version

                self.version = version("ai-edge-litert")
            except Exception:  # noqa: BLE001
                self.version = None
            try:
                self.interp = Interpreter(model_path=model, num_threads=threads)
                self.interp.allocate_tensors()
            except Exception as e:  # noqa: BLE001
                raise JobError(_classify(e, loading=True), f"ai-edge-litert could not load {model}: {e}") from e
            self.in_details = self.interp.get_input_details()
            self.out_details = self.interp.get_output_details()
            self.inputs = {}
            for d in self.in_details:
                self.inputs[d["name"]] = _random_input(np, rng, str(np.dtype(d["dtype"])), list(d["shape"]))
        else:
            raise JobError(ErrorCode.BAD_JOB, f"unknown runtime {runtime!r} (use onnxruntime or litert)")

    def set_input(self, arr: Any) -> None:
        name = next(iter(self.inputs))
        self.inputs[name] = arr.astype(self.inputs[name].dtype, copy=False)

    def run(self) -> Any:
        if self.runtime == "onnxruntime":
            return self.sess.run(self.output_names, self.inputs)[0]
        for d in self.in_details:
            self.interp.set_tensor(d["index"], self.inputs[d["name"]])
        self.interp.invoke()
        return self.interp.get_tensor(self.out_details[0]["index"])


def _random_input(np: Any, rng: Any, type_name: str, shape: list[int]) -> Any:
    t = type_name.lower()
    if "int8" in t and "uint8" not in t:
        return rng.integers(-128, 127, size=shape, dtype=np.int8)
    if "uint8" in t:
        return rng.integers(0, 255, size=shape, dtype=np.uint8)
    if "int64" in t:
        return rng.integers(0, 10, size=shape, dtype=np.int64)
    if "int32" in t:
        return rng.integers(0, 10, size=shape, dtype=np.int32)
    if "float16" in t:
        return rng.standard_normal(size=shape).astype(np.float16)
    return rng.standard_normal(size=shape).astype(np.float32)


def _classify(e: BaseException, loading: bool = False) -> ErrorCode:
    if isinstance(e, MemoryError):
        return ErrorCode.OOM
    if isinstance(e, _Timeout):
        return ErrorCode.TIMEOUT
    text = str(e).lower()
    if "not_implemented" in text or "could not find an implementation" in text or "unsupported" in text:
        return ErrorCode.UNSUPPORTED_OP
    if "bad_alloc" in text or "out of memory" in text or "failed to allocate" in text:
        return ErrorCode.OOM
    return ErrorCode.MODEL_LOAD_ERROR if loading else ErrorCode.RUNTIME_ERROR


# ----------------------------------------------------------------------------- measurement


def _pin(threads: int, cpus: list[int] | None) -> list[int]:
    """Pin to the job's cpus (or the first ``threads`` allowed cpus) where the OS allows it."""
    allowed = _allowed_cpus()
    want = [c for c in (cpus or allowed[: max(1, threads)]) if c in allowed] or allowed
    try:
        os.sched_setaffinity(0, want)
    except (AttributeError, OSError):
        return allowed
    return want


# drift reference: every DRIFT_EVERY_MS of model runs, DRIFT_CHUNK_MS (at least one run) of the
# reference model, timed apart from the model's samples
DRIFT_EVERY_MS = 50.0
DRIFT_CHUNK_MS = 10.0


def measure(
    fn: Any, p: dict[str, Any], ref: Any = None, ref_samples: list[float] | None = None
) -> tuple[list[list[float]], dict[str, Any]]:
    """Warm up, then ``repeat`` timed sessions. Returns per-session samples (ms) and details.

    With ``ref`` (a drift reference: one inference of a fixed model), ``ref`` is warmed up too and
    interleaved with the timed runs (``DRIFT_CHUNK_MS`` of it after every ``DRIFT_EVERY_MS`` of the
    model); its run times go to ``ref_samples``, never into the model's."""
    now = time.perf_counter_ns
    warm_n = 0
    t0 = now()
    warm_ns = int(p["warmup_s"] * 1e9)
    while warm_n < p["warmup_runs"] or now() - t0 < warm_ns:
        fn()
        if ref is not None:
            ref()
        warm_n += 1
    every_ns, chunk_ns = int(DRIFT_EVERY_MS * 1e6), int(DRIFT_CHUNK_MS * 1e6)
    last_ref = now()
    sessions: list[list[float]] = []
    min_ns = int(p["min_repeat_ms"] * 1e6)
    for _ in range(p["repeat"]):
        samples: list[float] = []
        s0 = now()
        while len(samples) < p["number"] or now() - s0 < min_ns:
            a = now()
            fn()
            b = now()
            samples.append((b - a) / 1e6)
            if ref is not None and ref_samples is not None and b - last_ref >= every_ns:
                c0 = now()
                while True:
                    a = now()
                    ref()
                    last_ref = now()
                    ref_samples.append((last_ref - a) / 1e6)
                    if last_ref - c0 >= chunk_ns:
                        break
        sessions.append(samples)
        if ref is not None and ref_samples is not None and not ref_samples:
            a = now()  # a session shorter than DRIFT_EVERY_MS still gets one reference run
            ref()
            last_ref = now()
            ref_samples.append((last_ref - a) / 1e6)
    return sessions, {"warmup_runs_done": warm_n, "warmup_s_done": (now() - t0) / 1e9}


DEFAULT_PROTOCOL = {
    "warmup_runs": 1,
    "warmup_s": 0.5,
    "repeat": 5,
    "number": 10,
    "min_repeat_ms": 200.0,
    "cooldown_s": 0.0,
}


def _energy(job: dict[str, Any], latency_mean_ms: float, meter: Any, n_runs: int) -> tuple[float | None, str | None]:
    if meter is not None:
        try:
            mj_total = meter.stop()
        except Exception as e:  # noqa: BLE001 - a failed sensor read falls back to the model
            meter = None
            sys.stderr.write(f"energy backend failed: {e}\n")
        else:
            if mj_total is not None and n_runs:
                return mj_total / n_runs, f"measured:{meter.name}"
    pm = job.get("power_model") or {}
    active = pm.get("active_w")
    if active is not None:
        # mJ = W * ms: the declared active power over one mean inference.
        return float(active) * latency_mean_ms, "estimated:power-model-active_w"
    return None, None


def _open_meter(job: dict[str, Any]) -> Any:
    spec = job.get("energy") or None
    if not spec or not spec.get("backend"):
        return None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import energy  # type: ignore[import-not-found]

    return energy.open_backend(spec["backend"], spec.get("options") or {})


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job; always returns a result dict (status ok or error)."""
    started = time.time()
    result: dict[str, Any] = {
        "job_id": job.get("job_id"),
        "kind": job.get("kind", "model"),
        "status": "error",
        "error_code": int(ErrorCode.AGENT_ERROR),
        "error_name": ErrorCode.AGENT_ERROR.name,
        "error_message": None,
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": AGENT_VERSION,
    }
    timeout_s = float(job.get("timeout_s") or 0)
    old_handler = None
    if timeout_s > 0 and hasattr(signal, "SIGALRM"):

        def _alarm(signum: int, frame: Any) -> None:
            raise _Timeout(f"job exceeded its timeout of {timeout_s:g} s")

        old_handler = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        result["system_before"] = system_snapshot()
        result.update(_run_job(job))
        result["status"] = "ok"
        result["error_code"] = int(ErrorCode.OK)
        result["error_name"] = ErrorCode.OK.name
    except JobError as e:
        result["error_code"] = int(e.code)
        result["error_name"] = e.code.name
        result["error_message"] = e.message
    except _Timeout as e:
        result["error_code"] = int(ErrorCode.TIMEOUT)
        result["error_name"] = ErrorCode.TIMEOUT.name
        result["error_message"] = str(e)
    except MemoryError as e:
        result["error_code"] = int(ErrorCode.OOM)
        result["error_name"] = ErrorCode.OOM.name
        result["error_message"] = f"out of memory: {e}"
    except Exception as e:  # noqa: BLE001 - failures are data
        code = _classify(e)
        result["error_code"] = int(code)
        result["error_name"] = code.name
        result["error_message"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
    finally:
        if old_handler is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
    result["system_after"] = system_snapshot()
    result["wall_s"] = time.time() - started
    cooldown = float((job.get("protocol") or {}).get("cooldown_s", 0) or 0)
    if cooldown > 0:
        time.sleep(cooldown)
    return result


def _protocol(job: dict[str, Any]) -> dict[str, Any]:
    p = dict(DEFAULT_PROTOCOL)
    p.update({k: v for k, v in (job.get("protocol") or {}).items() if v is not None})
    if int(p["repeat"]) < 1 or int(p["number"]) < 1:
        raise JobError(ErrorCode.BAD_JOB, "protocol.repeat and protocol.number must be >= 1")
    p["repeat"], p["number"], p["warmup_runs"] = int(p["repeat"]), int(p["number"]), int(p["warmup_runs"])
    return p


def _timed_model(job: dict[str, Any], model: str, p: dict[str, Any], set_input: Any = None) -> dict[str, Any]:
    threads = int(job.get("threads") or 1)
    runtime = job.get("runtime") or "onnxruntime"
    graph_opt = str(job.get("graph_opt") or "all")
    pinned = _pin(threads, job.get("cpus")) if job.get("pin", True) else _allowed_cpus()
    t_load = time.perf_counter_ns()
    runner = _Runner(runtime, model, threads, graph_opt=graph_opt)
    load_ms = (time.perf_counter_ns() - t_load) / 1e6
    if set_input is not None:
        runner.set_input(set_input)
    ref, ref_samples = None, []
    if job.get("drift_ref"):
        if (job.get("energy") or {}).get("backend"):
            raise JobError(
                ErrorCode.BAD_JOB,
                "drift_ref interleaves a reference model, whose runs the energy meter would count: "
                "measure energy without the drift reference",
            )
        ref = _Runner(runtime, str(job["drift_ref"]), threads, graph_opt=graph_opt)
    meter = _open_meter(job)
    try:
        if meter is not None:
            # the meter spans the timed sessions only (not the warm-up)
            sessions, warm = measure(runner.run, {**p, "repeat": 0})
            meter.start()
            sessions, _ = measure(runner.run, {**p, "warmup_runs": 0, "warmup_s": 0})
        else:
            sessions, warm = measure(runner.run, p, ref.run if ref else None, ref_samples)
    except MemoryError:
        raise
    except _Timeout:
        raise
    except JobError:
        raise
    except Exception as e:  # noqa: BLE001
        raise JobError(_classify(e), f"{runtime} failed while running {os.path.basename(model)}: {e}") from e
    flat = [x for s in sessions for x in s]
    stats = summarize(flat, sessions)
    if ref_samples:
        ref_sorted = sorted(ref_samples)
        ref_p50, ref_min = _percentile(ref_sorted, 50), ref_sorted[0]
        # the job's latency in units of the reference's, measured in the same seconds: a change of
        # the host's speed during the job moves both (README: the drift reference)
        stats.update(
            ref_p50_ms=ref_p50,
            ref_min_ms=ref_min,
            ref_n=len(ref_samples),
            p50_per_ref=stats["p50_ms"] / ref_p50,
            min_per_ref=stats["min_ms"] / ref_min,
        )
    energy_mj, energy_source = _energy(job, stats["mean_ms"], meter, len(flat))
    return {
        "runner": runner,
        "stats": stats,
        "latency_ms": stats["p50_ms"],
        "energy_mj": energy_mj,
        "energy_source": energy_source,
        "runtime": runtime,
        "runtime_version": runner.version,
        "threads": threads,
        "graph_opt": graph_opt,
        "pinned_cpus": pinned,
        "load_ms": load_ms,
        "warmup": warm,
    }


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    kind = job.get("kind", "model")
    p = _protocol(job)
    out: dict[str, Any] = {"protocol": p}
    if kind == "model":
        r = _timed_model(job, _need(job, "model"), p)
        r.pop("runner")
        out.update(r)
    elif kind == "split_head":
        # head on the device; then encode its output once per codec, timed the same way
        r = _timed_model(job, _need(job, "model"), p)
        runner = r.pop("runner")
        out.update(r)
        y = runner.run()
        codecs: dict[str, Any] = {}
        payload_dir = job.get("payload_dir") or "."
        os.makedirs(payload_dir, exist_ok=True)
        for codec in job.get("codecs") or ["fp32"]:
            cp = (job.get("codec_params") or {}).get(codec) or {}
            blob = encode_payload(y, codec, cp)
            sessions, _ = measure(lambda c=codec, cp=cp: encode_payload(y, c, cp), _codec_protocol(p))
            path = os.path.join(payload_dir, f"payload-{job.get('job_id') or 'x'}-{codec}.bin")
            with open(path, "wb") as f:
                f.write(blob)
            err = float(abs(decode_payload(blob, cp) - y).max())
            codecs[codec] = {
                "encode": summarize([x for s in sessions for x in s], sessions),
                "payload_bytes": len(blob),
                "payload_path": path,
                "max_abs_error": err,
            }
        out["codecs"] = codecs
        out["payload_shape"] = list(y.shape)
    elif kind == "split_tail":
        # decode each received payload (timed) and run the tail on it (timed)
        payloads = job.get("payloads") or {}
        if not payloads:
            raise JobError(ErrorCode.BAD_JOB, "split_tail needs payloads: {codec: path}")
        codecs = {}
        first = None
        for codec, path in payloads.items():
            cp = (job.get("codec_params") or {}).get(codec) or {}
            try:
                with open(path, "rb") as f:
                    blob = f.read()
            except OSError as e:
                raise JobError(ErrorCode.DEPLOY_ERROR, f"payload missing on the edge: {path}: {e}") from e
            arr = decode_payload(blob, cp)
            sessions, _ = measure(lambda b=blob, cp=cp: decode_payload(b, cp), _codec_protocol(p))
            codecs[codec] = {"decode": summarize([x for s in sessions for x in s], sessions)}
            first = arr if first is None else first
        r = _timed_model(job, _need(job, "model"), p, set_input=first)
        r.pop("runner")
        out.update(r)
        out["codecs"] = codecs
    else:
        raise JobError(ErrorCode.BAD_JOB, f"unknown job kind {kind!r} (model, split_head, split_tail)")
    return out


def _codec_protocol(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "warmup_s": 0.05, "min_repeat_ms": min(50.0, p["min_repeat_ms"]), "repeat": max(1, p["repeat"])}


def _need(job: dict[str, Any], key: str) -> Any:
    if not job.get(key):
        raise JobError(ErrorCode.BAD_JOB, f"job has no {key!r}")
    return job[key]


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _clean(o: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _result_line(result: dict[str, Any]) -> str:
    return RESULT_MARKER + json.dumps(_clean(result), default=_json_default)


def _bad_job(message: str) -> dict[str, Any]:
    return {
        "status": "error",
        "error_code": int(ErrorCode.BAD_JOB),
        "error_name": ErrorCode.BAD_JOB.name,
        "error_message": message,
        "protocol_version": PROTOCOL_VERSION,
    }


def serve(stdin: Any = None) -> int:
    """Persistent mode: one job per input line, one marked result line per job, until EOF."""
    stdin = stdin or sys.stdin
    try:  # the protocol keeps the real stdout; anything else written to fd 1 goes to stderr
        out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
    except OSError:
        out = sys.stdout
    initial = _allowed_cpus()  # the runtime is imported by the first job, then stays imported
    out.write(SERVE_MARKER + json.dumps({"pid": os.getpid(), "protocol_version": PROTOCOL_VERSION}) + "\n")
    out.flush()
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            job = json.loads(line)
            if not isinstance(job, dict):
                raise ValueError("a job is a JSON object")
        except ValueError as e:
            result = _bad_job(f"could not read the job: {e}")
        else:
            try:
                os.sched_setaffinity(0, initial)
            except (AttributeError, OSError):
                pass
            per_job = _reset_peak_rss()
            result = run_job(job)
            result["peak_rss_scope"] = "job" if per_job else "process"
        out.write(_result_line(result) + "\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in argv:
        return serve()
    if "--facts" in argv:
        print(FACTS_MARKER + json.dumps(_clean(board_facts()), default=_json_default), flush=True)
        return 0
    try:
        if "--job" in argv:
            with open(argv[argv.index("--job") + 1]) as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        job = json.loads(text)
        if not isinstance(job, dict):
            raise ValueError("a job is a JSON object")
    except (OSError, ValueError, IndexError) as e:
        result = _bad_job(f"could not read the job: {e}")
    else:
        result = run_job(job)
    line = _result_line(result)
    if "--out" in argv:
        with open(argv[argv.index("--out") + 1], "w") as f:
            f.write(line[len(RESULT_MARKER) :])
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
