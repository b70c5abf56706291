"""k-shot from the store: a board of a class the predictors never saw is predicted from its
stored probe-set measurements (real HELP NB201 latencies, real graph features, real training)."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from predictors import nb201
from predictors.features import feature_dict
from predictors.training import load_champion, train
from registry.selector.sources import load_candidates, resolve_device

HELP_CSV = "/work/shared/datasets/help/nb201_latency_ms.csv"
TRAIN = ("pixel3", "samsung_a50", "silver_4114")
UNSEEN = "samsung_s7"  # a HELP development device (not one of the evaluation devices)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    from registry.store import Store

    s = Store.open(f"sqlite:///{tmp_path / 'atlas.db'}")
    with open(HELP_CSV) as fh:
        rows = [r for _, r in zip(range(50), csv.DictReader(fh), strict=False)]
    feats = nb201.features_table([r["arch_str"] for r in rows])
    facts = {  # declared facts (zero-shot before any probe is measured); values only need to differ
        "pixel3": {"cores": 8, "freq_mhz": 2500, "memory_mb": 4096},
        "samsung_a50": {"cores": 8, "freq_mhz": 2300, "memory_mb": 4096},
        "silver_4114": {"cores": 10, "freq_mhz": 2200, "memory_mb": 65536},
        "samsung_s7": {"cores": 8, "freq_mhz": 2300, "memory_mb": 4096},
    }
    for dev in (*TRAIN, UNSEEN):
        s.upsert_device_class(dev, facts[dev])
    s.upsert_board("s7-board", UNSEEN, "127.0.0.1", 22299, "device")
    meas, truth = [], {}
    for r, f in zip(rows, feats, strict=True):
        if np.isnan(f[0]):
            continue
        vid = f"nb201:{r['nb201_idx']}"
        fd = feature_dict(f)
        # the archs stand in for deployable variants: a (nominal) artifact name makes them candidates
        s.add_variant(vid, "nb201", "onnx", f"{vid}.onnx", int(fd["params"]), int(fd["macs"]), 1, (1, 3, 32, 32),
                      "fp32", features=fd)  # fmt: skip
        truth[vid] = float(r[UNSEEN])
        for dev in TRAIN:
            key = hashlib.sha256(f"{vid}{dev}".encode()).hexdigest()
            meas.append(dict(key=key, board=dev, variant_id=vid, runtime="help", config={}, status="ok",
                             latency_ms=float(r[dev]), device_class=dev, source="dataset:help-nb201"))  # fmt: skip
    s.add_measurements_bulk(meas)
    s.truth = truth  # type: ignore[attr-defined]
    return s


def test_unseen_board_uses_its_stored_probe_measurements(store) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # the facts model is a GBM: OpenMP threads on an oversubscribed host crawl
        train(store, kind="linear")
    _, pset = load_champion(store)
    dev = resolve_device(store, "s7-board")
    edge = resolve_device(store, "silver_4114", role="edge")
    before = load_candidates(store, dev, edge)
    assert "kshot" not in before.predictor_version  # no probes stored yet: zero-shot from the facts
    assert "zeroshot" in before.predictor_version

    # only the probe set (k <= 10) is measured on the unseen class
    for vid in pset.probe_ids:
        store.add_measurement(hashlib.sha256(f"{vid}s7".encode()).hexdigest(), "s7-board", vid, "help", {}, "ok",
                              latency_ms=store.truth[vid], device_class=UNSEEN)  # fmt: skip
    assert 3 <= len(pset.probe_ids) <= 10
    table = load_candidates(store, dev, edge)
    assert f"kshot:{len(pset.probe_ids)}" in table.predictor_version
    on_dev = table.kind == 0
    pred = dict(zip(table.variant_id[on_dev], table.head_ms[on_dev], strict=True))
    for vid in pset.probe_ids:  # measured values are used as they are
        assert pred[vid] == pytest.approx(store.truth[vid])
    rest = [v for v in pred if v not in pset.probe_ids]
    rho = spearmanr([pred[v] for v in rest], [store.truth[v] for v in rest]).statistic
    ape = np.array([abs(pred[v] - store.truth[v]) / store.truth[v] for v in rest])
    assert rho > 0.7 and np.median(ape) < 0.25, (rho, np.median(ape))
    # the reference columns are the training classes' own measurements of each variant
    from predictors.features import features_from_dict

    F = np.vstack([features_from_dict(store.get_variant(v).features, v).vector() for v in rest])
    probes = {vid: store.truth[vid] for vid in pset.probe_ids}
    direct = pset.predict(F, probe_latencies=probes, variant_ids=rest).latency_ms
    np.testing.assert_allclose([pred[v] for v in rest], direct, rtol=1e-9)
    regressed = pset.predict(F, probe_latencies=probes, measured_refs=False).latency_ms
    assert not np.allclose(direct, regressed)

    # the library entry point (CLI `recommend --device s7-board`, HTTP POST /v1/recommend) does the same
    from registry.selector.recommend import recommend

    prefs = {"weights": {"accuracy": 0.0, "latency": 1.0, "energy": 0.0}, "utility": {"latency": {"target_ms": 5}}}
    ans = recommend(store, device="s7-board", edge="silver_4114", bandwidth_mbit=20, rtt_ms=10, prefs=prefs, top_k=3)
    assert f"kshot:{len(pset.probe_ids)}" in (ans.predictor_version or "")
    assert ans.feasible and len(ans.recommendations) == 3
