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


def test_reimport_replaces_rows_written_under_the_old_shared_id(tmp_path, dataset_dirs):
    _, lat_dir, _ = dataset_dirs
    url = f"sqlite:///{tmp_path / 'ea.db'}"
    first = _import(url, "latbench", lat_dir)
    store = Store.open(url)
    new_rows = store.list_measurements(source="dataset:latbench")
    # what an older edgeatlas left: the same rows under nb201:<i> (its keys hashed that id)
    old = []
    for m in new_rows:
        vid = "nb201:" + m.variant_id.split(":", 1)[1]
        old.append(
            {
                "key": hashlib.sha256(f"dataset:latbench|{vid}|{m.runtime}".encode()).hexdigest(),
                "board": m.board,
                "variant_id": vid,
                "runtime": m.runtime,
                "config": {"dataset": "latbench"},
                "status": "ok",
                "latency_ms": m.latency_ms,
                "device_class": m.device_class,
                "source": "dataset:latbench",
            }
        )
    store.add_measurements_bulk(old)
    other = {**old[0], "key": "k-probe", "source": "probe"}  # another source's row under an old id stays
    store.add_measurements_bulk([other])
    assert store.count_measurements(source="dataset:latbench") == 2 * len(new_rows)
    again = _import(url, "latbench", lat_dir)
    assert again["replaced"] == len(old) and again["measurements"] == first["measurements"]
    rows = store.list_measurements(source="dataset:latbench")
    assert sorted(m.key for m in rows) == sorted(m.key for m in new_rows)
    assert [m.key for m in store.list_measurements(source="probe")] == ["k-probe"]
    # idempotent: a third import replaces nothing
    assert _import(url, "latbench", lat_dir)["replaced"] == 0
    store.dispose()
