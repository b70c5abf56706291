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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictors.evaluate import metrics
from predictors.features import FEATURE_NAMES, FEATURES_VERSION, features_from_dict
from predictors.models import KINDS, MIN_ROWS_PER_CLASS, PredictorSet
from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import predictors_dir, reports_dir

DEFAULT_NAME = "default"
N_PROBES = 10
NAME_MAX = 256  # the store's predictors.name column
STEM_MAX = 100  # the file-name part taken from a predictor name (file names stop at 255 bytes)

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


#: The energy_source of a measurement with energy but no label (rows from before labels were checked)
UNLABELLED_ENERGY = "unlabelled"


@dataclass(frozen=True)
class TrainingData:
    per_class: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    variant_ids: dict[str, list[str]]
    data_hash: str
    n_rows: int
    # per class, each row's index into energy_source_names (-1: no energy): where the energy came from
    energy_source_codes: dict[str, np.ndarray] = field(default_factory=dict)
    energy_source_names: tuple[str, ...] = ()


def collect(
    store,
    device_class: str | None = None,
    source: str | None = None,
    include_evaluation: bool = False,
    graph_opt: str = "all",
    drift_correct: bool = False,
) -> TrainingData:
    """Measurements (status ok, whole model) joined with variant features, grouped by device class.

    Vectorised for ~1M rows: one lean column query (no ORM records), one feature matrix indexed by
    variant, classes and the key order by numpy sorts. Rows are in key order within a class and
    classes in order of their first key, as they always were (the fit depends on both).
    """
    return _group(_load(store, device_class, source, include_evaluation, graph_opt, drift_correct))


@dataclass(frozen=True)
class _Loaded:
    """The validated measurement columns and their data hash, before grouping by class."""

    n: int
    lat: np.ndarray
    en: np.ndarray  # NaN where not measured
    order: np.ndarray  # row indices in key order
    features: np.ndarray  # one row per measured variant
    vcode: np.ndarray  # each row's index into ``features`` / ``variants``
    variants: list[str]
    ccode: np.ndarray  # each row's index into ``classes``
    classes: list[str]
    data_hash: str
    evaluation_left_out: tuple[str, ...] = ()
    drift: dict[str, Any] | None = None  # with drift correction: what was corrected (the report's)
    esrc: np.ndarray | None = None  # each row's index into ``esrc_names`` (-1: no energy)
    esrc_names: tuple[str, ...] = ()


def predictor_graph_level(store, name: str, graph_opt: str | None = None) -> str:
    """The onnxruntime graph level a (re)train of predictor ``name`` fits: ``graph_opt`` if given,
    else its champion's (``all`` without one). A level other than the champion's is refused: one
    predictor is one runtime config (its retrains, the selector's measured lookups, k-shot probes)."""
    return _graph_level(store.champion(name), name, graph_opt)


def _graph_level(champ, name: str, graph_opt: str | None) -> str:
    """:func:`predictor_graph_level` given the champion's record (None: no champion)."""
    from probes.agent import GRAPH_OPT_LEVELS, graph_level

    if graph_opt is not None and graph_opt not in GRAPH_OPT_LEVELS:
        raise EdgeatlasError(
            f"unknown graph level {graph_opt!r}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"use one of {', '.join(GRAPH_OPT_LEVELS)}",
        )
    have = graph_level(champ.metrics) if champ is not None else None
    if graph_opt is None:
        return have or "all"
    if have is not None and have != graph_opt:
        raise EdgeatlasError(
            f"predictor {name!r} v{champ.version} predicts onnxruntime graph level {have!r}, not "
            f"{graph_opt!r}: training it on the other level's rows would swap one runtime config's "
            "latencies for another's",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"train another predictor for that level (`--graph-opt {graph_opt} --name NAME`), or "
            f"drop --graph-opt to keep {have!r}",
        )
    return graph_opt


TARGETS = ("latency", "energy")


@dataclass(frozen=True)
class PredictorSettings:
    """What a (re)train of one predictor fits: :func:`predictor_settings`."""

    device_class: str | None  # None: every class
    target: str
    kind: str
    source: str | None  # None: every source
    graph_opt: str
    drift_correct: bool
    include_evaluation: bool


