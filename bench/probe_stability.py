"""Stability: CV of p50 across 5 probe sessions of one variant on one emulated board.

Brings up a temporary emulated board (real sshd, cgroup-v1 quota, cpuset), runs the same
variant 5 times through FleetRunner (force: each run is a fresh agent process), prints the
p50s and their CV. Target < 2 %. Brings the board down at the end.

    .venv/bin/python bench/probe_stability.py [--quota 0.5] [--cpus 1] [--sessions 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe_common import emulated_fleet, host_load, make_cnn  # noqa: E402

from probes.fleet import FleetRunner, ModelTask, SweepConfig, sha256_file  # noqa: E402
from probes.protocol import MeasureProtocol  # noqa: E402


def main() -> None:
    load0 = host_load()
    ap = argparse.ArgumentParser()
    ap.add_argument("--quota", type=float, default=0.5)
    ap.add_argument("--cpus", default="1")
    ap.add_argument("--sessions", type=int, default=5)
    a = ap.parse_args()
    from registry.store import Store

    model = make_cnn(Path(tempfile.mkdtemp()) / "cnn.onnx")
    board = {"name": "stab-1", "emulate": f'{{ cpu_quota = {a.quota}, cpus = "{a.cpus}" }}'}
    with emulated_fleet([board]) as (fleet, tmp):
        store = Store.open(f"sqlite:///{tmp / 'bench.db'}")
        cfg = SweepConfig(protocol=MeasureProtocol(), force=True)  # default protocol: 5 x >= 200 ms
        task = ModelTask("cnn", model, sha256_file(model))
        p50s = []
        for _ in range(a.sessions):
            runner = FleetRunner(store, fleet, cfg, progress=False)
            rep = runner.run(["stab-1"], [task])
            runner.close()
            o = rep.outcomes[0]
            assert o.status == "ok", o
            p50s.append(o.latency_ms)
        store.dispose()
    cv = statistics.stdev(p50s) / statistics.mean(p50s)
    print(f"p50 per probe session (ms): {[round(x, 4) for x in p50s]}")
    print(
        f"stability: CV of p50 across {a.sessions} sessions = {cv * 100:.2f} %   target < 2 %   "
        f"(board: cpu_quota {a.quota}, cpus {a.cpus})"
    )

    print(f"host load average (1 min) before/after: {load0} / {host_load()} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
