"""HELP NB201 and LatBench imported into one store: the same NB201 index is two different networks
(HELP ran the eager cell, LatBench the pruned one), so each keeps its own variant id and features;
a re-import over rows an older edgeatlas wrote under the shared id replaces them."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from predictors import datasets as D
from predictors.features import FEATURE_NAMES
from registry.cli import main as cli
from registry.store import Store

SHARED = Path("/work/shared/datasets")
HELP_CSV = SHARED / "help" / "nb201_latency_ms.csv"
LATBENCH_CSV = SHARED / "latbench" / "latbench_nb201_ms.csv"
N = 6

pytestmark = pytest.mark.skipif(not (HELP_CSV.exists() and LATBENCH_CSV.exists()), reason="needs ../shared/datasets")


def _slice(src: Path, dst: Path, index_col: str, wanted: set[int] | None) -> set[int]:
    """The header and the rows of ``src`` for the ``wanted`` NB201 indices (the first N if None),
    written to ``dst`` (a temporary dataset folder: the data stays in ../shared/datasets)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    got: set[int] = set()
    with open(src, newline="") as fi, open(dst, "w", newline="") as fo:
        r, w = csv.reader(fi), csv.writer(fo)
        header = next(r)
        w.writerow(header)
        col = header.index(index_col)
        for row in r:
            i = int(row[col])
            if (wanted is None and len(got) < N) or (wanted is not None and i in wanted):
                w.writerow(row)
                got.add(i)
            if (wanted is None and len(got) >= N) or (wanted is not None and got == wanted):
                break
    return got


@pytest.fixture
def dataset_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    idx = _slice(HELP_CSV, tmp_path / "help" / HELP_CSV.name, "nb201_idx", None)
    got = _slice(LATBENCH_CSV, tmp_path / "latbench" / LATBENCH_CSV.name, "nb201_idx", idx)
    return tmp_path / "help", tmp_path / "latbench", sorted(got)