def predictor_settings(
    store,
    name: str,
    *,
    device_class: str | None = None,
    target: str | None = None,
    kind: str | None = None,
    source: str | None = None,
    graph_opt: str | None = None,
    drift_correct: bool | None = None,
    include_evaluation: bool | None = None,
) -> PredictorSettings:
    """The settings a (re)train of predictor ``name`` fits with: each one given, else its champion's
    (recorded at training), else the default (every class, latency, auto, every source, level all,
    no drift correction, evaluation devices left out). So a retrain with no option refits the
    champion's predictor, and finds "no new data" when its rows did not change.

    One predictor is one device class (or every class), one target and one graph level: another
    class, target or level than the champion's is refused (another --name is another predictor).
    ``kind``, ``source``, ``drift_correct`` and ``include_evaluation`` may change: the challenger
    is scored against the champion on its held-out rows and promoted only if better."""
    if target is not None and target not in TARGETS:
        raise EdgeatlasError(
            f"--target must be latency or energy, not {target!r}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="use --target latency or --target energy",
        )
    if kind is not None and kind not in KINDS:
        raise EdgeatlasError(
            f"--kind must be one of {', '.join(KINDS)}, not {kind!r}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"use one of {', '.join(KINDS)}",
        )
    champ = store.champion(name)
    level = _graph_level(champ, name, graph_opt)  # refuses another level
    have = (champ.metrics or {}) if champ is not None else {}
    if champ is not None and device_class is not None and device_class != champ.device_class:
        fitted = f"device class {champ.device_class!r} only" if champ.device_class else "every device class"
        raise EdgeatlasError(
            f"predictor {name!r} v{champ.version} is fitted on {fitted}, not on {device_class!r}: one "
            "predictor is one device class (or every class)",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"train another predictor for that class (`--class {device_class} --name NAME`), or drop "
            "--class to keep the champion's",
        )
    if champ is not None and target is not None and target != champ.target:
        raise EdgeatlasError(
            f"predictor {name!r} v{champ.version} predicts {champ.target}, not {target}: one predictor is "
            "scored and promoted on one target",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"train another predictor for that target (`--target {target} --name NAME`), or drop "
            f"--target to keep {champ.target!r}",
        )
    if include_evaluation is None:
        include_evaluation = bool(have.get("include_evaluation", False))
    return PredictorSettings(
        device_class=device_class if device_class is not None else (champ.device_class if champ else None),
        target=target or (champ.target if champ else "latency"),
        kind=kind or have.get("kind") or "auto",
        # "*": every source, as none; a champion from before sources were recorded trained on every source
        source=None if source == "*" else (source if source is not None else have.get("source")),
        graph_opt=level,
        # drift correction: as given, else the champion's setting (off without one)
        drift_correct=bool(drift_correct if drift_correct is not None else have.get("drift_correct")),
        include_evaluation=include_evaluation,
    )


def retrain_args(name: str, settings: PredictorSettings) -> list[str]:
    """``edgeatlas`` arguments of a retrain of ``name`` with these settings, every one spelled out
    (``retrain --schedule``'s units: they keep doing what the champion does)."""
    args = ["predictors", "retrain", "--name", name, "--target", settings.target, "--kind", settings.kind]
    if settings.device_class is not None:
        args += ["--class", settings.device_class]
    if settings.source is not None:
        args += ["--source", settings.source]
    if settings.graph_opt != "all":
        args += ["--graph-opt", settings.graph_opt]
    if settings.drift_correct:
        args += ["--drift-correct"]
    if settings.include_evaluation:
        args += ["--include-evaluation"]
    return args


