"""`edgeatlas zoo ...` through click's CliRunner over the real built zoo (SQLite)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures_models import export_tiny_cnn

from registry.cli import main


def _run(args: list[str], ok: bool = True):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def test_list_show_json_round_trip(zoo_env) -> None:
    out = json.loads(_run(["zoo", "list", "--db", zoo_env.url, "--json"]).output)
    ids = {r["id"] for r in out}
    assert {v.id for v in zoo_env.variants.values()} <= ids
    mt = json.loads(_run(["zoo", "list", "--db", zoo_env.url, "--family", "multitask", "--json"]).output)
    assert mt and all(r["family"] == "multitask" for r in mt)
    v = zoo_env.variants["mt_onnx_int8"]
    shown = json.loads(_run(["zoo", "show", v.id[:10], "--db", zoo_env.url, "--json"]).output)
    assert shown["id"] == v.id and shown["accuracy"] == v.accuracy
    assert shown["accuracy_source"] == "measured:shapes-v1"
    assert Path(shown["artifact"]).is_file()
    # the table form prints too
    assert "multitask" in _run(["zoo", "list", "--db", zoo_env.url]).output


def test_build_same_spec_is_noop_json(zoo_env) -> None:
    args = ["zoo", "build", "multitask", "--width", "0.25", "--resolution", "32", "--precision", "int8"]
    out = json.loads(_run([*args, "--db", zoo_env.url, "--json"]).output)
    assert out["id"] == zoo_env.variants["mt_onnx_int8"].id
    assert out["built"] is False
    assert out["accuracy_source"] == "measured:shapes-v1" and set(out["accuracy_by_task"]) == {
        "shape",
        "colour",
        "position",
    }
    assert out["params"] > 0 and out["macs"] > 0 and out["size_bytes"] > 0


def test_build_bad_input_is_one_clear_line(zoo_env) -> None:
    res = _run(["zoo", "build", "alexnet", "--db", zoo_env.url], ok=False)
    assert res.exit_code == 1 and "field 'family'" in res.output and "multitask" in res.output
    res = _run(["zoo", "build", "mobilenet_v2", "--width", "0", "--db", zoo_env.url], ok=False)
    assert res.exit_code == 1 and "field 'width'" in res.output and "Traceback" not in res.output


def test_add_corrupt_onnx_leaves_store_unchanged(zoo_env, tmp_path: Path) -> None:
    before = len(zoo_env.store().list_variants())
    bad = tmp_path / "broken.onnx"
    good = zoo_env.path("mt_onnx_fp32").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated file
    res = _run(["zoo", "add", str(bad), "--db", zoo_env.url], ok=False)
    assert res.exit_code == 1
    assert "broken.onnx" in res.output and "not a valid ONNX model" in res.output
    bad_tfl = tmp_path / "junk.tflite"
    bad_tfl.write_bytes(b"\x00" * 64)
    res = _run(["zoo", "add", str(bad_tfl), "--db", zoo_env.url], ok=False)
    assert res.exit_code == 1 and "junk.tflite" in res.output
    assert len(zoo_env.store().list_variants()) == before


def test_add_user_artifact_and_attach_accuracy(zoo_env, tmp_path: Path) -> None:
    """A user's model (here: a real multitask TFLite file renamed) registers with unknown accuracy;
    `zoo accuracy` attaches a figure with its source."""
    import onnx
    from onnx import TensorProto, helper

    # a small user ONNX model (a real graph, not one of ours)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.01 * i for i in range(108)])
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    f = tmp_path / "mine.onnx"
    onnx.save(m, str(f))
    out = json.loads(_run(["zoo", "add", str(f), "--family", "mynet", "--db", zoo_env.url, "--json"]).output)
    assert out["id"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert out["family"] == "mynet" and out["accuracy"] is None and out["macs"] == 4 * 16 * 16 * 27
    again = json.loads(_run(["zoo", "add", str(f), "--family", "mynet", "--db", zoo_env.url, "--json"]).output)
    assert again["id"] == out["id"] and again["built"] is False
    acc = json.loads(
        _run(
            [
                "zoo",
                "accuracy",
                out["id"][:12],
                "--value",
                "0.5",
                "--source",
                "user:test-suite",
                "--db",
                zoo_env.url,
                "--json",
            ]
        ).output
    )
    assert acc["accuracy"] == 0.5 and acc["accuracy_source"] == "user:test-suite"
    res = _run(["zoo", "accuracy", out["id"], "--value", "0.5", "--source", "trust-me", "--db", zoo_env.url], ok=False)
    assert res.exit_code == 1 and "provenance" in res.output
    tfl = tmp_path / "theirs.tflite"
    tfl.write_bytes(zoo_env.path("mt_tflite_int8").read_bytes())
    t = json.loads(_run(["zoo", "add", str(tfl), "--db", zoo_env.url, "--json"]).output)
    assert t["id"] == zoo_env.variants["mt_tflite_int8"].id  # same bytes, same variant


def test_splits_and_export(zoo_env, tmp_path: Path) -> None:
    v = zoo_env.variants["mt_onnx_fp32"]
    rows = json.loads(_run(["zoo", "splits", v.id, "--db", zoo_env.url, "--json"]).output)
    assert isinstance(rows, list)
    for r in rows:
        assert r["payload_bytes"] > 0 and "cut" in r
    out = json.loads(
        _run(["zoo", "export", v.id, "--out", str(tmp_path / "dist"), "--db", zoo_env.url, "--json"]).output
    )
    dist = tmp_path / "dist"
    assert (dist / f"{v.id}.onnx").read_bytes() == zoo_env.path(v).read_bytes()
    card = json.loads((dist / f"{v.id}.card.json").read_text())
    assert card["id"] == v.id and card["accuracy_source"] == "measured:shapes-v1"
    assert len(card["splits"]) == len(rows)
    for f in out["files"]:
        assert (dist / f).is_file()


def test_grid_config_errors_name_file_line_field(tmp_path: Path, ea_home) -> None:
    from registry.errors import EdgeatlasError
    from registry.zoo.grid import load_grid

    cfg = tmp_path / "g.toml"
    cfg.write_text(
        '[grid]\n\n[[block]]\nname = "a"\nfamilies = ["multitask"]\n\n[[block]]\nname = "b"\nfamilies = ["multitask"]\nwidths = [0]\n'
    )
    with pytest.raises(EdgeatlasError) as ei:
        load_grid(cfg)
    assert "g.toml:7" in str(ei.value) and "'b'" in str(ei.value) and "field 'width'" in str(ei.value)
    cfg.write_text('[[block]]\nfamilies = "multitask"\n')
    with pytest.raises(EdgeatlasError, match="'families' must be a non-empty list"):
        load_grid(cfg)
    res = _run(["zoo", "grid", "--config", str(tmp_path / "missing.toml")], ok=False)
    assert res.exit_code == 1 and "missing.toml" in res.output


def test_shipped_grid_has_40_variants_both_formats(ea_home) -> None:
    from registry.zoo.grid import load_grid

    cfg = load_grid(Path(__file__).resolve().parents[1] / "zoo.toml")
    specs = [e.spec for e in cfg.entries]
    assert len(specs) >= 40
    assert {s.format for s in specs} == {"onnx", "tflite"}
    assert {s.precision for s in specs} >= {"fp32", "fp16", "int8"}
    assert "multitask" in {s.family for s in specs} and len({s.family for s in specs}) >= 5
    assert any(s.prune for s in specs)
    assert cfg.max_split_points is not None
    # a block's task reaches its specs (a single-task family trained on colour)
    assert any(s.task == "colour" and s.family != "multitask" for s in specs)


def test_grid_resumes_and_skips_built_variants(zoo_env, tmp_path: Path) -> None:
    """A grid whose first spec is built already: only the new one is built; a rerun builds nothing."""
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        "[grid]\nsplits = false\n\n"
        '[[block]]\nname = "done"\nfamilies = ["multitask"]\nwidths = [0.25]\nresolutions = [32]\nprecisions = ["int8"]\n\n'
        '[[block]]\nname = "new"\ndataset = "none"\nfamilies = ["mobilenet_v3_small"]\nwidths = [0.5]\nresolutions = [32]\n'
        'precisions = ["int8"]\n'
    )
    first = json.loads(_run(["zoo", "grid", "--config", str(cfg), "--db", zoo_env.url, "--json"]).output)
    assert first["summary"]["variants"] == 2
    by_block = {r["block"]: r for r in first["variants"]}
    assert by_block["done"]["built"] is False and by_block["done"]["id"] == zoo_env.variants["mt_onnx_int8"].id
    assert by_block["new"]["built"] is True and by_block["new"]["accuracy"] is None
    again = json.loads(_run(["zoo", "grid", "--config", str(cfg), "--db", zoo_env.url, "--json"]).output)
    assert again["summary"]["built"] == 0 and again["summary"]["skipped"] == 2
    dry = json.loads(_run(["zoo", "grid", "--config", str(cfg), "--db", zoo_env.url, "--dry-run", "--json"]).output)
    assert [r["built"] for r in dry] == [True, True]


def test_add_onnx_with_dynamic_batch_records_batch_one(ea_home, sqlite_url: str, tmp_path: Path) -> None:
    """A dynamic batch axis ('batch') is taken as 1: input shape, MACs and resolution are filled."""
    import onnx

    f = tmp_path / "tiny_dyn.onnx"
    export_tiny_cnn(f, {"input": {0: "batch"}, "output": {0: "batch"}})
    assert onnx.load(str(f)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    macs = 32 * 32 * 8 * 3 * 9 + 16 * 16 * 16 * 8 * 9 + 16 * 10  # 516,256
    out = json.loads(_run(["zoo", "add", str(f), "--db", sqlite_url, "--json"]).output)
    assert out["input_shape"] == [1, 3, 32, 32]
    assert out["macs"] == macs and out["params"] == 8 * 27 + 8 + 16 * 72 + 16 + 160 + 10
    assert out["resolution"] == 32
    shown = json.loads(_run(["zoo", "show", out["id"][:12], "--db", sqlite_url, "--json"]).output)
    assert shown["input_shape"] == [1, 3, 32, 32] and shown["macs"] == macs and shown["resolution"] == 32
    assert shown["features"]["macs"] == macs and shown["features"]["batch"] == 1
    listed = json.loads(_run(["zoo", "list", "--db", sqlite_url, "--json"]).output)
    row = next(r for r in listed if r["id"] == out["id"])
    assert row["resolution"] == 32 and row["macs"] == macs


def test_add_onnx_with_dynamic_spatial_dims_names_input_and_dim(ea_home, sqlite_url: str, tmp_path: Path) -> None:
    f = tmp_path / "tiny_hw.onnx"
    export_tiny_cnn(f, {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch"}})
    res = _run(["zoo", "add", str(f), "--db", sqlite_url], ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "tiny_hw.onnx" in res.output and "input 'input'" in res.output
    assert "dim 2 ('height')" in res.output and "dim 3 ('width')" in res.output
    assert json.loads(_run(["zoo", "list", "--db", sqlite_url, "--json"]).output) == []
