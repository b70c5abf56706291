"""Evaluation: metrics, the HELP k-shot protocol, leave-one-device-out, latbench and energy protocols.

Evaluation devices are touched only through their k reference measurements (the shots); the
reference-device regressors are fitted on development devices only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from predictors import datasets as D
from predictors.kshot import CorrectedKShotCalibrator, LogKShotCalibrator
from predictors.models import MIN_MS, KShotCalibrator, LatencyRegressor, nonneg_ridge
from registry.errors import EdgeatlasError, ErrorCode

METRIC_KEYS = ("spearman", "kendall", "acc10", "acc5", "rmse_ms", "mape", "n")
ENERGY_METRIC_KEYS = ("spearman", "kendall", "acc10", "acc5", "rmse_mj", "mape", "n")  # an energy evaluation
# kshot_eval's "calibration" beside the metrics: which k-shot form the device's shots chose
CALIBRATION_NAMES = {"mix": "mix", "corrected": "mix x op-count correction", "additive": "op-count sum"}
KSHOT_ALPHA = 0.1  # chosen by leave-one-dev-device-out on HELP NB201 development devices
KSHOT_SPACE = "raw"  # HELP / LatBench latency: raw-ms mix (KShotCalibrator); bench --tune compares "log"
BASE_KIND = "linear"
# datasets whose k-shot mix may give way to the op-count forms (CorrectedKShotCalibrator); chosen on
# development devices only (bench/predictor_quality.py --tune)
KSHOT_CORRECTED = frozenset({"help-nb201", "latbench"})


def make_calibrator(space: str = KSHOT_SPACE, alpha: float = KSHOT_ALPHA):
    """The k-shot calibrator: "raw" = non-negative mix in ms (:class:`KShotCalibrator`), "log" =
    non-negative mix in log space (:class:`predictors.kshot.LogKShotCalibrator`)."""
    if space == "raw":
        return KShotCalibrator(alpha=alpha)
    if space == "log":
        return LogKShotCalibrator(alpha=alpha)
    raise EdgeatlasError(f"calibration space must be 'raw' or 'log', got {space!r}", code=ErrorCode.INVALID_ARGUMENT)


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if len(true) < 2:
        raise EdgeatlasError("need at least 2 query points to score", code=ErrorCode.INSUFFICIENT_DATA)
    rel = np.abs(pred / true - 1.0)
    return {
        "spearman": float(spearmanr(pred, true)[0]),
        "kendall": float(kendalltau(pred, true)[0]),
        "acc10": float(np.mean(rel <= 0.10)),
        "acc5": float(np.mean(rel <= 0.05)),
        "rmse_ms": float(np.sqrt(np.mean((pred - true) ** 2))),
        "mape": float(np.mean(rel) * 100.0),
        "n": int(len(true)),
    }


def _trim(ix: np.ndarray, y: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(y[ix], [10, 90])
    return ix[(y[ix] >= lo) & (y[ix] <= hi)]


@dataclass(frozen=True)
class Protocol:
    pool: np.ndarray  # rows used to fit the reference (development-device) regressors
    query: np.ndarray
    shots: np.ndarray
    trim: bool


def help_protocol(table: D.Table, shots: int = 10) -> Protocol:
    space = "nb201" if "nb201" in table.name else "fbnet"
    p = 900 if space == "nb201" else 4000
    pos = {int(i): k for k, i in enumerate(table.index)}
    ref = D.help_reference_indices(space)[:shots]
    return Protocol(
        pool=np.array([pos[i] for i in range(p) if i in pos]),
        query=np.array([pos[i] for i in range(p, p + 1000) if i in pos]),
        shots=np.array([pos[i] for i in ref if i in pos]),
        trim=True,
    )


# LatBench's probe set: the NB201 archs (dataset index) a new device measures for its k shots, in
# the order :func:`select_probe_set` picked them (``--shots k`` takes the first k). Chosen on the
# development devices only (bench/predictor_quality.py --tune prints the selection again); the
# evaluation devices never took part. ``probe_set="help"`` keeps HELP's 10 NB201 reference archs.
LATBENCH_PROBE_SET: tuple[int, ...] = (604, 677, 643, 663, 806, 835, 829, 158, 671, 574)
PROBE_SETS = ("selected", "help")


def latbench_protocol(table: D.Table, shots: int = 10, probe_set: str = "selected") -> Protocol:
    """Reference regressors on NB201 idx [0:900); shots = the probe set (``"selected"``:
    :data:`LATBENCH_PROBE_SET`, ``"help"``: HELP's NB201 reference archs); query = every other
    measured arch of the device. The query leaves out both probe sets, so the two score the same rows."""
    if probe_set not in PROBE_SETS:
        raise EdgeatlasError(
            f"unknown probe set {probe_set!r}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"use one of: {', '.join(PROBE_SETS)}",
        )
    pos = {int(i): k for k, i in enumerate(table.index)}
    pool = np.array([pos[i] for i in range(900) if i in pos])
    helps = D.help_reference_indices("nb201")
    chosen = LATBENCH_PROBE_SET if probe_set == "selected" else helps
    sh = np.array([pos[i] for i in chosen[:shots] if i in pos], dtype=int)
    mask = np.ones(len(table.keys), bool)
    mask[pool] = False
    mask[[pos[i] for i in (*helps, *LATBENCH_PROBE_SET) if i in pos]] = False
    return Protocol(pool=pool, query=np.flatnonzero(mask), shots=sh, trim=False)


def _mix_acc10(R: np.ndarray, y: np.ndarray, shots: np.ndarray, query: np.ndarray, alpha: float) -> float:
    """acc10 on ``query`` of the non-negative raw mix ``b + sum_d w_d R_d`` (ridge ``alpha`` on w,
    b free) fitted on ``shots``; with one shot, the mean reference column scaled to it. The fast
    stand-in for the k-shot calibrator that :func:`select_probe_set` scores thousands of times."""
    if len(shots) < 2:
        m = R.mean(axis=1)
        pred = m[query] * float(np.median(y[shots] / m[shots]))
    else:
        # (alpha as given, in ms: the shipped set was selected so, before mix_alpha; with the penalty
        # scaled as the calibrators scale it, the greedy picks differ from the third arch on)
        w, b = nonneg_ridge(R[shots], y[shots], alpha)
        pred = R[query] @ w + b
    return float(np.mean(np.abs(np.maximum(pred, MIN_MS) / y[query] - 1.0) <= 0.10))


def select_probe_set(
    table: D.Table,
    protocol: Protocol,
    k: int = 10,
    *,
    alpha: float = KSHOT_ALPHA,
    progress: Callable[[int, int, int, float], None] | None = None,
) -> list[int]:
    """Greedy forward selection of a k-arch probe set, on the development devices only.

    Each development device in turn plays the new device; the others are its references
    (:func:`reference_columns`, fitted on ``protocol.pool``). Step by step, the pool arch that most
    raises the mean acc10 on the query rows (the plain mix on the shots so far,
    :func:`_mix_acc10`) joins the set; candidates are the pool archs every development device
    measured. ``progress(step, k, picked dataset index, objective)`` after each pick. Returns
    dataset indices (``table.index``), in the order chosen; the evaluation devices' columns are
    never read."""
    evald = set(D.EVAL_DEVICES.get(table.name, ()))
    dev = [d for d in table.devices if d not in evald]
    if len(dev) < 3:
        raise EdgeatlasError(
            f"{table.name}: {len(dev)} development devices; a probe set needs >= 3", code=ErrorCode.INSUFFICIENT_DATA
        )
    folds = []
    for t in dev:
        y = table.column(t)
        R = reference_columns(table, protocol, [r for r in dev if r != t])
        folds.append((R, y, protocol.query[np.isfinite(y[protocol.query])]))
    measured = np.isfinite(np.column_stack([y for _, y, _ in folds])).all(axis=1)
    chosen: list[int] = []
    for step in range(k):
        best, best_row = -1.0, -1
        for c in protocol.pool[measured[protocol.pool]]:
            if c in chosen:
                continue
            s = np.array([*chosen, c])
            score = float(np.mean([_mix_acc10(R, y, s, q, alpha) for R, y, q in folds]))
            if score > best:
                best, best_row = score, int(c)
        chosen.append(best_row)
        if progress is not None:
            progress(step + 1, k, int(table.index[best_row]), best)
    return [int(table.index[i]) for i in chosen]


def reference_columns(
    table: D.Table,
    protocol: Protocol,
    references: Sequence[str],
    *,
    kind: str = BASE_KIND,
    ref_targets: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(rows, len(references)): each reference device's regressor, fitted on its measured pool rows
    (``ref_targets[r]`` instead of its latency where given), predicted on every row of ``table``."""
    X = table.inputs()
    cols = []
    for r in references:
        yr = ref_targets[r] if ref_targets and r in ref_targets else table.column(r)
        rows = protocol.pool[np.isfinite(yr[protocol.pool]) & (yr[protocol.pool] > 0)]
        cols.append(LatencyRegressor(kind=kind, cv=1).fit(X[rows], yr[rows]).predict(X))
    return np.column_stack(cols)


def kshot_eval(
    table: D.Table,
    device: str,
    protocol: Protocol,
    *,
    target: np.ndarray | None = None,
    references: Sequence[str] | None = None,
    ref_targets: dict[str, np.ndarray] | None = None,
    alpha: float = KSHOT_ALPHA,
    kind: str = BASE_KIND,
    space: str = KSHOT_SPACE,
    corrected: bool | None = None,
    additive: bool = True,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit reference regressors (development devices, pool rows), calibrate on the shots of
    ``device``, score on the query. Returns (metrics, predicted, measured). ``corrected``: the
    op-count correction (:class:`~predictors.kshot.CorrectedKShotCalibrator`, raw space, NB201-space
    tables); None = as :data:`KSHOT_CORRECTED` says for the table. ``additive``: whether that
    calibrator may also choose its op-count sum form."""
    y = table.column(device) if target is None else target
    evald = set(D.EVAL_DEVICES.get(table.name, ()))
    refs = list(references) if references is not None else [d for d in table.devices if d not in evald and d != device]
    R = reference_columns(table, protocol, refs, kind=kind, ref_targets=ref_targets)
    shots = protocol.shots[np.isfinite(y[protocol.shots])]
    if len(shots) < 3:
        raise EdgeatlasError(f"{device}: only {len(shots)} shots measured; need >= 3", code=ErrorCode.INSUFFICIENT_DATA)
    if corrected is None:
        corrected = table.name in KSHOT_CORRECTED
    Z = table.op_counts() if corrected and space == "raw" else None
    if Z is not None:
        R = np.hstack([R, Z])
        cal = CorrectedKShotCalibrator(alpha=alpha, n_correction=Z.shape[1], additive=additive)
    else:
        cal = make_calibrator(space, alpha)
    cal.fit(R[shots], y[shots])
    q = protocol.query[np.isfinite(y[protocol.query])]
    if protocol.trim:
        q = _trim(q, y)
    pred = cal.predict(R[q])
    m: dict[str, Any] = metrics(pred, y[q])
    m["calibration"] = CALIBRATION_NAMES[getattr(cal, "form_", "mix")] if space == "raw" else f"{space} mix"
    return m, pred, y[q]


def evaluate(
    dataset: str,
    device: str,
    shots: int = 10,
    path: str | None = None,
    probe_set: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """`predictors eval`: the k-shot protocol of ``dataset`` on ``device``: the METRIC_KEYS, and
    ``calibration`` where the k-shot form was chosen from the shots (kshot_eval). ``probe_set``
    (LatBench only; default ``"selected"``): which archs are the shots (:func:`latbench_protocol`).
    ``target``: latency (every dataset) or energy (HW-NAS-Bench-360's pi5); default: energy on a
    HW-NAS-Bench-360 device that measured it (the issue's pi5 target), else latency. An energy
    evaluation gives ``rmse_mj`` in place of ``rmse_ms`` and ``target: "energy"``."""
    if target not in (None, "latency", "energy"):
        raise EdgeatlasError(f"--target must be latency or energy, not {target!r}", code=ErrorCode.INVALID_ARGUMENT)
    if shots < 3 or shots > 10:
        raise EdgeatlasError("--shots must be between 3 and 10", code=ErrorCode.INVALID_ARGUMENT)
    if probe_set is not None and dataset != "latbench":
        raise EdgeatlasError(
            f"--probe-set applies to latbench only; {dataset} always uses HELP's reference archs as shots",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="drop --probe-set",
        )
    table = D.load(dataset, path)
    if device not in table.devices:
        raise EdgeatlasError(
            f"unknown device {device!r} in {table.name}",
            code=ErrorCode.NOT_FOUND,
            hint=f"choose one of: {', '.join(table.devices)}",
        )
    if target == "energy" and table.name != "hwnasbench360":
        raise EdgeatlasError(
            f"{table.name} has no energy measurements", code=ErrorCode.UNSUPPORTED, hint="drop --target energy"
        )
    if table.name in ("help-nb201", "help-fbnet"):
        m, _, _ = kshot_eval(table, device, help_protocol(table, shots))
    elif table.name == "latbench":
        m, _, _ = kshot_eval(table, device, latbench_protocol(table, shots, probe_set or "selected"))
    elif table.name == "hwnasbench360":
        target = target or default_target(table, [device])
        m = hwnas_energy_eval(table, device, shots, target=target)
        if target == "energy":
            m = {**m, "rmse_mj": m.pop("rmse_ms"), "target": "energy"}
            return {k: m[k] for k in (*ENERGY_METRIC_KEYS, "target")}
        m = {**m, "target": "latency"}
    else:
        m = leave_one_device_out(table, device, shots)
    return {k: m[k] for k in (*METRIC_KEYS, "calibration", "target") if k in m}


def default_target(table: D.Table, devices: Sequence[str]) -> str:
    """`predictors eval`'s target when none is given: energy when every one of ``devices`` measured
    energy in ``table`` (HW-NAS-Bench-360's pi5, the issue's energy target), else latency; one
    target for all of them, so a table of several devices never mixes the two."""
    if table.energy_mj is None:
        return "latency"
    cols = [table.devices.index(d) for d in devices if d in table.devices]
    has = [bool(np.isfinite(table.energy_mj[:, j]).any()) for j in cols]
    return "energy" if has and all(has) else "latency"


HWNAS_KIND = "gbm"  # chosen on development rows (pi5 ninapro held out, bench --tune)
# pi5 energy k-shot: measured reference columns, log-space mix, alpha 0.001. Chosen on development
# rows only (bench --tune): pi5 ninapro or pi5 darcy energy held out in turn (with cifar100), mean
# acc10 of the three runtimes over both stand-ins: measured columns log 0.938 / 0.938 / 0.923 / 0.882
# / 0.733 (alpha 0.0001 / 0.001 / 0.01 / 0.1 / 1), raw 0.858-0.866; regressor-predicted columns log
# 0.581-0.645, raw 0.588-0.605.
HWNAS_SPACE = "log"
HWNAS_ALPHA = 0.001
HWNAS_MEASURED = True


def hwnas_reference_matrix(
    table: D.Table,
    task: str = "cifar100",
    heldout_tasks: Sequence[str] | None = None,
    kind: str = HWNAS_KIND,
    measured: bool = HWNAS_MEASURED,
    target_device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Arch-aligned reference columns for the rows of ``task``.

    One column per (device, task, latency|energy) that development data allows: the evaluation
    devices (pi5-*) only on tasks outside ``heldout_tasks`` (default: ``task`` itself); the pixel on
    every task. A column says "how this arch behaves on a known device/task": with ``measured``, the
    arch's own measurement there (as the fleet's boards have measured the zoo's variants), and a
    regressor's prediction only where it was not measured; otherwise the regressor (``kind``, fitted
    on that device/task's rows and applied to the *same architecture built for its own task*, its
    features on that task's input shape) everywhere. ``target_device``: the device being predicted,
    whose own columns on ``task`` are left out too (a development device such as the pixel).
    Returns (target rows, R (len(rows), n_refs), reference names)."""
    if table.group is None or table.energy_mj is None:
        raise EdgeatlasError(f"{table.name} has no task groups / energy", code=ErrorCode.UNSUPPORTED)
    held = set(heldout_tasks) if heldout_tasks is not None else {task}
    evald = set(D.EVAL_DEVICES.get(table.name, ()))
    X = table.inputs()
    g = table.group
    tgt = np.flatnonzero(g == task)
    if len(tgt) == 0:
        raise EdgeatlasError(f"no rows for task {task!r}", code=ErrorCode.NOT_FOUND)
    cols, names = [], []
    for tk in sorted(set(g.tolist())):
        rows_tk = np.flatnonzero(g == tk)
        pos = {int(table.index[i]): i for i in rows_tk}
        align = np.array([pos.get(int(table.index[i]), -1) for i in tgt])
        for k, d in enumerate(table.devices):
            if (d in evald and tk in held) or (d == target_device and tk == task):
                continue  # evaluation data, or the very values being predicted: never fitted on
            for what, M in (("latency", table.latency_ms), ("energy", table.energy_mj)):
                y = M[:, k]
                rows = rows_tk[np.isfinite(y[rows_tk]) & (y[rows_tk] > 0)]
                if len(rows) < 100:
                    continue
                col = np.full(len(tgt), np.nan)
                ok = align >= 0
                if measured:
                    col[ok] = y[align[ok]]
                    col[~(col > 0)] = np.nan
                miss = ok & ~np.isfinite(col)
                if miss.any():
                    model = LatencyRegressor(kind=kind, cv=1).fit(X[rows], y[rows])
                    col[miss] = model.predict(X[align[miss]])
                cols.append(col)
                names.append(f"{what}:{d}:{tk}")
    R = np.column_stack(cols)
    keep = np.isfinite(R).all(axis=1)
    return tgt[keep], R[keep], names


def hwnas_energy_predict(
    table: D.Table,
    device: str,
    shots: int = 10,
    task: str = "cifar100",
    *,
    heldout_tasks: Sequence[str] | None = None,
    reference: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    alpha: float = HWNAS_ALPHA,
    space: str = HWNAS_SPACE,
    target: str = "energy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy (mJ; ``target="latency"``: latency, ms) of ``device`` on ``task`` (HW-NAS-Bench-360):
    arch-aligned reference columns (:func:`hwnas_reference_matrix`: the other tasks of the pi5
    runtimes, the pixel on all tasks),
    calibrated on ``shots`` measurements of the target task (HELP's NB201 reference archs). The only
    values of ``device`` on ``task`` read are the energies of the shots. Returns (rows of ``table``
    predicted = every other arch of the task, predicted mJ, the calibrator). ``reference`` reuses a
    matrix computed for the same task. The latency protocol is the energy one (chosen for energy;
    nothing was tuned for latency)."""
    if table.energy_mj is None:
        raise EdgeatlasError("dataset has no energy", code=ErrorCode.UNSUPPORTED)
    if target not in ("latency", "energy"):
        raise EdgeatlasError(f"target must be latency or energy, not {target!r}", code=ErrorCode.INVALID_ARGUMENT)
    if device not in table.devices:
        raise EdgeatlasError(
            f"unknown device {device!r} in {table.name}",
            code=ErrorCode.NOT_FOUND,
            hint=f"choose one of: {', '.join(table.devices)}",
        )
    j = table.devices.index(device)
    values = table.energy_mj if target == "energy" else table.latency_ms
    if not np.isfinite(values[:, j]).any():
        raise EdgeatlasError(
            f"{device} has no {target} measurements in {table.name}",
            code=ErrorCode.INSUFFICIENT_DATA,
            hint="evaluate its latency: --target latency" if target == "energy" else None,
        )
    tgt, R, _ = (
        reference if reference is not None else hwnas_reference_matrix(table, task, heldout_tasks, target_device=device)
    )
    pos = {int(table.index[i]): n for n, i in enumerate(tgt)}
    sh = np.array([pos[i] for i in D.help_reference_indices("nb201")[:shots] if i in pos], dtype=int)
    ysh = values[tgt[sh], j]
    ok = np.isfinite(ysh) & (ysh > 0)
    sh, ysh = sh[ok], ysh[ok]
    if len(sh) < 3:
        raise EdgeatlasError(
            f"{device}: only {len(sh)} shots with {target} measured on {task}; need >= 3",
            code=ErrorCode.INSUFFICIENT_DATA,
        )
    cal = make_calibrator(space, alpha).fit(R[sh], ysh)
    q = np.setdiff1d(np.arange(len(tgt)), sh)
    return tgt[q], cal.predict(R[q]), cal


def hwnas_energy_eval(
    table: D.Table, device: str, shots: int = 10, task: str = "cifar100", **kw: Any
) -> dict[str, float]:
    """:func:`hwnas_energy_predict` (its keyword options: ``heldout_tasks``, ``reference``, ``alpha``,
    ``space``, ``target``), scored on every other measured arch of the task."""
    rows, pred, _ = hwnas_energy_predict(table, device, shots, task, **kw)
    target = kw.get("target", "energy")
    y = (table.energy_mj if target == "energy" else table.latency_ms)[rows, table.devices.index(device)]
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        raise EdgeatlasError(f"{device} has no {target} measurements on {task}", code=ErrorCode.INSUFFICIENT_DATA)
    return metrics(pred[ok], y[ok])


def leave_one_device_out(table: D.Table, device: str, shots: int = 10) -> dict[str, Any]:
    """Generic: references = every other non-evaluation device on the first half of the rows; shots =
    the first ``shots`` rows of the other half measured on ``device``; query = the rest."""
    n = len(table.keys)
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    pool, rest = perm[: n // 2], perm[n // 2 :]
    y = table.column(device)
    rest = rest[np.isfinite(y[rest])]
    proto = Protocol(pool=pool, query=rest[shots:], shots=rest[:shots], trim=False)
    m, _, _ = kshot_eval(table, device, proto)
    return m