def drift_corrected(
    lat: np.ndarray, per_ref: np.ndarray, ref_ms: np.ndarray, ccode: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Latencies with host drift taken out, by the drift reference (``bench run --drift-ref``).

    A row measured with the reference has its p50 in reference units (``per_ref``, the model's p50
    over the reference's, timed over the same seconds) and the reference's p50 (``ref_ms``). Its
    corrected latency is ``per_ref`` times its class's median reference p50: the model's latency at
    the class's typical speed, still in ms. Rows without a reference (NaN) keep their raw p50.
    Returns the latencies and a summary per class (rows corrected, of how many; the median
    reference p50 used)."""
    with np.errstate(invalid="ignore"):
        has = np.isfinite(per_ref) & (per_ref > 0) & np.isfinite(ref_ms) & (ref_ms > 0)
    out = lat.copy()
    summary: dict[str, Any] = {}
    for c, name in enumerate(classes):
        rows = ccode == c
        m = rows & has
        if not m.any():
            summary[name] = {"rows_corrected": 0, "rows": int(rows.sum())}
            continue
        med = float(np.median(ref_ms[m]))
        out[m] = per_ref[m] * med
        summary[name] = {"rows_corrected": int(m.sum()), "rows": int(rows.sum()), "ref_p50_ms": med}
    return out, summary


def evaluation_classes(store) -> set[str]:
    """Device classes marked as evaluation devices (imported datasets: ../shared/datasets/README.md).
    They stand for "a device nobody has measured": never fitted on, only predicted k-shot."""
    return {c.name for c in store.list_device_classes() if (c.facts or {}).get("evaluation")}


def _load(
    store,
    device_class: str | None,
    source: str | None,
    include_evaluation: bool = False,
    graph_opt: str = "all",
    drift_correct: bool = False,
) -> _Loaded:
    held_back = set() if include_evaluation else evaluation_classes(store)
    if device_class in held_back:
        raise EdgeatlasError(
            f"device class {device_class!r} is an evaluation device: it is never trained on",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="predict it k-shot (`edgeatlas predictors predict --probe-latencies FILE`) or score it with "
            "`edgeatlas predictors eval`; --include-evaluation trains on it anyway",
        )
    drift_cols = ("stats.p50_per_ref", "stats.ref_p50_ms") if drift_correct else ()  # read only when asked
    cols = store.measurement_columns(
        ("key", "variant_id", "device_class", "board", "latency_ms", "energy_mj", "energy_source", *drift_cols),
        device_class=device_class,
        source=source,
        status="ok",
        whole_model_only=True,  # split heads/tails have their own features
        graph_opt=graph_opt,  # one onnxruntime graph level per predictor: levels are different latencies
    )
    left_out = tuple(sorted(held_back.intersection(cols["device_class"]))) if held_back else ()
    if left_out:
        keep = [c not in held_back for c in cols["device_class"]]
        cols = {k: [x for x, ok in zip(v, keep, strict=True) if ok] for k, v in cols.items()}
    keys: list[str] = cols["key"]
    n = len(keys)
    if not n:
        raise EdgeatlasError(
            "empty training set: no successful measurements"
            + (f" for class {device_class!r}" if device_class else "")
            + (f" at --graph-opt {graph_opt}" if graph_opt != "all" else "")
            + (f" outside the evaluation devices ({', '.join(left_out)})" if left_out else ""),
            code=ErrorCode.INSUFFICIENT_DATA,
            hint=f"run `edgeatlas bench run --graph-opt {graph_opt}` first"
            if graph_opt != "all"
            else "run `edgeatlas bench run` or `edgeatlas predictors import NAME --path DIR` first",
        )
    lat = np.array(cols["latency_ms"], dtype=np.float64)  # None -> NaN
    en_none = np.fromiter((e is None for e in cols["energy_mj"]), dtype=bool, count=n)
    en = np.array(cols["energy_mj"], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(lat) & (lat > 0))
        bad_e = ~en_none & ~(np.isfinite(en) & (en > 0))
    if bad.any() or bad_e.any():
        i = int(np.flatnonzero(bad)[0] if bad.any() else np.flatnonzero(bad_e)[0])
        raise EdgeatlasError(
            f"{int(bad.sum())} ok measurements have a missing/NaN/non-positive latency_ms and {int(bad_e.sum())} a "
            f"NaN/non-positive energy_mj (first: key {keys[i][:16]}, board {cols['board'][i]}, variant "
            f"{cols['variant_id'][i]}, latency_ms={cols['latency_ms'][i]!r}, energy_mj={cols['energy_mj'][i]!r})",
            code=ErrorCode.BAD_DATA,
            hint="re-measure those variants (`edgeatlas bench run`) or mark the rows failed; nothing was trained",
        )
    # where each row's energy came from (measured:<backend> / estimated:<method>), as codes
    esrc = np.full(n, -1, dtype=np.intp)
    has_e = ~en_none
    esrc_names: list[str] = []
    if has_e.any():
        labels_e = [s or UNLABELLED_ENERGY for s, h in zip(cols["energy_source"], has_e.tolist(), strict=True) if h]
        esrc_names, esrc[has_e] = _codes(labels_e)
    # one feature matrix over the measured variants; their stored feature dicts are validated
    # (only theirs: an unmeasured variant of an older feature set does not block training)
    measured, vcode = _codes(cols["variant_id"])
    wanted = set(measured)
    feats: dict[str, np.ndarray] = {}
    for v in store.list_variants():
        if v.features and v.id in wanted:
            feats[v.id] = features_from_dict(v.features, f"variant {v.id}").vector()
    missing = sorted(v for v in measured if v not in feats)
    if missing:
        raise EdgeatlasError(
            f"{len(missing)} measured variants have no ONNX features (e.g. {missing[0]})",
            code=ErrorCode.BAD_DATA,
            hint="re-run `edgeatlas zoo build` (it stores features) or import the dataset again",
        )
    F = np.array([feats[v] for v in measured], dtype=np.float64).reshape(len(measured), len(FEATURE_NAMES))
    labels = cols["device_class"]
    if not all(labels):  # a row without a class is grouped under its board
        labels = [d or b for d, b in zip(labels, cols["board"], strict=True)]
    names, ccode = _codes(labels)
    drift = None
    if drift_correct:
        per_ref, ref_ms = (np.array(cols[c], dtype=np.float64) for c in drift_cols)  # None -> NaN
        lat, by_class = drift_corrected(lat, per_ref, ref_ms, ccode, names)
        done = sum(v["rows_corrected"] for v in by_class.values())
        if not done:
            raise EdgeatlasError(
                f"--drift-correct: none of the {n} measurements was taken with the drift reference",
                code=ErrorCode.INSUFFICIENT_DATA,
                hint="measure with `edgeatlas bench run --drift-ref` first, or train without --drift-correct",
            )
        drift = {"rows_corrected": done, "rows": n, "classes": by_class}
    # key order (UTF-8 bytes sort as code points do, i.e. as Python sorts the str keys)
    kb = np.array([k.encode() for k in keys])
    order = np.argsort(kb, kind="stable")
    # The data hash: every row's key, latency and energy (NaN: none) in key order, as fixed-width
    # bytes. Deterministic, and any added/removed row or changed value changes it. (Version 2: the
    # row-by-row text hash it replaces differs, so the first retrain after the change trains once.)
    # The feature set version is part of it: after an upgrade the first retrain trains.
    # Drift-corrected latencies are other numbers: they hash apart from the raw ones.
    tag = "|drift-corrected" if drift_correct else ""
    h = hashlib.sha256(f"edgeatlas-training-data/2|features {FEATURES_VERSION}{tag}|{n}|{kb.dtype.str}\n".encode())
    for part in (kb[order], lat[order].astype("<f8"), en[order].astype("<f8")):
        h.update(np.ascontiguousarray(part).tobytes())
    return _Loaded(
        n, lat, en, order, F, vcode, measured, ccode, names, h.hexdigest(), left_out, drift, esrc, tuple(esrc_names)
    )


def _group(d: _Loaded) -> TrainingData:
    """Rows grouped by class: (features, latency, energy or None) and the variant ids."""
    order, names, vcode, F, lat, en = d.order, d.classes, d.vcode, d.features, d.lat, d.en
    csorted = d.ccode[order]
    _, first = np.unique(csorted, return_index=True)
    by_class = order[np.argsort(csorted, kind="stable")]  # class-major, key order within a class
    bounds = np.concatenate([[0], np.cumsum(np.bincount(csorted, minlength=len(names)))])
    vid_arr = np.array(d.variants, dtype=object)
    per_class: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    vids: dict[str, list[str]] = {}
    esrc: dict[str, np.ndarray] = {}
    for c in np.argsort(first, kind="stable"):  # classes in order of their first key
        rows = by_class[bounds[c] : bounds[c + 1]]
        e = en[rows]
        per_class[names[c]] = (F[vcode[rows]], lat[rows], e if np.isfinite(e).any() else None)
        vids[names[c]] = vid_arr[vcode[rows]].tolist()
        if d.esrc is not None:
            esrc[names[c]] = d.esrc[rows]
    return TrainingData(per_class, vids, d.data_hash, d.n, esrc, d.esrc_names)


def _codes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct values in order of first appearance, and each value's index among them."""
    distinct = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(distinct)}
    return distinct, np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values))


