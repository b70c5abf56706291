"""Sweep efficiency: wall time of a 2-board sweep / time spent inside inference; then a rerun's uploads.

Two temporary emulated boards (real sshd in cgroup-v1 groups on different cpus), N variants, the
default measurement protocol. "Inside inference" is the sum over jobs of n x mean latency of the
timed runs (what the agent measured). The boards run in parallel, so the ratio can be below 1;
target <= 1.25. A second run (force, same artifacts) must upload 0 bytes.

    .venv/bin/python bench/sweep_efficiency.py [--variants 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe_common import emulated_fleet, make_cnn  # noqa: E402

from probes.fleet import FleetRunner, ModelTask, SweepConfig, sha256_file  # noqa: E402
from probes.protocol import MeasureProtocol  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--quota", type=float, default=0.5)
    a = ap.parse_args()
    from registry.store import Store

    d = Path(tempfile.mkdtemp())
    tasks = []
    for i in range(a.variants):
        m = make_cnn(d / f"cnn{i}.onnx", channels=16 + 4 * i)
        tasks.append(ModelTask(f"cnn{i}", m, sha256_file(m)))
    boards = [
        {"name": "sweep-1", "emulate": f'{{ cpu_quota = {a.quota}, cpus = "0" }}'},
        {"name": "sweep-2", "emulate": f'{{ cpu_quota = {a.quota}, cpus = "1" }}'},
    ]
    with emulated_fleet(boards) as (fleet, tmp):
        store = Store.open(f"sqlite:///{tmp / 'bench.db'}")
        cfg = SweepConfig(protocol=MeasureProtocol())
        first = FleetRunner(store, fleet, cfg, progress=False)
        r1 = first.run(["sweep-1", "sweep-2"], tasks)
        first.close()
        second = FleetRunner(store, fleet, SweepConfig(protocol=MeasureProtocol(), force=True), progress=False)
        r2 = second.run(["sweep-1", "sweep-2"], tasks)
        second.close()
        store.dispose()
    for name, r in (("first run", r1), ("second run (cache warm, --force)", r2)):
        s = r.summary()
        print(
            f"{name}: jobs {s['jobs']} done {s['done']} failed {s['failed']} wall {s['wall_s']:.2f} s "
            f"inference {s['inference_s']:.2f} s uploaded {s['uploaded_bytes']} B"
        )
    print(f"sweep efficiency (wall / inference), first run: {r1.wall_s / r1.inference_s:.3f}   target <= 1.25")
    print(f"sweep efficiency (wall / inference), cached run: {r2.wall_s / r2.inference_s:.3f}")
    print(f"second run uploaded bytes: {r2.uploaded_bytes}   target 0")


if __name__ == "__main__":
    main()
