"""Sweep efficiency: wall time of a 2-board sweep / time spent inside inference; then a rerun's uploads.

Two temporary emulated boards (real sshd in cgroup-v1 groups on different cpus), N variants, the
default measurement protocol. "Inside inference" is the sum over jobs of n x mean latency of the
timed runs (what the agent measured). The boards run in parallel, so the ratio can be below 1;
target <= 1.25. Three runs side by side:
1. through the job queue, as `edgeatlas bench run` does (enqueue, then one in-process worker;
   SQLite store), on fresh board caches: the figure that counts;
2. the same with --force and warm caches: must upload 0 bytes;
3. FleetRunner directly (no queue), board caches emptied first, then cached: the queue's cost.

    .venv/bin/python bench/sweep_efficiency.py [--variants 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _probe_common import emulated_fleet, host_load, make_cnn  # noqa: E402

from probes.fleet import FleetRunner, ModelTask, SweepConfig, sha256_file  # noqa: E402
from probes.protocol import MeasureProtocol  # noqa: E402


def main() -> None:
    load0 = host_load()
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
        from probes.queue import QueueWorker, enqueue

        store = Store.open(f"sqlite:///{tmp / 'bench.db'}")
        names = ["sweep-1", "sweep-2"]

        def via_queue(force: bool):
            cfg = SweepConfig(protocol=MeasureProtocol(), force=force)
            t0 = time.monotonic()
            enq = enqueue(store, fleet, cfg, names, tasks)
            rep = QueueWorker(store, fleet, names, base=cfg).run()
            r = rep.sweep_report(enq.run_id)
            return r, time.monotonic() - t0

        def direct(force: bool):
            runner = FleetRunner(store, fleet, SweepConfig(protocol=MeasureProtocol(), force=force), progress=False)
            r = runner.run(names, tasks)
            runner.close()
            return r, r.wall_s

        def wipe_board_caches() -> None:  # the boards are local: their remote dir is ours to empty
            shutil.rmtree(tmp / "remote", ignore_errors=True)

        r1, wall1 = via_queue(False)
        r2, wall2 = via_queue(True)
        wipe_board_caches()
        r3, wall3 = direct(True)
        r4, wall4 = direct(True)
        store.dispose()
    rows = (
        ("queue, first run (bench run path, fresh board caches)", r1, wall1),
        ("queue, second run (cache warm, --force)", r2, wall2),
        ("direct FleetRunner, first run (fresh board caches)", r3, wall3),
        ("direct FleetRunner, second run (cache warm)", r4, wall4),
    )
    for name, r, wall in rows:
        s = r.summary()
        print(
            f"{name}: jobs {s['jobs']} done {s['done']} failed {s['failed']} wall {wall:.2f} s "
            f"inference {s['inference_s']:.2f} s uploaded {s['uploaded_bytes']} B  ratio {wall / r.inference_s:.3f}"
        )
    print(
        f"sweep efficiency (wall / inference), bench run (queue) first run: {wall1 / r1.inference_s:.3f}   target <= 1.25"
    )
    print(f"queue cost: queue / direct, first runs {wall1 / wall3:.3f}, cached runs {wall2 / wall4:.3f}")
    print(f"second run uploaded bytes: {r2.uploaded_bytes}   target 0")

    print(f"host load average (1 min) before/after: {load0} / {host_load()} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
