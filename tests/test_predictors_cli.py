"""`edgeatlas predictors` through the CLI (click CliRunner) on a real SQLite store holding real HELP
NB201 measurements (tests/fixtures_predictors.py): predictor names and the files they make, and the
provenance of predicted energy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from predictors.training import load_champion, train
from registry.commands.predictors import group
from registry.errors import EdgeatlasError


def _class_rows(store, cls: str, scale: float, energy: tuple[str, float] | None = None) -> list[dict]:
    """Rows of a new class ``cls``: every pixel3 variant at ``scale`` times its pixel3 latency, with
    ``energy`` = (energy_source, watts) giving energy_mj = watts x latency."""
    base = {m.variant_id: m.latency_ms for m in store.list_measurements(device_class="pixel3")}
    rows = []
    for vid, ms in base.items():
        row = {
            "key": hashlib.sha256(f"{vid}|{cls}".encode()).hexdigest(),
            "board": f"{cls}-1",
            "variant_id": vid,
            "runtime": "onnxruntime",
            "config": {},
            "status": "ok",
            "latency_ms": scale * ms,
            "device_class": cls,
            "source": "probe",
        }
        if energy is not None:
            row.update(energy_mj=energy[1] * scale * ms, energy_source=energy[0])
        rows.append(row)
    return rows


def _env(store, home: Path) -> dict[str, str]:
    return {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}


def _files(home: Path) -> set[Path]:
    return {p for p in home.rglob("*") if p.is_file() and p.suffix in (".skops", ".json", ".png")}


# ----------------------------------------------------------------------------- names and files


def test_default_name_of_a_class_with_a_slash_trains_and_saves_inside_predictors(pred_store, tmp_path):
    """`train --class mobile-ml-benchmark/s10`: the default name `class:mobile-ml-benchmark/s10` is
    kept in the store as it is; its files get a safe name inside predictors/ and reports/."""
    store, cls = pred_store, "mobile-ml-benchmark/s10"
    store.add_measurements_bulk(_class_rows(store, cls, 1.7))
    env, runner = _env(store, tmp_path), CliRunner()
    out = runner.invoke(group, ["train", "--class", cls, "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["name"] == f"class:{cls}" and rep["classes"] == [cls]
    rec = store.champion(f"class:{cls}")
    assert rec is not None and rec.device_class == cls
    model = Path(rec.path)
    assert model.parent == tmp_path / "predictors" and model.name.startswith("class_mobile-ml-benchmark_s10-")
    assert Path(rep["report"]) == tmp_path / "reports" / "class_mobile-ml-benchmark_s10-v1.json"
    vid = store.list_variants(family="nb201")[0].id
    out = runner.invoke(
        group, ["predict", "--variant", vid, "--device", cls, "--name", f"class:{cls}", "--json"], env=env
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["method"] == f"class:{cls}"
    # a name with a / of the user's own: the same
    out = runner.invoke(group, ["train", "--name", "team/x", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert Path(store.champion("team/x").path).parent == tmp_path / "predictors"


def test_a_dot_dot_name_stays_inside_the_predictors_folder(pred_store, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = CliRunner().invoke(
        group, ["train", "--name", "../esc", "--kind", "linear", "--json"], env=_env(pred_store, home)
    )
    assert out.exit_code == 0, out.output
    rec = pred_store.champion("../esc")
    assert rec is not None and Path(rec.path).parent == home / "predictors"
    assert Path(rec.path).name.startswith(".._esc-")
    assert not [p for p in tmp_path.iterdir() if p.name != "home" and p.name.startswith("esc")]  # nothing outside
    assert all(home in p.parents for p in _files(tmp_path) if p.suffix == ".skops")
    _, pset = load_champion(pred_store, "../esc")  # and it loads back
    assert pset.meta["name"] == "../esc"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "at least one letter or digit"),
        ("..", "at least one letter or digit"),
        ("./..", "at least one"),
        ("a\nb", "control character"),
        ("x" * 257, "at most 256"),
    ],  # fmt: skip
)
def test_a_name_no_file_can_carry_is_refused_before_any_row_is_read(pred_store, tmp_path, name, why):
    """Refused up front: on an empty store the name error comes before "empty training set", and
    on a real one nothing is fitted or written."""
    from registry.store import Store

    empty = Store.open(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(EdgeatlasError, match=why) as e:
        train(empty, name=name)
    assert "--name" in (e.value.hint or "")
    out = CliRunner().invoke(group, ["train", "--name", name, "--kind", "linear"], env=_env(pred_store, tmp_path))
    assert out.exit_code == 1 and why in str(out.exception)
    assert pred_store.list_predictors() == [] and not _files(tmp_path)
