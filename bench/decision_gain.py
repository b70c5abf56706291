"""Decision-table gain: adaptive split vs every fixed split, on measured end-to-end times (issue 7).

Setup (real parts): the shipped emulated boards little-1 (device: a quarter of a host core) and
edge-1 (a full core) in a temporary EDGEATLAS_HOME; one CNN of the bench zoo (see
bench/selection_regret.py: random conv features + a ridge readout fitted on the generated
``gratings-v1`` task, accuracy measured) with split points after conv stages 2 and 3 and after
pooling, each with payload codecs fp32 / fp16 / int8 (accuracy delta measured).

1. Run A: every candidate is benchmarked with the probe agent (whole model on little-1, whole
   model on edge-1, every split: head on little-1, tail on edge-1, each codec).
2. The decision table comes from run A through the library (registry.selector.recommend.
   decision_table_for, the code behind ``edgeatlas decision-table``) for latency-first prefs
   (minimise end-to-end latency, accuracy loss from a codec at most 0.5 points).
3. Run B: every candidate is benchmarked again (independent measurements, ``force``), and the
   table's picks and every fixed split are scored on run B's measured times.

End-to-end time = measured head + encode (device) + measured decode + tail (edge) + transfer.
Transfer is *computed*, not measured: payload bytes x 8 / bandwidth + RTT, because the emulated
link of a board has one fixed rate and RTT (a user-space proxy) and a sweep over bandwidths
needs many; this is the network model of the selector. Device energy (same table with
energy-first prefs) = active_w x measured device time + radio_nj_per_byte x payload bytes:
estimated:power-model (this host has no energy sensor).

Published anchors, quoted, not reproduced (their setups differ: real phones, WiFi/LTE/3G, 8
DNNs; here one small CNN on emulated boards):
- Neurosurgeon (Kang et al., ASPLOS 2017, abstract): end-to-end latency improved 3.1x on
  average and up to 40.7x, mobile energy reduced 59.5 % on average and up to 94.7 %, both
  against the cloud-only status quo.
- Chimera (NEC Labs, "Context-Aware Splittable Deep Multitasking Models for Edge
  Intelligence", abstract as listed on nec-labs.com): device-edge collaborative inference
  "~1.35x faster" with its context-aware splitting decisions. The baseline of that figure and
  its per-network breakdown are in the paper body, which could not be checked here.

Run: .venv/bin/python bench/decision_gain.py [--width 32 --resolution 96]
Needs root (sshd, cgroup v1). Takes about 2-4 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from selection_regret import build_zoo, measure_models, measure_splits, measured_table, shipped_fleet  # noqa: E402

DEVICE, EDGE = "little-1", "edge-1"
NEUROSURGEON = {"latency_avg": 3.1, "latency_max": 40.7, "energy_avg_pct": 59.5, "energy_max_pct": 94.7}
CHIMERA_SPEEDUP = 1.35


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def prefs_for(objective: str, min_accuracy: float) -> dict:
    w = {"accuracy": 0.0, "latency": 0.0, "energy": 0.0}
    w[objective] = 1.0
    return {
        "app": f"decision-gain-{objective}",
        "constraints": {"min_accuracy": min_accuracy},
        "weights": w,
        "utility": {"latency": {"shape": "linear", "zero_ms": 1e7}, "energy": {"shape": "linear", "zero_mj": 1e7}},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--bandwidths", default="0.25,0.5,1,2,5,10,20,50,100,200,500")
    ap.add_argument("--rtts", default="5,20,50")
    ap.add_argument("--plot", default=None, help="write the latency decision-table plot here (PNG)")
    args = ap.parse_args()
    t0 = time.monotonic()

    from registry.config import sync_fleet_to_store
    from registry.selector.candidates import Network, evaluate
    from registry.selector.prefs import prefs_from_dict
    from registry.selector.recommend import decision_table_for
    from registry.store import Store

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)

    bws, rtts = _floats(args.bandwidths), _floats(args.rtts)
    with shipped_fleet([DEVICE, EDGE]) as (fleet, tmp):
        url_a, url_b = f"sqlite:///{tmp / 'run-a.db'}", f"sqlite:///{tmp / 'run-b.db'}"
        store = Store.open(url_a)
        sync_fleet_to_store(fleet, store)
        (vid,) = build_zoo(store, [args.width], [args.resolution], log=lambda m: None)
        v = store.get_variant(vid)
        store.dispose()
        shutil.copy(tmp / "run-a.db", tmp / "run-b.db")  # same zoo, independent measurements
        log(f"variant {vid}: accuracy {v.accuracy:.3f} (measured:gratings-v1), input {np.prod(v.input_shape) * 4} B")
        stores = {}
        for run, url in (("A", url_a), ("B", url_b)):
            s = Store.open(url)
            for b in (DEVICE, EDGE):
                measure_models(s, fleet, b, [vid])
            r = measure_splits(s, fleet, DEVICE, EDGE, [vid])
            log(f"run {run}: measured whole model on {DEVICE} and {EDGE}, splits {r.summary()}")
            stores[run] = s
        truth, _ = measured_table(stores["B"], fleet, DEVICE, EDGE)
        power = fleet.classes[fleet.board(DEVICE).class_name].power
        radio = float(power["radio_nj_per_byte"])
        keys = truth.keys()
        dev_i = truth.split.tolist().index("all-on-device")
        edge_i = truth.split.tolist().index("all-on-edge")

        for objective in ("latency", "energy"):
            prefs = prefs_from_dict(prefs_for(objective, v.accuracy - 0.005), source=f"{objective}-first")
            dt = decision_table_for(stores["A"], device=DEVICE, edge=EDGE, bandwidths_mbit=bws, rtts_ms=rtts,
                                    prefs=prefs)  # fmt: skip
            if objective == "latency" and args.plot:
                from registry.selector.plots import plot_decision_table

                plot_decision_table(dt, Path(args.plot))
            print()
            print(f"== {objective}-first decision table from run A ({DEVICE} -> {EDGE}), scored on run B ==")
            for r in dt.rows:
                print(f"  RTT {r.rtt_ms:4g} ms  {r.bandwidth_min_mbit:7g}-{r.bandwidth_max_mbit:<7g} Mbit/s -> "
                      f"{r.split}/{r.codec}")  # fmt: skip
            cost_rows, picks = [], []
            for cell in dt.grid:
                ev = evaluate(truth, Network(cell["bandwidth_mbit"], cell["rtt_ms"]), prefs, radio)
                cost = ev.latency_ms if objective == "latency" else ev.device_energy_mj
                cost = np.where(ev.feasible, cost, np.inf)  # a codec losing accuracy is not a valid fixed split
                cost_rows.append(cost)
                picks.append(keys.index(cell["key"]))
            C = np.vstack(cost_rows)  # (cells, candidates), measured (run B)
            adaptive = C[np.arange(len(picks)), picks]
            fixed_mean = np.where(np.isfinite(C).all(0), C.mean(0), np.inf)
            best_fixed = int(np.argmin(fixed_mean))
            unit = "ms" if objective == "latency" else "mJ"
            print(f"  mean over {len(picks)} network cells: adaptive {adaptive.mean():.2f} {unit}; best fixed "
                  f"{keys[best_fixed]} {fixed_mean[best_fixed]:.2f} {unit}; all-on-device {fixed_mean[dev_i]:.2f}; "
                  f"all-on-edge {fixed_mean[edge_i]:.2f}")  # fmt: skip
            beats = all(adaptive.mean() < fixed_mean[j] for j in range(len(keys)) if np.isfinite(fixed_mean[j]))
            worse_cells = int((adaptive > C.min(1) * 1.0001).sum())
            print(f"  beats every fixed split on the mean: {beats}; cells where a fixed split was better on run B: "
                  f"{worse_cells} of {len(picks)} (oracle regret {100 * (adaptive / C.min(1) - 1).max():.1f} % max)")  # fmt: skip
            if objective == "latency":
                rd, re_ = C[:, dev_i] / adaptive, C[:, edge_i] / adaptive
                print(f"  speed-up vs all-on-device: mean {rd.mean():.2f}x, max {rd.max():.2f}x; "
                      f"vs all-on-edge: mean {re_.mean():.2f}x, max {re_.max():.2f}x")  # fmt: skip
                print(f"  published: Neurosurgeon {NEUROSURGEON['latency_avg']}x mean, up to "
                      f"{NEUROSURGEON['latency_max']}x (vs cloud-only; ASPLOS 2017 abstract); Chimera ~"
                      f"{CHIMERA_SPEEDUP}x faster with context-aware splits (abstract; baseline not checked)")  # fmt: skip
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    sd = 100 * (1 - adaptive / C[:, dev_i])
                    se = 100 * (1 - adaptive / C[:, edge_i])
                print(f"  device energy saved vs all-on-device: mean {sd.mean():.1f} %, max {sd.max():.1f} %; "
                      f"vs all-on-edge: mean {se.mean():.1f} %, max {se.max():.1f} % (estimated:power-model)")  # fmt: skip
                print(f"  published: Neurosurgeon {NEUROSURGEON['energy_avg_pct']} % mean, up to "
                      f"{NEUROSURGEON['energy_max_pct']} % (vs cloud-only, measured on a phone)")  # fmt: skip
        for s in stores.values():
            s.dispose()
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
