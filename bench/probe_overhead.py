"""Probe overhead: p50 of the probe agent / p50 of a bare in-process onnxruntime loop.

Same model, same host core (both pinned to one cpu), same thread count (1), measured side by
side in one run, interleaved (bare, probe, bare, probe, ...) so drift hits both. Target <= 1.03.

    .venv/bin/python bench/probe_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe_common import host_load, make_cnn  # noqa: E402

from probes import agent  # noqa: E402
from probes.protocol import parse_marked  # noqa: E402


def bare_p50(model: Path, cpu: int, seconds: float) -> float:
    import numpy as np
    import onnxruntime as ort

    os.sched_setaffinity(0, {cpu})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 56, 56)).astype(np.float32)}
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        sess.run(None, x)
    samples = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        a = time.perf_counter_ns()
        sess.run(None, x)
        samples.append((time.perf_counter_ns() - a) / 1e6)
    return statistics.median(samples)


def probe_p50(model: Path, cpu: int, seconds: float) -> float:
    job = {
        "job_id": "overhead",
        "model": str(model),
        "threads": 1,
        "cpus": [cpu],
        "protocol": {"warmup_s": 0.5, "repeat": 5, "number": 10, "min_repeat_ms": seconds * 1000 / 5},
    }
    p = subprocess.run(
        [sys.executable, agent.__file__], input=json.dumps(job), capture_output=True, text=True, check=True
    )
    r = parse_marked(p.stdout)
    assert r and r["status"] == "ok", r
    return r["stats"]["p50_ms"]


def main() -> None:
    load0 = host_load()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    a = ap.parse_args()
    model = make_cnn(Path(tempfile.mkdtemp()) / "cnn.onnx")
    bare, probe = [], []
    for _ in range(a.rounds):
        bare.append(bare_p50(model, a.cpu, a.seconds))
        probe.append(probe_p50(model, a.cpu, a.seconds))
    b, p = statistics.median(bare), statistics.median(probe)
    print(f"bare in-process loop p50s (ms): {[round(x, 4) for x in bare]}")
    print(f"probe agent p50s (ms):          {[round(x, 4) for x in probe]}")
    print(f"probe overhead ratio (probe p50 / bare p50): {p / b:.4f}   target <= 1.03   cpu {a.cpu}, 1 thread")

    print(f"host load average (1 min) before/after: {load0} / {host_load()} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
