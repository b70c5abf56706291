"""Train, version, persist (skops) and promote predictor sets (champion / challenger).

A predictor set (predictors.models.PredictorSet) is trained from the store's measurements: one
latency (and energy, where measured) regressor per device class, the probe set for k-shot and the
zero-shot facts model. Each version records the data hash, library versions and held-out metrics.

Files are saved with skops. Loading checks, in order: the file's sha256 against the store record
(tampering), the scikit-learn version it was written with, and that every type in the file is in
:data:`TRUSTED_TYPES`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from predictors.evaluate import metrics
from predictors.features import FEATURE_NAMES, features_from_dict
from predictors.models import MIN_ROWS_PER_CLASS, PredictorSet
from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import predictors_dir, reports_dir

DEFAULT_NAME = "default"
N_PROBES = 10

#: Every type a predictor file may contain (skops refuses anything else). Produced from the
#: estimators of predictors.models and checked by tests/test_predictors_training.py.
TRUSTED_TYPES: tuple[str, ...] = (
    "predictors.models.PredictorSet",
    "predictors.models.LatencyRegressor",
    "predictors.models.KShotCalibrator",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._ridge.RidgeCV",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._ridge._RidgeGCV",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn.utils._bunch.Bunch",
    "builtins.slice",
    "numpy.float64",
    "numpy.int64",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.random.mtrand.RandomState",
)


@dataclass(frozen=True)
class TrainingData:
    per_class: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    variant_ids: dict[str, list[str]]
    data_hash: str
    n_rows: int


def collect(store, device_class: str | None = None, source: str | None = None) -> TrainingData:
    """Measurements (status ok) joined with variant features, grouped by device class."""
    rows = store.list_measurements(device_class=device_class, source=source, status="ok")
    rows = [r for r in rows if r.split_id is None]  # whole-model rows; split heads/tails have their own features
    if not rows:
        raise EdgeatlasError(
            "empty training set: no successful measurements" + (f" for class {device_class!r}" if device_class else ""),
            code=ErrorCode.INSUFFICIENT_DATA,
            hint="run `edgeatlas bench run` or `edgeatlas predictors import NAME --path DIR` first",
        )
    bad = [r for r in rows if r.latency_ms is None or not math.isfinite(r.latency_ms) or r.latency_ms <= 0]
    bad_e = [r for r in rows if r.energy_mj is not None and (not math.isfinite(r.energy_mj) or r.energy_mj <= 0)]
    if bad or bad_e:
        r0 = (bad or bad_e)[0]
        raise EdgeatlasError(
            f"{len(bad)} ok measurements have a missing/NaN/non-positive latency_ms and {len(bad_e)} a NaN/non-positive "
            f"energy_mj (first: key {r0.key[:16]}, board {r0.board}, variant {r0.variant_id}, "
            f"latency_ms={r0.latency_ms!r}, energy_mj={r0.energy_mj!r})",
            code=ErrorCode.BAD_DATA,
            hint="re-measure those variants (`edgeatlas bench run`) or mark the rows failed; nothing was trained",
        )
    feats: dict[str, np.ndarray] = {}
    for v in store.list_variants():
        if v.features:
            feats[v.id] = features_from_dict(v.features, f"variant {v.id}").vector()
    missing = sorted({r.variant_id for r in rows if r.variant_id not in feats})
    if missing:
        raise EdgeatlasError(
            f"{len(missing)} measured variants have no ONNX features (e.g. {missing[0]})",
            code=ErrorCode.BAD_DATA,
            hint="re-run `edgeatlas zoo build` (it stores features) or import the dataset again",
        )
    groups: dict[str, list] = {}
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.key):
        groups.setdefault(r.device_class or r.board, []).append(r)
        h.update(f"{r.key}|{r.latency_ms!r}|{r.energy_mj!r}\n".encode())
    per_class: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    vids: dict[str, list[str]] = {}
    for c, rs in groups.items():
        X = np.array([feats[r.variant_id] for r in rs])
        lat = np.array([np.nan if r.latency_ms is None else r.latency_ms for r in rs], dtype=np.float64)
        en = np.array([np.nan if r.energy_mj is None else r.energy_mj for r in rs], dtype=np.float64)
        per_class[c] = (X, lat, en if np.isfinite(en).any() else None)
        vids[c] = [r.variant_id for r in rs]
    return TrainingData(per_class, vids, h.hexdigest(), len(rows))


def _held_out(ids: Sequence[str], fraction: float = 0.2) -> np.ndarray:
    """Deterministic held-out slice by variant id hash (same variants held out for every class)."""
    cut = int(fraction * 1000)
    return np.array([int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) % 1000 < cut for i in ids], dtype=bool)


def choose_probes(data: TrainingData, n: int = N_PROBES) -> tuple[list[str], np.ndarray]:
    """Probe set: the variants measured on the most classes, spread over MACs quantiles."""
    count: dict[str, int] = {}
    fv: dict[str, np.ndarray] = {}
    for c, ids in data.variant_ids.items():
        for vid in dict.fromkeys(ids):
            count[vid] = count.get(vid, 0) + 1
        X = data.per_class[c][0]
        for vid, x in zip(ids, X, strict=True):
            fv[vid] = x
    top = max(count.values())
    cands = sorted((v for v in count if count[v] == top), key=lambda v: fv[v][0])
    if len(cands) <= n:
        chosen = cands
    else:
        chosen = [cands[int(round(q))] for q in np.linspace(0, len(cands) - 1, n)]
    return chosen, np.array([fv[v] for v in chosen]) if chosen else np.zeros((0, len(FEATURE_NAMES)))


def fit_set(
    data: TrainingData, store=None, kind: str = "gbm", train_mask: dict[str, np.ndarray] | None = None
) -> PredictorSet:
    per = {}
    for c, (X, lat, en) in data.per_class.items():
        m = train_mask[c] if train_mask else np.ones(len(lat), bool)
        per[c] = (X[m], lat[m], en[m] if en is not None else None)
    facts = {}
    if store is not None:
        facts = {dc.name: dict(dc.facts or {}) for dc in store.list_device_classes()}
    probes, pf = choose_probes(data)
    return PredictorSet.fit(per, kind=kind, probe_ids=probes, probe_features=pf, class_facts=facts)


def score(
    pset: PredictorSet, data: TrainingData, mask: dict[str, np.ndarray], target: str = "latency"
) -> dict[str, Any]:
    """Metrics per class on the rows selected by ``mask`` (pooled: acc10, mape over all rows)."""
    out: dict[str, Any] = {"per_class": {}}
    preds, trues = [], []
    for c, (X, lat, en) in data.per_class.items():
        m = mask[c]
        y = lat if target == "latency" else en
        if y is None or c not in pset.classes:
            continue
        m = m & np.isfinite(y)
        if m.sum() < 2:
            continue
        p = pset.predict(X[m], device_class=c)
        pv = p.latency_ms if target == "latency" else p.energy_mj
        if pv is None:
            continue
        out["per_class"][c] = metrics(pv, y[m])
        preds.append(pv)
        trues.append(y[m])
    if preds:
        out.update(metrics(np.concatenate(preds), np.concatenate(trues)))
    return out


def libs() -> dict[str, str]:
    import scipy
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
    }


def save(pset: PredictorSet, name: str, data_hash: str) -> tuple[Path, str]:
    import skops.io as sio

    pset.meta = {**pset.meta, "libs": libs(), "data_hash": data_hash, "name": name}
    path = predictors_dir() / f"{name}-{data_hash[:12]}-{int(time.time() * 1000)}.skops"
    sio.dump(pset, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def load_file(path: str | Path, expected_sha256: str | None = None) -> PredictorSet:
    import sklearn
    import skops.io as sio

    p = Path(path)
    if not p.exists():
        raise EdgeatlasError(
            f"predictor file {p} is missing", code=ErrorCode.NOT_FOUND, hint="retrain with `edgeatlas predictors train`"
        )
    raw = p.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise EdgeatlasError(
            f"predictor file {p} does not match its recorded sha256 (modified or tampered); refusing to load it",
            code=ErrorCode.BAD_DATA,
            hint="retrain with `edgeatlas predictors train` (or restore the original file)",
        )
    try:
        untrusted = sio.get_untrusted_types(data=raw)
    except Exception as exc:  # noqa: BLE001 - skops raises several types on corrupt input
        raise EdgeatlasError(
            f"predictor file {p} is not a readable skops file ({exc})", code=ErrorCode.BAD_DATA
        ) from exc
    unknown = [t for t in untrusted if t not in TRUSTED_TYPES]
    if unknown:
        raise EdgeatlasError(
            f"predictor file {p} holds types outside the trusted list: {', '.join(unknown[:5])}",
            code=ErrorCode.BAD_DATA,
            hint="only load predictor files written by edgeatlas; retrain with `edgeatlas predictors train`",
        )
    pset = sio.loads(raw, trusted=[t for t in untrusted if t in TRUSTED_TYPES])
    if not isinstance(pset, PredictorSet):
        raise EdgeatlasError(f"predictor file {p} does not hold a PredictorSet", code=ErrorCode.BAD_DATA)
    written = (pset.meta.get("libs") or {}).get("scikit-learn")
    if written != sklearn.__version__:
        raise EdgeatlasError(
            f"predictor file {p} was written with scikit-learn {written}; this is {sklearn.__version__}",
            code=ErrorCode.BAD_DATA,
            hint="retrain with `edgeatlas predictors train` (models are not portable across scikit-learn versions)",
        )
    return pset


def load_champion(store, name: str = DEFAULT_NAME) -> tuple[Any, PredictorSet]:
    rec = store.champion(name)
    if rec is None:
        raise EdgeatlasError(
            f"no trained predictor {name!r}",
            code=ErrorCode.NOT_FOUND,
            hint="train one with `edgeatlas predictors train`",
        )
    # the sklearn version recorded in the store is checked before unpickling anything
    import sklearn

    written = (rec.libs or {}).get("scikit-learn")
    if written and written != sklearn.__version__:
        raise EdgeatlasError(
            f"predictor {name} v{rec.version} was trained with scikit-learn {written}; this is {sklearn.__version__}",
            code=ErrorCode.BAD_DATA,
            hint="retrain with `edgeatlas predictors train`",
        )
    return rec, load_file(rec.path, rec.file_sha256)


def predict_matrix(
    pset: PredictorSet,
    features: np.ndarray,
    *,
    device_class: str | None = None,
    facts: dict | None = None,
    probe_latencies: dict[str, float] | None = None,
):
    """The selector's entry point: features (rows = variants or split heads/tails) -> Prediction
    (latency_ms / energy_mj arrays with lo/hi intervals). Vectorised."""
    return pset.predict(features, device_class=device_class, facts=facts, probe_latencies=probe_latencies)


def _plot(path: Path, pred: np.ndarray, true: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.loglog(true, pred, ".", ms=3, alpha=0.5)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.6)
    ax.plot([lo, hi], [lo / 1.1, hi / 1.1], "k:", lw=0.6)
    ax.set_xlabel("measured")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(
    store,
    *,
    name: str = DEFAULT_NAME,
    device_class: str | None = None,
    target: str = "latency",
    kind: str = "gbm",
    promote: str = "always",
    source: str | None = None,
    report_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a challenger on the training slice, score it and the champion on the held-out slice.

    ``promote="always"`` (``predictors train``) makes it the champion; ``"if_better"``
    (``predictors retrain``) promotes only when it beats the champion, and does nothing when the
    data hash is unchanged (equal to the champion's, or to a challenger already rejected on it):
    then nothing is written, no version row, no file, no report.

    ``source`` restricts the measurements (e.g. ``probe`` for the fleet's own, ``dataset:*`` for
    imported ones). The report (JSON: champion and challenger held-out metrics, promoted or not; PNG:
    predicted vs measured) goes to ``report_dir`` (default ``reports_dir()``).
    """
    if target not in ("latency", "energy"):
        raise EdgeatlasError(f"--target must be latency or energy, not {target!r}", code=ErrorCode.INVALID_ARGUMENT)
    t0 = time.perf_counter()
    data = collect(store, device_class=device_class, source=source)
    if target == "energy" and not any(en is not None for _, _, en in data.per_class.values()):
        raise EdgeatlasError("no energy measurements to train on", code=ErrorCode.INSUFFICIENT_DATA)
    champ = store.champion(name)
    if promote == "if_better":
        same = [p for p in store.list_predictors(name) if p.data_hash == data.data_hash and p.target == target]
        if same:
            return {
                "status": "no new data",
                "name": name,
                "data_hash": data.data_hash,
                "rows": data.n_rows,
                "champion_version": champ.version if champ else None,
                "message": f"no new data since v{same[-1].version} ({same[-1].status}); nothing changed",
            }
    small = {c: len(v[1]) for c, v in data.per_class.items() if len(v[1]) < MIN_ROWS_PER_CLASS}
    skipped: dict[str, str] = {}
    if small and device_class is None and len(small) < len(data.per_class):
        # A whole-fleet run leaves out the classes with too few rows (e.g. an unseen board whose
        # probe set alone was measured: the selector predicts it k-shot) and says so.
        skipped = {c: f"{n} measurements; at least {MIN_ROWS_PER_CLASS} are needed" for c, n in small.items()}
        data = dataclasses.replace(
            data,
            per_class={c: v for c, v in data.per_class.items() if c not in small},
            variant_ids={c: v for c, v in data.variant_ids.items() if c not in small},
        )
        small = {}
    if small:
        c, n = next(iter(small.items()))
        raise EdgeatlasError(
            f"device class {c!r} has {n} measurements; at least {MIN_ROWS_PER_CLASS} are needed",
            code=ErrorCode.INSUFFICIENT_DATA,
            hint=f"measure {MIN_ROWS_PER_CLASS - n} more variants on it, or train one class with --class",
        )
    held = {c: _held_out(ids) for c, ids in data.variant_ids.items()}
    train_mask = {c: ~h for c, h in held.items()}
    if progress:
        progress(f"fitting {len(data.per_class)} classes on {data.n_rows} rows")
    chall = fit_set(data, store, kind=kind, train_mask=train_mask)
    chall_score = score(chall, data, held, target)
    champ_score = None
    if champ is not None:
        try:
            _, champ_set = load_champion(store, name)
            champ_score = score(champ_set, data, held, target)
        except EdgeatlasError as exc:
            champ_score = {"error": exc.one_line()}
    better = (
        champ_score is None
        or "mape" not in champ_score
        or ("mape" in chall_score and chall_score["mape"] < champ_score["mape"])
    )
    status = "champion" if (promote == "always" or better) else "rejected"
    path, sha = save(chall, name, data.data_hash)
    rec = store.add_predictor(
        name=name,
        target=target,
        device_class=device_class,
        path=str(path),
        file_sha256=sha,
        data_hash=data.data_hash,
        metrics={k: v for k, v in chall_score.items()},
        libs=libs(),
        status=status,
    )
    report = {
        "status": "promoted" if status == "champion" else "kept champion",
        "promoted": status == "champion",
        "source": source,
        "name": name,
        "version": rec.version,
        "target": target,
        "data_hash": data.data_hash,
        "rows": data.n_rows,
        "classes": sorted(data.per_class),
        "skipped_classes": skipped,
        "challenger": chall_score,
        "champion": champ_score,
        "champion_version_before": champ.version if champ else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "path": str(path),
    }
    stem = f"{name}-v{rec.version}".replace("/", "_").replace(":", "_")
    out_dir = Path(report_dir) if report_dir is not None else reports_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    rp = out_dir / f"{stem}.json"
    rp.write_text(json.dumps(report, indent=2, default=float))
    preds, trues = [], []
    for c, (X, lat, en) in data.per_class.items():
        y = lat if target == "latency" else en
        m = held[c] & np.isfinite(y) if y is not None else None
        if m is None or m.sum() == 0:
            continue
        p = chall.predict(X[m], device_class=c)
        pv = p.latency_ms if target == "latency" else p.energy_mj
        if pv is not None:
            preds.append(pv)
            trues.append(y[m])
    if preds:
        plot = out_dir / f"{stem}.png"
        _plot(plot, np.concatenate(preds), np.concatenate(trues), f"{name} v{rec.version} held-out {target}")
        report["plot"] = str(plot)
    report["report"] = str(rp)
    rp.write_text(json.dumps(report, indent=2, default=float))
    return report


def finite_or_none(x: float) -> float | None:
    return x if (x is not None and math.isfinite(x)) else None
