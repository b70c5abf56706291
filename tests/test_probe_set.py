"""LatBench's probe set: selected on development devices only, and the protocol that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from predictors import datasets as D
from predictors import evaluate as E
from predictors.features import FEATURE_NAMES
from registry.commands.predictors import group
from registry.errors import EdgeatlasError

EVAL = D.EVAL_DEVICES["latbench"]


def _table(n: int = 700, seed: int = 5) -> D.Table:
    """A latbench-named table: 4 development devices and the 3 evaluation columns, each a
    different positive law of 5 features plus a few noisy archs, so the picks matter."""
    rng = np.random.default_rng(seed)
    F = np.zeros((n, len(FEATURE_NAMES)))
    F[:, :5] = rng.uniform(1, 10, size=(n, 5))
    devs = ("dev_a", "dev_b", "dev_c", "dev_d", *EVAL)
    lat = np.column_stack([F[:, :5] @ rng.uniform(0.1, 2, 5) + rng.uniform(0, 5) for _ in devs])
    lat *= rng.choice([1.0, 1.5], size=(n, 1), p=[0.9, 0.1])
    return D.Table("latbench", tuple(f"nb201-live:{i}" for i in range(n)), np.arange(n), F, devs, lat)


def _protocol(T: D.Table) -> E.Protocol:
    return E.Protocol(pool=np.arange(200), query=np.arange(200, len(T.keys)), shots=np.arange(0), trim=False)


def test_select_probe_set_never_reads_an_evaluation_device() -> None:
    T = _table()
    sel = E.select_probe_set(T, _protocol(T), k=4)
    assert len(sel) == len(set(sel)) == 4 and all(0 <= i < 200 for i in sel)
    lat = T.latency_ms.copy()
    rng = np.random.default_rng(9)
    for d in EVAL:  # evaluation columns scrambled or blanked: the same picks
        lat[:, T.devices.index(d)] = rng.permutation(lat[:, T.devices.index(d)])
    lat[::3, T.devices.index(EVAL[0])] = np.nan
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, lat)
    assert E.select_probe_set(Tb, _protocol(Tb), k=4) == sel
    # greedy: a shorter set is the same picks' prefix, as --shots k takes the first k
    assert E.select_probe_set(T, _protocol(T), k=2) == sel[:2]


def test_select_probe_set_beats_the_first_pool_archs_on_its_objective() -> None:
    T = _table(seed=7)
    proto = _protocol(T)
    sel = E.select_probe_set(T, proto, k=5)
    dev = [d for d in T.devices if d not in EVAL]

    def objective(rows: np.ndarray) -> float:
        out = []
        for t in dev:
            R = E.reference_columns(T, proto, [r for r in dev if r != t])
            out.append(E._mix_acc10(R, T.column(t), rows, proto.query, E.KSHOT_ALPHA))
        return float(np.mean(out))

    assert objective(np.array(sel)) >= objective(np.arange(5))


def test_select_probe_set_needs_three_development_devices() -> None:
    T = _table()
    few = D.Table(T.name, T.keys, T.index, T.features, T.devices[2:], T.latency_ms[:, 2:])
    with pytest.raises(EdgeatlasError, match="a probe set needs >= 3"):
        E.select_probe_set(few, _protocol(few), k=2)


def test_latbench_protocol_scores_both_probe_sets_on_the_same_query() -> None:
    helps = D.help_reference_indices("nb201")
    idx = np.unique(np.concatenate([np.arange(1200), helps, E.LATBENCH_PROBE_SET]))
    n = len(idx)
    T = D.Table(
        "latbench", tuple(f"k{i}" for i in idx), idx, np.zeros((n, len(FEATURE_NAMES))), ("a",), np.ones((n, 1))
    )
    sel, hp = (E.latbench_protocol(T, probe_set=p) for p in ("selected", "help"))
    assert list(T.index[sel.shots]) == list(E.LATBENCH_PROBE_SET)
    assert list(T.index[hp.shots]) == helps[:10]
    assert list(T.index[E.latbench_protocol(T, 4).shots]) == list(E.LATBENCH_PROBE_SET[:4])
    np.testing.assert_array_equal(sel.query, hp.query)
    assert not set(T.index[sel.query]) & {*helps, *E.LATBENCH_PROBE_SET, *range(900)}
    assert all(i < 900 for i in E.LATBENCH_PROBE_SET)  # chosen among the reference pool
    with pytest.raises(EdgeatlasError, match="unknown probe set"):
        E.latbench_protocol(T, probe_set="random")


@pytest.mark.slow
def test_the_shipped_probe_set_is_what_the_development_devices_select() -> None:
    """LATBENCH_PROBE_SET is no hand-picked list: the selection on the real LatBench table, with
    every evaluation column blanked, gives it back."""
    T = D.load("latbench")
    lat = T.latency_ms.copy()
    for d in EVAL:
        lat[:, T.devices.index(d)] = np.nan
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, lat, meta=T.meta)
    assert tuple(E.select_probe_set(Tb, E.latbench_protocol(Tb, probe_set="help"))) == E.LATBENCH_PROBE_SET


def test_cli_probe_set_is_latbench_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    out = CliRunner().invoke(
        group, ["eval", "--dataset", "help-fbnet", "--device", "fpga", "--probe-set", "help", "--json"]
    )
    assert isinstance(out.exception, EdgeatlasError) and "latbench only" in str(out.exception)
    out = CliRunner().invoke(group, ["eval", "--dataset", "latbench", "--device", "x", "--probe-set", "best"])
    assert out.exit_code == 2 and "best" in out.output


@pytest.mark.slow
def test_cli_latbench_eval_with_either_probe_set(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dev = "mobile-dsp-snapdragon-855-hexagon-690-int8"
    res = {}
    for ps in ("selected", "help"):
        out = CliRunner().invoke(group, ["eval", "--dataset", "latbench", "--device", dev, "--probe-set", ps, "--json"])
        assert out.exit_code == 0, out.output
        res[ps] = json.loads(out.output)
    assert res["selected"]["n"] == res["help"]["n"] > 14000
    assert res["selected"]["acc10"] > res["help"]["acc10"]  # 0.885 against 0.780 when measured
    default = CliRunner().invoke(group, ["eval", "--dataset", "latbench", "--device", dev, "--json"])
    assert json.loads(default.output) == res["selected"]
    other = "mobile-gpu-snapdragon-855-adreno-640-int8"
    table = CliRunner().invoke(
        group,
        ["eval", "--dataset", "latbench", "--device", f"{dev},{other}", "--probe-set", "help"],
        env={"COLUMNS": "200"},
    )
    assert table.exit_code == 0, table.output
    assert "latbench 10-shot, probe set help" in table.output and "HELP's published" not in table.output
    mean_row = next(line for line in table.output.splitlines() if "│ mean" in line)
    cells = [c.strip() for c in mean_row.split("│")]
    assert cells[1] == "mean" and 0 < float(cells[4]) < 1  # mean acc10 of the two devices