def _held_out(ids: Sequence[str], fraction: float = 0.2) -> np.ndarray:
    """Deterministic held-out slice by variant id hash (same variants held out for every class)."""
    cut = int(fraction * 1000)
    held = {i: int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) % 1000 < cut for i in dict.fromkeys(ids)}
    return np.fromiter((held[i] for i in ids), dtype=bool, count=len(ids))


def choose_probes(data: TrainingData, n: int = N_PROBES) -> tuple[list[str], np.ndarray]:
    """Probe set: the variants measured on the most classes, spread over MACs quantiles."""
    count: dict[str, int] = {}
    fv: dict[str, np.ndarray] = {}
    for c, ids in data.variant_ids.items():
        last = dict(zip(ids, range(len(ids)), strict=True))  # a variant's last row in the class
        for vid in last:
            count[vid] = count.get(vid, 0) + 1
        X = data.per_class[c][0]
        if len(X) != len(ids):
            raise ValueError(f"class {c!r}: {len(X)} feature rows for {len(ids)} variant ids")
        fv.update(zip(last, X[list(last.values())], strict=True))
    top = max(count.values())
    cands = sorted((v for v in count if count[v] == top), key=lambda v: fv[v][0])
    if len(cands) <= n:
        chosen = cands
    else:
        chosen = [cands[int(round(q))] for q in np.linspace(0, len(cands) - 1, n)]
    return chosen, np.array([fv[v] for v in chosen]) if chosen else np.zeros((0, len(FEATURE_NAMES)))


