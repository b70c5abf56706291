"""Predictor quality on the shared datasets, beside the published anchors (HELP README Tables 2-3).

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/predictor_quality.py [--tune] [--json OUT]

Evaluation devices are used only through their 10 shots (HELP reference archs). ``--tune`` prints
the searches, on development devices only, that chose: the k-shot alpha (HELP NB201), the graph view
per dataset (eager InferCell for HELP, pruned "live" cells for LatBench and HW-NAS-Bench-360), the
cell encoding and the reference regressor kind (HW-NAS-Bench-360: pi5 ninapro held out instead of
cifar100). ``--store URL`` adds the per-device-class check on the fleet's own measurements.

Calibrator searches in ``--tune`` (leave-one-development-device-out; HW-NAS-Bench-360: pi5 ninapro
energy held out, references pi5 darcy + pixel):
- calibration space, raw-ms mix (KShotCalibrator) against log-space mix (predictors.kshot.
  LogKShotCalibrator), alpha in 0.001-1: HELP NB201 and LatBench keep raw alpha 0.1 (the best mean
  Spearman / acc10); HW-NAS-Bench-360 energy takes measured reference columns, log, alpha 0.001
  (evaluate.HWNAS_MEASURED/HWNAS_SPACE/HWNAS_ALPHA; best mean over the ninapro and darcy stand-ins).
- the span check (:func:`_span_lodo`): the same calibrator fitted on a development device's 10
  shots against on all its query rows. LatBench is mostly limited by the references' span (all rows:
  i7 0.47, Edge TPU 0.50, Hexagon 685 0.63 acc10); HELP NB201 phones and CPUs by the 10 shots
  (essential_ph_1 0.46 -> 0.93, gold_6240 0.33 -> 0.86 acc10 from 10 shots to all rows).
- a second k-shot term, "reference mix + ridge on the per-op-type counts / MACs (standardised)",
  shrunk toward the mix by a ridge ``ab`` (HELP NB201): below the plain mix for every ``ab`` tried, so
  not adopted (:func:`_residual_lodo`).
- the op-count correction that was adopted (predictors.kshot.CorrectedKShotCalibrator, used for
  HELP NB201 and LatBench): its ridge x margin grid on HELP NB201, leave-one-device-out and
  leave-one-*family*-out (:func:`_correction_grid`), and LatBench leave-one-device-out with and
  without it. Unlike the term above, it is fitted to the mix's leave-one-shot-out residuals and
  used only when the device's own shots favour it.
- the op-count sum form of the same calibrator (the op counts in place of the references), with and
  without: HELP NB201 leave-one-device-out and leave-one-family-out, LatBench leave-one-device-out.
- ``--ceiling`` (:func:`_ceiling`): on LatBench development devices, the plain mix at 10, 20, 50,
  100 and 300 shots beside a linear and a gbm regressor fitted on ~900 of the device's own archs.
- LatBench's probe set (evaluate.LATBENCH_PROBE_SET): the greedy selection rerun on the development
  devices (it must give the shipped set back), and leave-one-device-out acc10 with HELP's reference
  archs against it. The searches above were made with HELP's archs as shots and keep them.
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


def _help_family(device: str) -> str:
    """HELP NB201 development devices by kind: phones, server CPUs, and GPUs by batch size."""
    if device.startswith(("gold", "silver")):
        return "cpu"
    if device.startswith(("1080ti", "2080ti", "titan")):
        return "gpu-batch-" + device.rsplit("_", 1)[1]
    return "phone"


def _lodo(
    T: D.Table,
    proto: E.Protocol,
    kind: str = E.BASE_KIND,
    alpha: float = E.KSHOT_ALPHA,
    space: str = E.KSHOT_SPACE,
    corrected: bool | None = None,
    family=None,
    additive: bool = True,
) -> dict[str, float]:
    """Each development device in turn as the unseen one, the others as references; with
    ``family`` (device -> kind), the held-out device's whole kind is left out of the references
    (leave-one-family-out: an unseen *kind* of device, as eyeriss is to HELP's development set)."""
    dev = [d for d in T.devices if d not in D.EVAL_DEVICES[T.name]]
    r = [
        E.kshot_eval(
            T,
            d,
            proto,
            references=[x for x in dev if x != d and (family is None or family(x) != family(d))],
            kind=kind,
            alpha=alpha,
            space=space,
            corrected=corrected,
            additive=additive,
        )[0]
        for d in dev
    ]
    return {k: round(float(np.mean([m[k] for m in r])), 4) for k in ("spearman", "acc10")} | {"n_dev": len(dev)}


def _dev_references(T: D.Table, proto: E.Protocol) -> tuple[list[str], dict[str, np.ndarray]]:
    """The development devices and each one's reference regressor (pool rows) predicted on every row.
    They do not depend on the unseen device, so the leave-one-out searches fit them once."""
    dev = [d for d in T.devices if d not in D.EVAL_DEVICES[T.name]]
    return dev, dict(zip(dev, E.reference_columns(T, proto, dev).T, strict=True))


def _held_out_devices(T: D.Table, proto: E.Protocol, dev: list[str], ref: dict[str, np.ndarray], family=None):
    """Each development device in turn as the unseen one: (name, its latencies, the other devices'
    reference columns, its shot rows, its query rows); with ``family``, none of its kind among the
    references (see :func:`_lodo`)."""
    for t in dev:
        y = T.column(t)
        R = np.column_stack([ref[r] for r in dev if r != t and (family is None or family(r) != family(t))])
        sh = proto.shots[np.isfinite(y[proto.shots])]
        q = proto.query[np.isfinite(y[proto.query])]
        yield t, y, R, sh, E._trim(q, y) if proto.trim else q


def _residual_lodo(T: D.Table, proto: E.Protocol, which: str, aw: float, ab: float) -> dict[str, float]:
    """Leave-one-dev-device-out of "non-negative reference mix + ridge on graph features": per unseen
    (development) device, ``y/s = b + sum_d w_d R_d/s_d + F beta`` on the shots, w >= 0, ridge ``aw``
    on w and ``ab`` on beta; ``s`` = shot means, F = the ``which`` features (``*_count`` or ``*_macs``)
    standardised on the pool rows. The reference regressors do not depend on the unseen device, so
    they are fitted once per development device."""
    from scipy.optimize import lsq_linear

    from predictors.features import FEATURE_NAMES

    dev, ref = _dev_references(T, proto)
    cols = [i for i, n in enumerate(FEATURE_NAMES) if n.endswith(f"_{which}") or n == which]
    F = T.features[:, cols]
    sd = F[proto.pool].std(axis=0)
    F = (F[:, sd > 0] - F[proto.pool][:, sd > 0].mean(axis=0)) / sd[sd > 0]
    out = []
    for _t, y, R, sh, q in _held_out_devices(T, proto, dev, ref):
        sr, s = R[sh].mean(axis=0), y[sh].mean()
        A = np.hstack([R[sh] / sr, np.ones((len(sh), 1)), F[sh]])
        nd, nf = R.shape[1], F.shape[1]
        pen = np.concatenate([np.full(nd, aw), [1e-8], np.full(nf, ab)])
        lb = np.concatenate([np.zeros(nd), np.full(1 + nf, -np.inf)])
        x = lsq_linear(
            np.vstack([A, np.diag(np.sqrt(pen))]), np.concatenate([y[sh] / s, np.zeros(len(pen))]), bounds=(lb, np.inf)
        ).x
        pred = np.maximum(np.hstack([R[q] / sr, np.ones((len(q), 1)), F[q]]) @ x * s, 1e-3)
        out.append(E.metrics(pred, y[q]))
    return {k: round(float(np.mean([m[k] for m in out])), 4) for k in ("spearman", "acc10")}


def _correction_grid(T: D.Table, proto: E.Protocol) -> None:
    """The op-count correction's ridge x margin grid (predictors.kshot.CorrectedKShotCalibrator), HELP
    NB201 development devices, leave-one-device-out and leave-one-family-out; margin 0 = the plain
    mix. Each fit with margin infinity gives the corrected form and both leave-one-shot-out errors,
    so every margin is read off the same fits."""
    from predictors.kshot import CorrectedKShotCalibrator

    dev, ref = _dev_references(T, proto)
    Z = T.op_counts()
    ridges, margins = (0.3, 1.0, 3.0), (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    for name, fam in (("leave-one-device-out", None), ("leave-one-family-out", _help_family)):
        score = {(r, m): [] for r in ridges for m in margins}
        for _t, y, R, sh, q in _held_out_devices(T, proto, dev, ref, fam):
            plain = E.metrics(CorrectedKShotCalibrator().fit(R[sh], y[sh]).predict(R[q]), y[q])["spearman"]
            X = np.hstack([R, Z])
            for r in ridges:
                cal = CorrectedKShotCalibrator(
                    correction_alpha=r, margin=np.inf, n_correction=Z.shape[1], additive=False
                )
                cal.fit(X[sh], y[sh])
                cor = E.metrics(cal.predict(X[q]), y[q])["spearman"]
                e = cal.loo_errors_
                for m in margins:
                    score[(r, m)].append(cor if e["corrected"] < m * e["mix"] else plain)
        for r in ridges:
            row = "  ".join(f"margin {m}: {np.mean(score[(r, m)]):.4f}" for m in margins)
            print(f"tune help-nb201 op-count correction, {name}, ridge {r}: {row}")


def _span_lodo(T: D.Table, proto: E.Protocol) -> None:
    """Is 10 shots the limit, or the references' span? Each development device in turn: the k-shot
    calibrator fitted on its 10 shots against the same calibrator fitted on *all* its query rows
    (the best mix of the other development devices' references); acc10 of both on the query."""
    dev, ref = _dev_references(T, proto)
    for t, y, R, sh, q in _held_out_devices(T, proto, dev, ref):
        a = {
            n: E.metrics(E.make_calibrator().fit(R[rows], y[rows]).predict(R[q]), y[q])["acc10"]
            for n, rows in (("10 shots", sh), ("all query rows", q))
        }
        print(
            f"tune {T.name} span {t}: acc10 mix fitted on 10 shots {a['10 shots']:.3f}, on all query rows {a['all query rows']:.3f}"
        )


def _ceiling(T: D.Table, ks: tuple[int, ...] = (10, 20, 50, 100, 300)) -> None:
    """LatBench: shots or model form? Development devices only, each in turn the new device. The
    plain reference mix (:func:`evaluate._mix_acc10`, the probe set then random pool archs) at k
    shots, beside a regressor fitted on the device's own measured pool rows (NB201 idx [0:900),
    about 900 archs; ``linear`` and ``gbm``), all scored by acc10 on the query rows."""
    from predictors.models import LatencyRegressor

    proto = E.latbench_protocol(T)
    dev, ref = _dev_references(T, proto)
    probe = list(proto.shots)  # the probe set's rows, in pick order
    order = probe + [int(i) for i in np.random.default_rng(0).permutation(proto.pool) if i not in probe]
    X = T.inputs()
    table = []
    for t, y, R, _, q in _held_out_devices(T, proto, dev, ref):
        row = []
        for k in ks:
            sh = np.array(order[:k])
            row.append(E._mix_acc10(R, y, sh[np.isfinite(y[sh])], q, E.KSHOT_ALPHA))
        own = proto.pool[np.isfinite(y[proto.pool])]
        for kind in ("linear", "gbm"):
            pred = LatencyRegressor(kind=kind, cv=1).fit(X[own], y[own]).predict(X[q])
            row.append(E.metrics(pred, y[q])["acc10"])
        table.append(row)
        print(f"ceiling latbench {t:<45} " + " ".join(f"{v:.3f}" for v in row))
    heads = [f"mix@{k}" for k in ks] + ["own-linear", "own-gbm"]
    print(f"ceiling latbench {'(columns)':<45} " + " ".join(heads))
    print(f"ceiling latbench {'mean':<45} " + " ".join(f"{v:.3f}" for v in np.mean(table, axis=0)))


def _probe_set_tune(T: D.Table) -> None:
    """LatBench's probe set (evaluate.LATBENCH_PROBE_SET): the greedy selection again, on the
    development devices, and leave-one-device-out acc10 of HELP's reference archs against it."""
    sel = E.select_probe_set(T, E.latbench_protocol(T, probe_set="help"))
    same = "the same as" if tuple(sel) == E.LATBENCH_PROBE_SET else "DIFFERENT FROM"
    print(f"tune latbench probe set selected {sel}: {same} evaluate.LATBENCH_PROBE_SET")
    for ps in E.PROBE_SETS:
        print(f"tune latbench probe set {ps}: {_lodo(T, E.latbench_protocol(T, probe_set=ps))}")


def tune() -> None:
    """Development devices only: each in turn plays the unseen device, the others are references."""
    T = D.load("help-nb201")
    _correction_grid(T, E.help_protocol(T))
    for name, fam in (("leave-one-device-out", None), ("leave-one-family-out", _help_family)):
        for additive in (False, True):
            r = _lodo(T, E.help_protocol(T), family=fam, additive=additive)
            print(f"tune help-nb201 op-count sum form={additive}, {name}: {r}")
    for space in ("raw", "log"):
        for alpha in (0.01, 0.1, 1.0):
            print(
                f"tune help-nb201 space={space} alpha={alpha}: {_lodo(T, E.help_protocol(T), alpha=alpha, space=space, corrected=False)}"
            )
    for which in ("count", "macs"):
        for ab in (1.0, 10.0, 30.0):
            r = _residual_lodo(T, E.help_protocol(T), which, 0.01, ab)
            print(f"tune help-nb201 mix + ridge on *_{which} (aw=0.01, ab={ab}): {r}")
    for graph, enc in (("eager", False), ("live", False), ("eager", True)):
        T = D.load_help_nb201(graph=graph, encoding=enc)
        print(f"tune help-nb201 graph={graph} encoding={enc}: {_lodo(T, E.help_protocol(T), corrected=False)}")
    for graph, enc, kind in (("eager", False, "linear"), ("live", False, "linear"), ("live", True, "gbm")):
        T = D.load_latbench(graph=graph, encoding=enc)
        print(
            f"tune latbench graph={graph} encoding={enc} kind={kind}: {_lodo(T, E.latbench_protocol(T, probe_set='help'), kind=kind, corrected=False)}"
        )
    T = D.load("latbench")
    for corrected in (False, True):
        print(
            f"tune latbench op-count correction={corrected}: {_lodo(T, E.latbench_protocol(T, probe_set='help'), corrected=corrected)}"
        )
    print(
        f"tune latbench op-count sum form=False: {_lodo(T, E.latbench_protocol(T, probe_set='help'), additive=False)}"
    )
    _span_lodo(T, E.latbench_protocol(T, probe_set="help"))
    for space, alpha in (("raw", 0.01), ("raw", 1.0), ("log", 0.01), ("log", 0.1)):
        print(
            f"tune latbench space={space} alpha={alpha}: {_lodo(T, E.latbench_protocol(T, probe_set='help'), alpha=alpha, space=space, corrected=False)}"
        )
    _probe_set_tune(T)
    for enc, kind in ((False, "linear"), (True, "gbm")):
        T = D.load_hwnasbench360(encoding=enc)
        ref = E.hwnas_reference_matrix(T, "ninapro", ["cifar100", "ninapro"], kind=kind, measured=False)
        acc = [
            E.hwnas_energy_eval(T, d, task="ninapro", reference=ref, space="raw", alpha=E.KSHOT_ALPHA)["acc10"]
            for d in D.EVAL_DEVICES[T.name]
        ]
        print(f"tune hwnasbench360 energy (ninapro held out) encoding={enc} kind={kind}: mean acc10 {np.mean(acc):.3f}")
    # reference columns (measured, or every one predicted by the regressor) x calibration space x
    # alpha, on both development stand-ins: pi5 ninapro or pi5 darcy energy held out (with cifar100)
    T = D.load("hwnasbench360")
    for measured in (False, True):
        refs = {
            task: E.hwnas_reference_matrix(T, task, [task, "cifar100"], measured=measured)
            for task in ("ninapro", "darcy")
        }
        for space in ("raw", "log"):
            for alpha in (0.0001, 0.001, 0.01, 0.1, 1.0):
                acc = {
                    task: np.mean(
                        [
                            E.hwnas_energy_eval(T, d, task=task, reference=ref, space=space, alpha=alpha)["acc10"]
                            for d in D.EVAL_DEVICES[T.name]
                        ]
                    )
                    for task, ref in refs.items()
                }
                print(
                    f"tune hwnasbench360 energy measured={measured} space={space} alpha={alpha}: mean acc10 "
                    f"ninapro held out {acc['ninapro']:.3f}, darcy held out {acc['darcy']:.3f}, "
                    f"both {np.mean(list(acc.values())):.3f}"
                )


def fleet_rows(url: str | None) -> list[dict]:
    """Per device class with full data: the fleet's own measurements (source=probe), held-out slice
    by variant id (predictors.training), per-class regressor. nn-Meter's anchor: 99.0 % within 10 %."""
    from predictors import training as TR
    from predictors.models import KINDS
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
    for kind in KINDS:
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
                f"  {c:<24} {kind:<8} acc10 {m['acc10']:.3f}  acc5 {m['acc5']:.3f}  mape {m['mape']:.1f}%  n {m['n']}"
            )
    return out


def kind_rows(n_devices: int = 3, n_rows: int = 3000) -> list[dict]:
    """Which per-class kind (`predictors train --kind`): gbm, additive and auto side by side on
    slices of imported *development* devices (the first ``n_devices`` of each dataset; a seeded
    ``n_rows`` of each device's archs, 80 % fitted, 20 % scored), full data per device."""
    from predictors.models import AUTO_KINDS, LatencyRegressor

    out = []
    rng = np.random.default_rng(0)
    print(f"\nper-class kind on development devices ({n_rows}-arch slices, 80/20): acc10 / MAPE")
    for name in ("help-nb201", "help-fbnet", "latbench", "mobile-ml-benchmark"):
        T = D.load(name)
        evald = set(D.EVAL_DEVICES.get(T.name, ()))
        for dev in [d for d in T.devices if d not in evald][:n_devices]:
            y = T.column(dev)
            ok = np.flatnonzero(np.isfinite(y) & (y > 0) & np.isfinite(T.features).all(axis=1))
            pick = rng.permutation(ok)[:n_rows]
            cut = int(0.8 * len(pick))
            tr, te = pick[:cut], pick[cut:]
            line, held = [], []
            for kind in (*AUTO_KINDS, "auto"):
                est = LatencyRegressor(kind=kind).fit(T.features[tr], y[tr])
                m = E.metrics(est.predict(T.features[te]), y[te])
                chosen = getattr(est, "chosen_kind_", kind)
                out.append({"dataset": name, "device": dev, "kind": kind, "chosen": chosen, **m})
                line.append(f"{kind}{'=' + chosen if kind == 'auto' else ''} {m['acc10']:.3f} / {m['mape']:.1f}%")
                if kind != "auto":  # what auto compares: whole variants held out
                    held.append(f"{est.heldout_log_error_:.3f}")
            seen = {r.tobytes() for r in T.features[tr]}
            twins = np.mean([T.features[i].tobytes() in seen for i in te])  # test archs whose features were fitted
            print(
                f"  {name:<20} {dev[:32]:<32} n {len(pick):>5}: "
                + "   ".join(line)
                + f"   held-out |log err| {'/'.join(held)}   test twins {100 * twins:.0f} %"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--store", default=None, help="store URL with the fleet's measurements (default: the data dir's)")
    ap.add_argument("--only-fleet", action="store_true", help="only the per-device-class fleet check")
    ap.add_argument("--kinds", action="store_true", help="only the per-class kind comparison (gbm, additive, auto)")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="only LatBench's ceiling check on development devices: the mix at 10-300 shots beside own-data regressors",
    )
    args = ap.parse_args()
    if args.ceiling:
        _ceiling(D.load("latbench"))
        return
    if args.only_fleet:
        fleet_rows(args.store)
        return
    if args.kinds:
        kind_rows()
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
    for ps in E.PROBE_SETS:
        proto = E.latbench_protocol(T, probe_set=ps)
        print(f"\nlatbench evaluation devices, 10-shot, probe set {ps} (target acc10 >= 0.90)")
        acc = []
        for dev in D.EVAL_DEVICES["latbench"]:
            m, _, _ = E.kshot_eval(T, dev, proto)
            acc.append(m["acc10"])
            rows.append({"dataset": "latbench", "probe_set": ps, "device": dev, **m})
            print(
                f"  {dev:<45} acc10 {m['acc10']:.3f}  spearman {m['spearman']:.3f}  mape {m['mape']:.1f}%  n {m['n']}  {m['calibration']}"
            )
        print(f"  {'mean':<45} acc10 {np.mean(acc):.3f}")
    T = D.load("hwnasbench360")
    print(
        f"\nhwnasbench360 pi5 cifar100 energy, refs = the arch on pi5 ninapro+darcy and the pixel "
        f"({'measured' if E.HWNAS_MEASURED else 'predicted'}), 10-shot, {E.HWNAS_SPACE} mix alpha {E.HWNAS_ALPHA}"
        " (target acc10 >= 0.90)"
    )
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