def _import(url: str, name: str, path: Path) -> dict:
    res = CliRunner().invoke(
        cli, ["predictors", "import", name, "--path", str(path), "--db", url, "--json"], env=dict(os.environ)
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_help_and_latbench_keep_their_own_ids_and_features(tmp_path, dataset_dirs):
    help_dir, lat_dir, idx = dataset_dirs
    assert len(idx) >= 3
    url = f"sqlite:///{tmp_path / 'ea.db'}"
    a = _import(url, "help-nb201", help_dir)
    b = _import(url, "latbench", lat_dir)
    assert a["replaced"] == 0 and b["replaced"] == 0
    store = Store.open(url)
    help_rows = store.list_measurements(source="dataset:help-nb201")
    lat_rows = store.list_measurements(source="dataset:latbench")
    assert help_rows and lat_rows
    assert all(m.variant_id.startswith("nb201:") for m in help_rows)
    assert all(m.variant_id.startswith("nb201-live:") for m in lat_rows)
    # each variant holds the features of the graph its dataset measured
    eager = D.load_help_nb201(help_dir)
    live = D.load_latbench(lat_dir)
    assert eager.keys == tuple(D.nb201_key(int(i), "eager") for i in eager.index)
    assert live.keys == tuple(D.nb201_key(int(i), "live") for i in live.index)
    differ = 0
    for k_e, f_e, i in zip(eager.keys, eager.features, eager.index, strict=True):
        if int(i) not in live.index:
            continue
        k_l = live.keys[list(live.index).index(int(i))]
        v_e, v_l = store.get_variant(k_e), store.get_variant(k_l)
        assert v_e.features["macs"] == pytest.approx(float(f_e[FEATURE_NAMES.index("macs")]))
        assert v_l.features["macs"] <= v_e.features["macs"]  # pruned cells compute no more than eager ones
        differ += v_l.features != v_e.features
    assert differ >= 1  # at least one arch has dead edges, so the two graphs differ
    store.dispose()


def _legacy_store(url: str, lat_dir: Path, help_dir: Path | None) -> tuple[Store, list[str], list]:
    """A store as an older edgeatlas left it: LatBench imported first under ``nb201:<i>`` (so those
    variants hold the pruned cell's features), then HELP's rows attached to the same ids (when
    ``help_dir``). Returns the store, the legacy ids and the LatBench rows of today's ids."""
    first = _import(url, "latbench", lat_dir)
    assert first["replaced"] == 0
    store = Store.open(url)
    new_rows = store.list_measurements(source="dataset:latbench")
    legacy = sorted({"nb201:" + m.variant_id.split(":", 1)[1] for m in new_rows})
    for vid in legacy:
        v = store.get_variant("nb201-live:" + vid.split(":", 1)[1])
        store.add_variant(
            id=vid,
            family="nb201",
            format="onnx",
            path="",
            params=v.params,
            macs=v.macs,
            size_bytes=v.size_bytes,
            input_shape=v.input_shape,
            precision="fp32",
            features=dict(v.features),
        )
    old = [
        {
            "key": hashlib.sha256(
                f"dataset:latbench|nb201:{m.variant_id.split(':', 1)[1]}|{m.runtime}".encode()
            ).hexdigest(),
            "board": m.board,
            "variant_id": "nb201:" + m.variant_id.split(":", 1)[1],
            "runtime": m.runtime,
            "config": {"dataset": "latbench"},
            "status": "ok",
            "latency_ms": m.latency_ms,
            "device_class": m.device_class,
            "source": "dataset:latbench",
        }
        for m in new_rows
    ]
    store.add_measurements_bulk(old)
    if help_dir is not None:
        eager = D.load_help_nb201(help_dir)
        hrows = [
            {
                "key": f"help-{k}",
                "board": "help-nb201/pixel3",
                "variant_id": k,
                "runtime": "pixel3",
                "status": "ok",
                "latency_ms": 1.0,
                "device_class": "help-nb201/pixel3",
                "source": "dataset:help-nb201",
            }
            for k in eager.keys
            if k in legacy
        ]
        store.add_measurements_bulk(hrows)
    assert store.count_measurements(source="dataset:latbench") == 2 * len(new_rows)
    return store, legacy, new_rows


def test_reimport_replaces_rows_written_under_the_old_shared_id(any_db_url, dataset_dirs):
    """No HELP import: LatBench's old rows and their variants go; today's rows stay."""
    _, lat_dir, _ = dataset_dirs
    store, legacy, new_rows = _legacy_store(any_db_url, lat_dir, None)
    probe = {
        "key": "k-probe",
        "board": "b",
        "variant_id": legacy[0],
        "runtime": "onnxruntime",
        "status": "ok",
        "latency_ms": 2.0,
        "source": "probe",
    }
    store.add_measurements_bulk([probe])  # another source's row under an old id: it stays, and so does its variant
    again = _import(any_db_url, "latbench", lat_dir)
    assert again["replaced"] == len(new_rows) and again["replaced_variants"] == len(legacy) - 1
    rows = store.list_measurements(source="dataset:latbench")
    assert sorted(m.key for m in rows) == sorted(m.key for m in new_rows)
    assert [m.key for m in store.list_measurements(source="probe")] == ["k-probe"]
    left = {v.id for v in store.list_variants()}
    assert not set(legacy[1:]) & left and legacy[0] in left
    # idempotent: a third import replaces nothing
    third = _import(any_db_url, "latbench", lat_dir)
    assert third["replaced"] == 0 and third["replaced_variants"] == 0
    store.dispose()


def test_help_reimport_restores_eager_features_on_a_store_latbench_filled_first(any_db_url, dataset_dirs):
    help_dir, lat_dir, _ = dataset_dirs
    store, legacy, new_rows = _legacy_store(any_db_url, lat_dir, help_dir)
    eager = D.load_help_nb201(help_dir)
    want = {k: dict(zip(FEATURE_NAMES, f, strict=True)) for k, f in zip(eager.keys, eager.features, strict=True)}

    def same(k: str) -> bool:
        f = store.get_variant(k).features
        return all(f[n] == pytest.approx(want[k][n]) for n in FEATURE_NAMES)

    stale = [k for k in legacy if not same(k)]
    assert stale  # the old store really holds pruned-cell features under eager ids
    lat = _import(any_db_url, "latbench", lat_dir)
    assert lat["replaced"] == len(new_rows) and lat["replaced_variants"] == 0  # HELP still measures them
    _import(any_db_url, "help-nb201", help_dir)
    for k in legacy:
        assert same(k) and store.get_variant(k).macs == int(want[k]["macs"])
    assert {m.variant_id for m in store.list_measurements(source="dataset:help-nb201")} >= set(legacy)
    store.dispose()


def test_importing_part_of_a_dataset_deletes_nothing(tmp_path, dataset_dirs):
    _, lat_dir, idx = dataset_dirs
    url = f"sqlite:///{tmp_path / 'ea.db'}"
    _import(url, "latbench", lat_dir)
    store = Store.open(url)
    n = store.count_measurements(source="dataset:latbench")
    part = tmp_path / "part"
    _slice(LATBENCH_CSV, part / LATBENCH_CSV.name, "nb201_idx", set(idx[:2]))
    res = _import(url, "latbench", part)
    assert res["replaced"] == 0 and res["replaced_variants"] == 0
    assert store.count_measurements(source="dataset:latbench") == n
    store.dispose()