def fit_set(
    data: TrainingData,
    store=None,
    kind: str = "auto",
    train_mask: dict[str, np.ndarray] | None = None,
    n_jobs: int | None = None,
) -> PredictorSet:
    per = {}
    for c, (X, lat, en) in data.per_class.items():
        m = train_mask[c] if train_mask else np.ones(len(lat), bool)
        per[c] = (X[m], lat[m], en[m] if en is not None else None)
    facts = {}
    if store is not None:
        facts = {dc.name: dict(dc.facts or {}) for dc in store.list_device_classes()}
    probes, pf = choose_probes(data)
    pset = PredictorSet.fit(per, kind=kind, probe_ids=probes, probe_features=pf, class_facts=facts, n_jobs=n_jobs)
    # every row, held-out ones too: scoring uses the class regressors only, and k-shot wants every variant
    pset.set_measured(measured_latencies(data))
    sources = energy_sources(data, train_mask)
    pset.meta["energy_sources"] = {c: v for c, v in sources.items() if pset.classes[c].get("energy") is not None}
    return pset


def energy_sources(data: TrainingData, train_mask: dict[str, np.ndarray] | None = None) -> dict[str, list[str]]:
    """Per class with energy, the energy_source labels of the rows its energy model is fitted on
    (``measured:<backend>``, ``estimated:<method>``), sorted: the provenance of predicted energy."""
    out: dict[str, list[str]] = {}
    names = data.energy_source_names
    for c, (_, _, en) in data.per_class.items():
        codes = data.energy_source_codes.get(c)
        if en is None or codes is None:
            continue
        m = np.isfinite(en) & (codes >= 0)
        if train_mask:
            m &= train_mask[c]
        if m.any():
            out[c] = sorted(names[i] for i in np.unique(codes[m]).tolist())
    return out


