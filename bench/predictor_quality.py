"""Predictor quality on the shared datasets, beside the published anchors (HELP README Tables 2-3).

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/predictor_quality.py [--tune] [--json OUT]

Evaluation devices are used only through their 10 shots (HELP reference archs). ``--tune`` prints
the searches, on development devices only, that chose: the k-shot alpha (HELP NB201), the graph view
per dataset (eager InferCell for HELP, pruned "live" cells for LatBench and HW-NAS-Bench-360), the
cell encoding and the reference regressor kind (HW-NAS-Bench-360: pi5 ninapro held out instead of
cifar100). ``--store URL`` adds the per-device-class check on the fleet's own measurements.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from predictors import datasets as D
from predictors import evaluate as E


def help_rows(name: str) -> list[dict]:
    T = D.load(name)
    proto = E.help_protocol(T)
    out = []
    for dev in D.HELP_META_TEST[name]:
        m, _, _ = E.kshot_eval(T, dev, proto)
        out.append({"dataset": name, "device": dev, **m, "help_spearman": D.HELP_PUBLISHED[name][dev]})
    return out


def _lodo(T: D.Table, proto: E.Protocol, kind: str = E.BASE_KIND, alpha: float = E.KSHOT_ALPHA) -> dict[str, float]:
    dev = [d for d in T.devices if d not in D.EVAL_DEVICES[T.name]]
    r = [E.kshot_eval(T, d, proto, references=[x for x in dev if x != d], kind=kind, alpha=alpha)[0] for d in dev]
    return {k: float(np.mean([m[k] for m in r])) for k in ("spearman", "acc10")} | {"n_dev": len(dev)}


def tune() -> None:
    """Development devices only: each in turn plays the unseen device, the others are references."""
    for alpha in (0.01, 0.1, 1.0):
        T = D.load("help-nb201")
        print(f"tune help-nb201 alpha={alpha}: {_lodo(T, E.help_protocol(T), alpha=alpha)}")
    for graph, enc in (("eager", False), ("live", False), ("eager", True)):
        T = D.load_help_nb201(graph=graph, encoding=enc)
        print(f"tune help-nb201 graph={graph} encoding={enc}: {_lodo(T, E.help_protocol(T))}")
    for graph, enc, kind in (("eager", False, "linear"), ("live", False, "linear"), ("live", True, "gbm")):
        T = D.load_latbench(graph=graph, encoding=enc)
        print(f"tune latbench graph={graph} encoding={enc} kind={kind}: {_lodo(T, E.latbench_protocol(T), kind=kind)}")
    for enc, kind in ((False, "linear"), (True, "gbm")):
        T = D.load_hwnasbench360(encoding=enc)
        ref = E.hwnas_reference_matrix(T, "ninapro", ["cifar100", "ninapro"], kind=kind)
        acc = [E.hwnas_energy_eval(T, d, task="ninapro", reference=ref)["acc10"] for d in D.EVAL_DEVICES[T.name]]
        print(f"tune hwnasbench360 energy (ninapro held out) encoding={enc} kind={kind}: mean acc10 {np.mean(acc):.3f}")


def fleet_rows(url: str | None) -> list[dict]:
    """Per device class with full data: the fleet's own measurements (source=probe), held-out slice
    by variant id (predictors.training), per-class regressor. nn-Meter's anchor: 99.0 % within 10 %."""
    from predictors import training as TR
    from registry.errors import EdgeatlasError
    from registry.store import Store

    store = Store.open(url)
    try:
        data = TR.collect(store, source="probe")
    except EdgeatlasError as exc:
        print(f"\nper device class (fleet): no probe measurements in {store.url} ({exc.message}).")
        print("  This figure needs `make demo` data (emulated boards x zoo variants), or pass --store URL.")
        return []
    held = {c: TR._held_out(ids) for c, ids in data.variant_ids.items()}
    out = []
    print(f"\nper device class, full data (fleet measurements in {store.url}; target acc10 >= 0.99, nn-Meter 0.990)")
    for kind in ("linear", "gbm"):
        ok = {c: v for c, v in data.per_class.items() if (~held[c]).sum() >= 20 and held[c].sum() >= 2}
        if not ok:
            print("  every class has < 20 training measurements: measure more variants")
            return out
        pset = TR.fit_set(
            TR.TrainingData(ok, data.variant_ids, data.data_hash, data.n_rows),
            kind=kind,
            train_mask={c: ~held[c] for c in ok},
        )
        sc = TR.score(
            pset, TR.TrainingData(ok, data.variant_ids, data.data_hash, data.n_rows), {c: held[c] for c in ok}
        )
        for c, m in sc["per_class"].items():
            out.append({"dataset": "fleet", "device": c, "kind": kind, **m})
            print(
                f"  {c:<24} {kind:<6} acc10 {m['acc10']:.3f}  acc5 {m['acc5']:.3f}  mape {m['mape']:.1f}%  n {m['n']}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--store", default=None, help="store URL with the fleet's measurements (default: the data dir's)")
    ap.add_argument("--only-fleet", action="store_true", help="only the per-device-class fleet check")
    args = ap.parse_args()
    if args.only_fleet:
        fleet_rows(args.store)
        return
    t0 = time.perf_counter()
    if args.tune:
        tune()
    rows: list[dict] = []
    for name in ("help-nb201", "help-fbnet"):
        r = help_rows(name)
        rows += r
        print(f"\n{name}: 10-shot Spearman (ours vs HELP)")
        for x in r:
            print(
                f"  {x['device']:<15} ours {x['spearman']:.3f}  HELP {x['help_spearman']:.3f}  acc10 {x['acc10']:.3f}  n {x['n']}"
            )
        mean = float(np.mean([x["spearman"] for x in r]))
        print(f"  {'mean':<15} ours {mean:.3f}  HELP {D.HELP_PUBLISHED[name]['mean']:.3f}")
    T = D.load("latbench")
    proto = E.latbench_protocol(T)
    print("\nlatbench evaluation devices, 10-shot (target acc10 >= 0.90)")
    for dev in D.EVAL_DEVICES["latbench"]:
        m, _, _ = E.kshot_eval(T, dev, proto)
        rows.append({"dataset": "latbench", "device": dev, **m})
        print(f"  {dev:<45} acc10 {m['acc10']:.3f}  spearman {m['spearman']:.3f}  mape {m['mape']:.1f}%  n {m['n']}")
    T = D.load("hwnasbench360")
    print("\nhwnasbench360 pi5 cifar100 energy, refs on ninapro+darcy, 10-shot (target acc10 >= 0.90)")
    ref = E.hwnas_reference_matrix(T, "cifar100")
    for dev in ("pi5-litert", "pi5-onnx", "pi5-torchmobile"):
        m = E.hwnas_energy_eval(T, dev, reference=ref)
        rows.append({"dataset": "hwnasbench360-energy-cifar100", "device": dev, **m})
        print(f"  {dev:<20} acc10 {m['acc10']:.3f}  spearman {m['spearman']:.3f}  mape {m['mape']:.1f}%  n {m['n']}")
    rows += fleet_rows(args.store)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
