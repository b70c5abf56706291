"""Stability: CV of p50 across 5 probe sessions of one variant on one emulated board.

Brings up a temporary emulated board (real sshd, cgroup-v1 quota, cpuset) and runs the same
variant ``--runs`` times through FleetRunner (force: each run is a fresh agent process; default
protocol, 5 sessions of >= 200 ms). It prints two readings of "5 probe sessions":

- within one job: the CV of the protocol's 5 per-session medians (median over the runs);
- across jobs: the CV of the job p50s, each from a fresh agent process.

Side by side, interleaved with the board runs, the same agent and job run on the bare host
(no sshd, no quota, pinned to the same cpu): the host's own noise floor on this shared
machine. Before the runs, ``--regime-s`` seconds of a fixed pure-Python loop on the same cpu show
the CPU's own speed regimes (per-second p50s). Target < 2 %. Brings the board down at the end.

    .venv/bin/python bench/probe_stability.py [--quota 0.5] [--cpus 1] [--runs 5] [--size 112]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe_common import emulated_fleet, host_load, make_cnn  # noqa: E402

from probes.fleet import FleetRunner, ModelTask, SweepConfig, sha256_file  # noqa: E402
from probes.protocol import Job, MeasureProtocol, parse_marked  # noqa: E402


def _cv(xs: list[float]) -> float:
    return statistics.stdev(xs) / statistics.mean(xs) * 100


def _cpu_list(cpus: str) -> list[int]:
    """A cpuset string ("1", "0,2", "0-3") as cpu numbers."""
    out: list[int] = []
    for part in (x.strip() for x in cpus.split(",")):
        if part:
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _host_run(job: Job, cpus: str) -> dict:
    """The same agent and job on the bare host (no sshd, no quota), pinned to ``cpus``."""
    agent = Path(__file__).resolve().parent.parent / "probes" / "agent.py"
    cpu_list = _cpu_list(cpus)
    proc = subprocess.run(
        [sys.executable, str(agent)],
        input=job.to_json(),
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpu_list),
    )
    res = parse_marked(proc.stdout)
    assert res and res["status"] == "ok", proc.stdout[-2000:] + proc.stderr[-2000:]
    return res["stats"]


_REGIMES = """
import os, statistics, sys, time
os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(",")])
now, out = time.perf_counter, []
for _ in range(int(sys.argv[2])):
    w0, r = now(), []
    while now() - w0 < 1.0:
        a = now(); y = 0
        for k in range(40000):
            y += k * k
        r.append((now() - a) * 1e3)
    out.append(statistics.median(r))
print(" ".join(f"{x:.4f}" for x in out))
"""


def _cpu_regimes(cpus: str, seconds: int) -> list[float]:
    """Per-second p50 (ms) of one fixed pure-Python loop pinned to ``cpus``: the CPU's own speed
    over time, with no model, runtime, sshd or quota involved."""
    cpu_list = ",".join(str(c) for c in _cpu_list(cpus))
    out = subprocess.run(
        [sys.executable, "-c", _REGIMES, cpu_list, str(seconds)], capture_output=True, text=True, check=True
    )
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    load0 = host_load()
    ap = argparse.ArgumentParser()
    ap.add_argument("--quota", type=float, default=0.5)
    ap.add_argument("--cpus", default="1")
    ap.add_argument("--runs", "--sessions", type=int, default=5, dest="runs")
    ap.add_argument("--size", type=int, default=112, help="input px of the bench CNN (112: ~9 ms on the host)")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--min-repeat-ms", type=float, default=None, help="session length (default: the protocol's 200 ms)")
    ap.add_argument("--regime-s", type=int, default=10, help="seconds of the CPU speed reading (0: skip, else >= 2)")
    a = ap.parse_args()
    if a.regime_s == 1:
        ap.error("--regime-s: 0 (skip) or at least 2 seconds (a CV needs two readings)")
    from registry.store import Store

    regimes = _cpu_regimes(a.cpus, a.regime_s) if a.regime_s else []

    model = make_cnn(Path(tempfile.mkdtemp()) / "cnn.onnx", channels=a.channels, size=a.size)
    board = {"name": "stab-1", "emulate": f'{{ cpu_quota = {a.quota}, cpus = "{a.cpus}" }}'}
    protocol = MeasureProtocol()  # default protocol: 5 sessions x >= 200 ms
    if a.min_repeat_ms:
        protocol = MeasureProtocol(min_repeat_ms=a.min_repeat_ms)
    host_job = Job(job_id="host", model=str(model), protocol=protocol)
    board_p50, board_within, host_p50, host_within = [], [], [], []
    with emulated_fleet([board]) as (fleet, tmp):
        store = Store.open(f"sqlite:///{tmp / 'bench.db'}")
        cfg = SweepConfig(protocol=protocol, force=True)
        task = ModelTask("cnn", model, sha256_file(model))
        for _ in range(a.runs):
            runner = FleetRunner(store, fleet, cfg, progress=False)
            rep = runner.run(["stab-1"], [task])
            runner.close()
            o = rep.outcomes[0]
            assert o.status == "ok", o
            board_p50.append(o.latency_ms)
            stats = store.list_measurements(board="stab-1")[-1].stats
            board_within.append(_cv(stats["session_medians_ms"]))
            hs = _host_run(host_job, a.cpus)
            host_p50.append(hs["p50_ms"])
            host_within.append(_cv(hs["session_medians_ms"]))
        store.dispose()
    print(
        f"model: bench CNN {a.channels} ch, {a.size} px; board: cpu_quota {a.quota}, cpus {a.cpus}; {a.runs} runs; "
        f"protocol {protocol.repeat} sessions x >= {protocol.min_repeat_ms:g} ms"
    )
    print(f"board p50 per job (ms): {[round(x, 3) for x in board_p50]}")
    print(
        f"host  p50 per job (ms): {[round(x, 3) for x in host_p50]}   (board/host {statistics.mean(board_p50) / statistics.mean(host_p50):.2f}x)"
    )
    bw, hw = statistics.median(board_within), statistics.median(host_within)
    ba, ha = _cv(board_p50), _cv(host_p50)
    print(
        f"stability within a job (CV of the 5 session medians, median of runs): board {bw:.2f} %   bare host {hw:.2f} %   target < 2 %"
    )
    print(
        f"stability across jobs  (CV of job p50s, fresh agent each):           board {ba:.2f} %   bare host {ha:.2f} %   target < 2 %"
    )
    if regimes:
        print(
            f"CPU {a.cpus} speed before the runs: a fixed pure-Python loop, per-second p50 {min(regimes):.2f}-"
            f"{max(regimes):.2f} ms over {len(regimes)} s (CV {_cv(regimes):.1f} %): the CPU itself changes speed between seconds"
        )
    print(f"host load average (1 min) before/after: {load0} / {host_load()} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