def measured_latencies(
    data: TrainingData, train_mask: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """Per class, {variant id: geometric mean of its measured latencies} over the training rows:
    the reference columns of k-shot for the variants a class measured (PredictorSet.set_measured)."""
    out: dict[str, dict[str, float]] = {}
    for c, (_, lat, _) in data.per_class.items():
        ids = data.variant_ids[c]
        m = train_mask[c] if train_mask else np.ones(len(lat), bool)
        ok = m & np.isfinite(lat) & (lat > 0)
        logs = np.log(np.where(ok, lat, 1.0))
        acc: dict[str, list[float]] = {}
        for vid, good, v in zip(ids, ok.tolist(), logs.tolist(), strict=True):
            if good:
                a = acc.setdefault(vid, [0.0, 0.0])
                a[0] += v
                a[1] += 1.0
        out[c] = {vid: float(math.exp(a[0] / a[1])) for vid, a in acc.items()}
    return out


def held_out_predictions(
    pset: PredictorSet, data: TrainingData, mask: dict[str, np.ndarray], target: str = "latency"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class the set can predict: (predicted, measured) ``target`` on the rows of ``mask``
    whose target is finite. Only that target's regressor runs (no interval, no other target)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c, (X, lat, en) in data.per_class.items():
        y = lat if target == "latency" else en
        if y is None or c not in pset.classes:
            continue
        est = pset.classes[c].get(target)
        m = mask[c] & np.isfinite(y)
        if est is None or not m.any():
            continue
        out[c] = (est.predict(pset._check_features(X[m])), y[m])
    return out


def score(
    pset: PredictorSet,
    data: TrainingData,
    mask: dict[str, np.ndarray],
    target: str = "latency",
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Metrics per class on the rows selected by ``mask`` (pooled: acc10, mape over all rows).

    ``predictions``: :func:`held_out_predictions` of the same arguments, when already computed."""
    if predictions is None:
        predictions = held_out_predictions(pset, data, mask, target)
    out: dict[str, Any] = {"per_class": {}}
    preds, trues = [], []
    for c, (pv, y) in predictions.items():
        if len(y) < 2:
            continue
        out["per_class"][c] = metrics(pv, y)
        preds.append(pv)
        trues.append(y)
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
        "edgeatlas-features": str(FEATURES_VERSION),
    }


def _check_features_version(libs_: dict | None, what: str) -> None:
    """Refuse a predictor fitted on another feature set (its columns mean other things)."""
    written = (libs_ or {}).get("edgeatlas-features", "1")
    if written != str(FEATURES_VERSION):
        raise EdgeatlasError(
            f"{what} was fitted on feature set version {written}; this edgeatlas computes version {FEATURES_VERSION}",
            code=ErrorCode.BAD_DATA,
            hint="refresh the variants' features (`edgeatlas zoo refresh-features`, or `edgeatlas predictors "
            "import NAME` again) and retrain with `edgeatlas predictors retrain`",
        )


def check_name(name: str) -> str:
    """A predictor name the store and the file names can hold, else an error naming the fix. Any
    other text is kept as given (``class:mobile-ml-benchmark/s10``); files use :func:`file_stem`."""
    why = None
    if not any(ch.isalnum() for ch in name):
        why = "it needs at least one letter or digit"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        why = "it holds a control character (a newline, a tab ...)"
    elif len(name) > NAME_MAX:
        why = f"it is {len(name)} characters long; at most {NAME_MAX}"
    if why:
        raise EdgeatlasError(
            f"predictor name {name!r}: {why}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="give another --name, e.g. `--name fleet-latency`; /, : and other characters are allowed "
            "(the files on disk get a safe version of the name)",
        )
    return name


def file_stem(name: str) -> str:
    """The part of a predictor's file names (model, report) taken from its name: letters, digits,
    ``.``, ``_`` and ``-``; every other character becomes ``_``, so no name can leave its folder
    (``../esc`` -> ``.._esc~<hash>``). A name that had to change, or a long one (cut), gets a hash
    of the whole name after it, so two names never share a file (``a/b`` and ``a_b``); so does a name
    with a capital, since a file system that ignores case (macOS, Windows) would give ``Fast`` and
    ``fast`` one file."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if stem != name or len(stem) > STEM_MAX or stem != stem.lower():
        stem = f"{stem[:STEM_MAX]}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return stem


def save(pset: PredictorSet, name: str, data_hash: str) -> tuple[Path, str]:
    import skops.io as sio

    pset.meta = {**pset.meta, "libs": libs(), "data_hash": data_hash, "name": name}
    path = predictors_dir() / f"{file_stem(name)}-{data_hash[:12]}-{int(time.time() * 1000)}.skops"
    sio.dump(pset, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def load_file(path: str | Path, expected_sha256: str | None = None, *, check_features: bool = True) -> PredictorSet:
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
    if check_features:
        _check_features_version(pset.meta.get("libs"), f"predictor file {p}")
    return pset


def load_champion(store, name: str = DEFAULT_NAME, *, check_features: bool = True) -> tuple[Any, PredictorSet]:
    """The champion's record and predictor set. ``check_features=False``: for a caller that reads
    only what does not depend on the feature set (the probe-set ids), not predictions."""
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
    if check_features:
        _check_features_version(rec.libs, f"predictor {name} v{rec.version}")
    return rec, load_file(rec.path, rec.file_sha256, check_features=check_features)


def predict_matrix(
    pset: PredictorSet,
    features: np.ndarray,
    *,
    device_class: str | None = None,
    facts: dict | None = None,
    probe_latencies: dict[str, float] | None = None,
    variant_ids: list[str | None] | None = None,
):
    """The selector's entry point: features (rows = variants or split heads/tails) -> Prediction
    (latency_ms / energy_mj arrays with lo/hi intervals). Vectorised. ``variant_ids``: see
    PredictorSet.predict (k-shot's measured reference columns)."""
    return pset.predict(
        features, device_class=device_class, facts=facts, probe_latencies=probe_latencies, variant_ids=variant_ids
    )


PLOT_MAX_POINTS = 20_000  # a held-out scatter of more points is drawn from a seeded random subset


def _plot(path: Path, pred: np.ndarray, true: np.ndarray, title: str) -> None:
    if len(pred) > PLOT_MAX_POINTS:  # 200k dots take seconds to draw and read as one blob
        keep = np.sort(np.random.default_rng(0).choice(len(pred), size=PLOT_MAX_POINTS, replace=False))
        title = f"{title} ({PLOT_MAX_POINTS} of {len(pred)} rows)"
        pred, true = pred[keep], true[keep]
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
    target: str | None = None,
    kind: str | None = None,
    promote: str = "always",
    source: str | None = None,
    report_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    include_evaluation: bool | None = None,
    graph_opt: str | None = None,
    drift_correct: bool | None = None,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Train a challenger on the training slice, score it and the champion on the held-out slice.

    ``promote="always"`` (``predictors train``) makes it the champion; ``"if_better"``
    (``predictors retrain``) promotes only when it beats the champion, and does nothing when the
    data hash is unchanged (equal to the champion's, or to a challenger already rejected on it)
    for the same target, kind and class: then nothing is written, no version row, no file, no report.

    ``device_class``, ``target``, ``kind``, ``source`` and ``include_evaluation`` left None are the
    champion's (:func:`predictor_settings`; another class or target than the champion's is refused),
    as are ``graph_opt`` and ``drift_correct``.

    ``source`` restricts the measurements (e.g. ``probe`` for the fleet's own, ``dataset:*`` for
    imported ones). ``graph_opt`` keeps the measurements taken at that onnxruntime graph optimization
    level (``bench run --graph-opt``; ``all`` includes every row that names no level). None means
    the level of the predictor's champion, else ``all``; a level other than the champion's is
    refused (a predictor stays one runtime config: train another name for another level).
    The report (JSON: champion and challenger held-out metrics, promoted or not; PNG:
    predicted vs measured) goes to ``report_dir`` (default ``reports_dir()``).

    Evaluation devices (:func:`evaluation_classes`) are left out unless ``include_evaluation``; the
    report names them (``evaluation_left_out``).

    ``drift_correct`` fits latencies with the host's drift taken out (:func:`drift_corrected`: rows
    measured with ``bench run --drift-ref``; the others keep their p50). None keeps the champion's
    setting (off without one); the report's ``drift_correct`` says how many rows were corrected.

    ``jobs``: worker processes for the fits of a training (kind linear: from PARALLEL_MIN_ROWS rows; default:
    the CPUs this process may use, 1: every fit in this process). The models do not depend on it.
    """
    check_name(name)  # before any row is read: a name the files cannot carry fails now, not after the fit
    cfg = predictor_settings(
        store,
        name,
        device_class=device_class,
        target=target,
        kind=kind,
        source=source,
        graph_opt=graph_opt,
        drift_correct=drift_correct,
        include_evaluation=include_evaluation,
    )
    device_class, target, kind, source = cfg.device_class, cfg.target, cfg.kind, cfg.source
    graph_opt, drift_correct, include_evaluation = cfg.graph_opt, cfg.drift_correct, cfg.include_evaluation
    t0 = time.perf_counter()
    phases: dict[str, float] = {}  # wall seconds per step, in the report

    def lap(step: str) -> None:
        phases[step] = round(time.perf_counter() - t0 - sum(phases.values()), 2)

    champ = store.champion(name)
    # validated, hashed; grouped only if needed
    loaded = _load(store, device_class, source, include_evaluation, graph_opt, drift_correct)
    drift = loaded.drift
    left_out = loaded.evaluation_left_out
    if target == "energy" and not np.isfinite(loaded.en).any():
        raise EdgeatlasError("no energy measurements to train on", code=ErrorCode.INSUFFICIENT_DATA)
    if promote == "if_better":
        # the same data, target, kind and class (a version from before kinds were recorded matches any)
        same = [
            p
            for p in store.list_predictors(name)
            if p.data_hash == loaded.data_hash
            and p.target == target
            and p.metrics.get("kind", kind) == kind
            and p.device_class == device_class
        ]
        if same:
            return {
                "status": "no new data",
                "name": name,
                "graph_opt": graph_opt,
                "drift_correct": drift,
                "target": target,
                "kind": kind,
                "class": device_class,
                "source": source,
                "data_hash": loaded.data_hash,
                "rows": loaded.n,
                "champion_version": champ.version if champ else None,
                "message": f"no new data since v{same[-1].version} ({same[-1].status}); nothing changed",
            }
    data = _group(loaded)
    del loaded
    lap("collect")
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
            energy_source_codes={c: v for c, v in data.energy_source_codes.items() if c not in small},
        )
        small = {}
    if small:
        c, n = next(iter(small.items()))
        raise EdgeatlasError(
            f"device class {c!r} has {n} measurements; at least {MIN_ROWS_PER_CLASS} are needed",
            code=ErrorCode.INSUFFICIENT_DATA,
            hint=f"measure {MIN_ROWS_PER_CLASS - n} more variants on it"
            + ("" if device_class is not None else ", or train one class with --class"),
        )
    held = {c: _held_out(ids) for c, ids in data.variant_ids.items()}
    train_mask = {c: ~h for c, h in held.items()}
    if progress:
        progress(f"fitting {len(data.per_class)} classes on {data.n_rows} rows")
    chall = fit_set(data, store, kind=kind, train_mask=train_mask, n_jobs=jobs)
    lap("fit")
    chall_pred = held_out_predictions(chall, data, held, target)  # scored, then plotted
    chall_score = score(chall, data, held, target, chall_pred)
    champ_score = None
    if champ is not None:
        try:
            _, champ_set = load_champion(store, name)
            champ_score = score(champ_set, data, held, target)
        except EdgeatlasError as exc:
            champ_score = {"error": exc.one_line()}
    lap("score")
    better = (
        champ_score is None
        or "mape" not in champ_score
        or ("mape" in chall_score and chall_score["mape"] < champ_score["mape"])
    )
    status = "champion" if (promote == "always" or better) else "rejected"
    chosen_kinds = chall.chosen_kinds()
    path, sha = save(chall, name, data.data_hash)
    lap("save")
    rec = store.add_predictor(
        name=name,
        target=target,
        device_class=device_class,
        path=str(path),
        file_sha256=sha,
        data_hash=data.data_hash,
        metrics={
            **chall_score,
            "kind": kind,
            "chosen_kinds": chosen_kinds,
            "graph_opt": graph_opt,
            "drift_correct": drift_correct,
            "source": source,
            "include_evaluation": include_evaluation,
        },
        libs=libs(),
        status=status,
    )
    report = {
        "status": "promoted" if status == "champion" else "kept champion",
        "promoted": status == "champion",
        "source": source,
        "graph_opt": graph_opt,
        "drift_correct": drift,
        "name": name,
        "version": rec.version,
        "target": target,
        "kind": kind,
        "class": device_class,
        "data_hash": data.data_hash,
        "rows": data.n_rows,
        "classes": sorted(data.per_class),
        "skipped_classes": skipped,
        "evaluation_left_out": list(left_out),
        "challenger": chall_score,
        "chosen_kinds": chosen_kinds,
        "energy_sources": chall.meta.get("energy_sources", {}),
        "champion": champ_score,
        "champion_version_before": champ.version if champ else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "phases_s": phases,
        "path": str(path),
    }
    stem = f"{file_stem(name)}-v{rec.version}"
    out_dir = Path(report_dir) if report_dir is not None else reports_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    rp = out_dir / f"{stem}.json"
    rp.write_text(json.dumps(report, indent=2, default=float))
    if chall_pred:
        plot = out_dir / f"{stem}.png"
        pv, yv = (np.concatenate(v) for v in zip(*chall_pred.values(), strict=True))
        _plot(plot, pv, yv, f"{name} v{rec.version} held-out {target}")
        report["plot"] = str(plot)
        lap("plot")
    report["report"] = str(rp)
    rp.write_text(json.dumps(report, indent=2, default=float))
    return report


def finite_or_none(x: float) -> float | None:
    return x if (x is not None and math.isfinite(x)) else None
