"""mobile-ml-benchmark read from the real shared dataset: layer lists parsed into features, the
k-shot evaluation of pixel4 through the CLI, evaluation configurations never used as references,
and a malformed row reported by file, line and field."""

from __future__ import annotations

import ast
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from predictors import datasets as D
from predictors import evaluate as E
from predictors.features import FEATURE_NAMES
from registry.cli import main
from registry.errors import EdgeatlasError

MMB = Path("/work/shared/datasets/mobile-ml-benchmark")


@pytest.fixture(scope="module")
def mmb_table() -> D.Table:
    if not (MMB / "raw" / "tflite_cnn_ops_gpu.csv").exists():
        pytest.skip(f"{MMB} is absent")
    return D.load("mobile-ml-benchmark", MMB)


def _features(table: D.Table, model: str) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, table.features[table.keys.index(f"mmb-tflite:{model}")], strict=True))


def test_real_layer_lists_give_known_model_sizes(mmb_table: D.Table) -> None:
    T = mmb_table
    assert T.features.shape == (102, len(FEATURE_NAMES)) and np.isfinite(T.features).all()
    assert T.latency_ms.shape == (102, len(T.devices))
    mb2 = _features(T, "mobilenetv2_w1")
    # MobileNetV2 1.0 @224: ~300 M MACs (+ the 1x1-conv classifier), 3.47 M weights, 17 depthwise convs
    assert 3.0e8 < mb2["macs"] < 3.2e8
    assert mb2["params"] == pytest.approx(3.47e6, rel=0.01)
    assert mb2["depthwise_count"] == 17
    assert (mb2["input_h"], mb2["input_w"], mb2["input_c"], mb2["output_elems"]) == (224, 224, 3, 1000)
    r18 = _features(T, "resnet18")
    assert r18["macs"] == pytest.approx(1.814e9, rel=0.01) and r18["params"] == pytest.approx(11.68e6, rel=0.01)
    assert r18["input_h"] == 224  # its first conv reads the 230-wide padded image
    # SOURCE.md anchor: mobilenetv2_w1, Pixel 4, 1 large core, fp32 = 28517 us
    assert T.column("pixel4")[T.keys.index("mmb-tflite:mobilenetv2_w1")] == pytest.approx(28.517, abs=1e-3)


def test_every_evaluation_configuration_is_an_evaluation_device(mmb_table: D.Table) -> None:
    evald = set(D.EVAL_DEVICES["mobile-ml-benchmark"])
    for d in mmb_table.devices:
        assert (d in evald) == (d.split("|")[0] in ("pixel4", "iphonexs")), d
    assert {"pixel4", "iphonexs", "pixel4|gpu|float", "iphonexs|1large|quant"} <= set(mmb_table.devices)


def test_pixel4_kshot_reads_no_other_evaluation_column(mmb_table: D.Table) -> None:
    """The pixel4 prediction is unchanged when every other pixel4/iphonexs column is blanked."""
    T = mmb_table
    n = len(T.keys)
    perm = np.random.default_rng(0).permutation(n)
    proto = E.Protocol(pool=perm[: n // 2], query=perm[n // 2 + 10 :], shots=perm[n // 2 : n // 2 + 10], trim=False)
    m, pred, _ = E.kshot_eval(T, "pixel4", proto)
    lat = T.latency_ms.copy()
    for j, d in enumerate(T.devices):
        if d != "pixel4" and d in D.EVAL_DEVICES["mobile-ml-benchmark"]:
            lat[:, j] = np.nan
    Tb = D.Table(T.name, T.keys, T.index, T.features, T.devices, lat)
    _, pred_b, _ = E.kshot_eval(Tb, "pixel4", proto)
    np.testing.assert_allclose(pred, pred_b)
    assert m["n"] == n - n // 2 - 10 and np.all(np.isfinite(pred))


def test_cli_eval_pixel4_on_the_real_dataset(mmb_table: D.Table) -> None:
    res = CliRunner().invoke(
        main,
        ["predictors", "eval", "--dataset", "mobile-ml-benchmark", "--device", "pixel4", "--path", str(MMB), "--json"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == set(E.METRIC_KEYS)
    assert out["n"] == 41 and 0.5 < out["spearman"] <= 1.0 and out["rmse_ms"] > 0


def _copy_with(tmp_path: Path, line: int, field: str, value: str) -> Path:
    """A copy of the real dataset with one field of one op row of the layer list replaced."""
    dst = tmp_path / "mmb" / "raw"
    dst.mkdir(parents=True)
    shutil.copy(MMB / "raw" / "tflite_cnn_e2e.csv", dst)
    with open(MMB / "raw" / "tflite_cnn_ops_gpu.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    feat = ast.literal_eval(rows[line - 1][2])
    feat[field] = value
    rows[line - 1][2] = repr(feat)
    with open(dst / "tflite_cnn_ops_gpu.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return dst.parent


def test_malformed_row_names_file_line_and_field(mmb_table: D.Table, tmp_path: Path) -> None:
    root = _copy_with(tmp_path, 3, "Kernel", "N/A")  # line 3: bagnet9's 3x3 CONV_2D
    with pytest.raises(EdgeatlasError) as exc:
        D.load("mobile-ml-benchmark", root)
    msg = str(exc.value)
    assert "tflite_cnn_ops_gpu.csv line 3" in msg and "'Kernel'" in msg and "'N/A'" in msg and "fix:" in msg
    res = CliRunner().invoke(
        main, ["predictors", "eval", "--dataset", "mmb", "--device", "pixel4", "--path", str(root)]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "line 3" in res.output and "Kernel" in res.output
