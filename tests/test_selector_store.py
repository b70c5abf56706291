"""The selector over a real store: measured latencies (onnxruntime), measured accuracy, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry.errors import EdgeatlasError, ErrorCode
from registry.selector.recommend import recommend
from registry.store import Store

REPO = Path(__file__).resolve().parents[1]
CAMERA = REPO / "examples" / "prefs" / "realtime_camera.toml"
MEDICAL = REPO / "examples" / "prefs" / "medical_accuracy.toml"


def test_recommend_over_store(selector_store: str) -> None:
    store = Store.open(selector_store)
    ans = recommend(store, device="dev-1", edge="edge-1", bandwidth_mbit=20, rtt_ms=10, prefs=CAMERA, top_k=3)
    assert ans.n_candidates == 3 * (2 + 3)  # 3 variants x (device, edge, 3 splits x fp32)
    assert ans.feasible and len(ans.recommendations) == 3
    top = ans.recommendations[0]
    assert top.accuracy_source == "measured:teacher-synth"
    assert "measured" in ans.predictor_version
    assert ans.energy_source and "estimated:power-model" in ans.energy_source
    # all-on-edge uploads the float32 input: 12 288 bytes
    edge = [p for p in ans.pareto if p.split == "all-on-edge"]
    for p in edge:
        assert p.latency_ms > 12288 * 8 / 20e3 + 10
    with pytest.raises(EdgeatlasError) as e:
        recommend(store, device="nope", edge="edge-1", bandwidth_mbit=20, rtt_ms=10, prefs=CAMERA)
    assert e.value.code == ErrorCode.NOT_FOUND and "dev-1" in e.value.hint


def test_measurements_are_read_at_the_predictors_graph_level(selector_store: str, tmp_path: Path) -> None:
    """Rows measured at another onnxruntime graph level (`bench run --graph-opt`) are another runtime
    config: a recommendation reads the level its predictor was trained at (the default, 'all')."""
    import shutil

    from registry.selector.sources import _graph_level, _measured_lookup

    db = tmp_path / "copy.db"
    shutil.copy(selector_store.removeprefix("sqlite:///"), db)
    store = Store.open(f"sqlite:///{db}")
    before = recommend(store, device="dev-1", edge="edge-1", bandwidth_mbit=20, rtt_ms=10, prefs=CAMERA, top_k=3)
    rows = [m for m in store.list_measurements(device_class="host-1t", status="ok") if m.split_id is None]
    assert rows
    store.add_measurements_bulk(
        [
            {
                "key": f"{m.key[:40]}-extended",
                "board": m.board,
                "variant_id": m.variant_id,
                "runtime": m.runtime,
                "config": {**(m.config or {}), "graph_opt": "extended"},
                "status": "ok",
                "latency_ms": 1000.0 * m.latency_ms,
                "device_class": m.device_class,
                "source": "probe",
            }
            for m in rows
        ]
    )
    after = recommend(store, device="dev-1", edge="edge-1", bandwidth_mbit=20, rtt_ms=10, prefs=CAMERA, top_k=3)
    assert [p.latency_ms for p in after.pareto] == [p.latency_ms for p in before.pareto]
    whole, _ = _measured_lookup(store, "host-1t")
    ext, _ = _measured_lookup(store, "host-1t", "extended")
    assert set(whole) == set(ext) and all(ext[v][0] == pytest.approx(1000.0 * whole[v][0]) for v in whole)
    assert _graph_level(store, "default") == "all" and _graph_level(store, None) == "all"
    store.add_predictor(
        name="ext", target="latency", device_class=None, path="unused", file_sha256="0" * 64, data_hash="h",
        metrics={"graph_opt": "extended"}, libs={}, status="champion",
    )  # fmt: skip
    assert _graph_level(store, "ext") == "extended"
    store.dispose()


def test_cli_recommend_json_plot_infeasible_and_feedback(selector_store: str, tmp_path: Path) -> None:
    from registry.cli import main

    runner = CliRunner()
    base = ["--device", "dev-1", "--edge", "edge-1", "--db", selector_store]
    png = tmp_path / "p.png"
    r = runner.invoke(
        main,
        [
            "recommend",
            *base,
            "--bandwidth-mbit",
            "20",
            "--rtt-ms",
            "10",
            "--prefs",
            str(CAMERA),
            "--top",
            "4",
            "--json",
            "--plot",
            str(png),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {"device", "predictor_version", "recommendations", "pareto"} <= set(data)
    rec0 = data["recommendations"][0]
    assert {"variant_id", "family", "split", "codec", "predicted", "interval", "qoe", "binding_constraint"} <= set(rec0)
    assert set(rec0["predicted"]) >= {"latency_ms", "device_energy_mj", "accuracy"}
    assert png.stat().st_size > 5000
    rec_file = tmp_path / "rec.json"
    rec_file.write_text(r.output)

    # impossible constraints: one clear line naming the constraint, exit 1
    bad = tmp_path / "bad.toml"
    bad.write_text(MEDICAL.read_text().replace("min_accuracy = 0.5", "min_accuracy = 0.999"))
    r = runner.invoke(main, ["recommend", *base, "--bandwidth-mbit", "20", "--rtt-ms", "10", "--prefs", str(bad)])
    assert r.exit_code == 1 and "INFEASIBLE" in r.output and "min_accuracy alone rules out all" in r.output
    # bad prefs, unknown device
    bad.write_text("[constraints]\nmax_latency_ms = -3\n")
    r = runner.invoke(main, ["recommend", *base, "--bandwidth-mbit", "20", "--rtt-ms", "10", "--prefs", str(bad)])
    assert r.exit_code == 1 and "constraints.max_latency_ms" in r.output and f"{bad}:2" in r.output.replace("\n", "")
    r = runner.invoke(
        main,
        [
            "recommend",
            "--device",
            "ghost",
            "--edge",
            "edge-1",
            "--db",
            selector_store,
            "--bandwidth-mbit",
            "20",
            "--rtt-ms",
            "10",
            "--prefs",
            str(CAMERA),
        ],
    )
    assert r.exit_code == 1 and "unknown device 'ghost'" in r.output

    # decision table
    r = runner.invoke(
        main,
        [
            "decision-table",
            *base,
            "--prefs",
            str(CAMERA),
            "--bandwidths",
            "0.01,1,100,10000",
            "--rtts",
            "1,50",
            "--json",
            "--plot",
            str(tmp_path / "dt.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    dt = json.loads(r.output)
    assert dt["rows"] and (tmp_path / "dt.png").exists()

    # feedback + fit + learned weights used
    keys = [c["key"] for c in data["recommendations"]]
    for _ in range(3):
        for a, b in ((keys[0], keys[1]), (keys[0], keys[2]), (keys[1], keys[3])):
            r = runner.invoke(
                main,
                [
                    "feedback",
                    "--app",
                    "cam",
                    "--recommendation",
                    str(rec_file),
                    "--chose",
                    a,
                    "--over",
                    b,
                    "--db",
                    selector_store,
                    "--json",
                ],
            )
            assert r.exit_code == 0, r.output
    r = runner.invoke(
        main,
        [
            "feedback",
            "--app",
            "cam",
            "--recommendation",
            str(rec_file),
            "--chose",
            keys[0],
            "--rating",
            "4",
            "--over",
            keys[1],
            "--db",
            selector_store,
        ],
    )
    assert r.exit_code == 1 and "exactly one" in r.output
    r = runner.invoke(main, ["qoe", "fit", "--app", "cam", "--prefs", str(CAMERA), "--db", selector_store, "--json"])
    assert r.exit_code == 0, r.output
    fit = json.loads(r.output)
    assert fit["version"] == 1 and fit["n_pairs"] >= 3
    r = runner.invoke(
        main,
        [
            "recommend",
            *base,
            "--app",
            "cam",
            "--bandwidth-mbit",
            "20",
            "--rtt-ms",
            "10",
            "--prefs",
            str(CAMERA),
            "--json",
        ],
    )
    assert json.loads(r.output)["weights_source"] == "learned:cam v1"
