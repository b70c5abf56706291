"""`edgeatlas predictors` through the CLI (click CliRunner) on a real SQLite store holding real HELP
NB201 measurements (tests/fixtures_predictors.py): predictor names and the files they make, and the
provenance of predicted energy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures_predictors import POWER_MODEL, new_class_rows

from predictors.training import load_champion, train
from registry.commands.predictors import group
from registry.errors import EdgeatlasError


def _env(store, home: Path) -> dict[str, str]:
    return {"EDGEATLAS_DB": store.url, "EDGEATLAS_HOME": str(home)}


def _files(home: Path) -> set[Path]:
    return {p for p in home.rglob("*") if p.is_file() and p.suffix in (".skops", ".json", ".png")}


# ----------------------------------------------------------------------------- names and files


def test_default_name_of_a_class_with_a_slash_trains_and_saves_inside_predictors(pred_store, tmp_path):
    """`train --class mobile-ml-benchmark/s10`: the default name `class:mobile-ml-benchmark/s10` is
    kept in the store as it is; its files get a safe name inside predictors/ and reports/."""
    store, cls = pred_store, "mobile-ml-benchmark/s10"
    store.add_measurements_bulk(new_class_rows(store, cls, 1.7))
    env, runner = _env(store, tmp_path), CliRunner()
    out = runner.invoke(group, ["train", "--class", cls, "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["name"] == f"class:{cls}" and rep["classes"] == [cls]
    rec = store.champion(f"class:{cls}")
    assert rec is not None and rec.device_class == cls
    model = Path(rec.path)
    assert model.parent == tmp_path / "predictors" and model.name.startswith("class_mobile-ml-benchmark_s10~")
    report = Path(rep["report"])
    assert report.parent == tmp_path / "reports" and report.name.startswith("class_mobile-ml-benchmark_s10~")
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
    assert Path(rec.path).name.startswith(".._esc~")
    from predictors.training import file_stem

    # names that map to the same characters still get files of their own (a report is per name)
    assert len({file_stem(n) for n in ("a/b", "a_b", "a:b", "a b")}) == 4 and file_stem("a_b") == "a_b"
    # names differing only in case get files differing in more than case (case-insensitive file systems)
    assert len({file_stem(n).lower() for n in ("fast", "Fast", "FAST")}) == 3 and file_stem("fast") == "fast"
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


# ----------------------------------------------------------------------------- energy provenance


def _energy_store(store) -> None:
    """aud-slow: energy from the power model on every row; mix: half its rows metered (RAPL)."""
    store.add_measurements_bulk(new_class_rows(store, "aud-slow", 2.0, watts=3.0))
    rows = new_class_rows(store, "mix", 1.4, watts=2.0)
    for r in rows[::2]:
        r.update(energy_source="measured:rapl", energy_mj=1.1 * r["energy_mj"])
    store.add_measurements_bulk(rows)


def test_predicted_energy_names_the_energy_source_of_its_training_rows(pred_store, tmp_path):
    store = pred_store
    _energy_store(store)
    env, runner = _env(store, tmp_path), CliRunner()
    out = runner.invoke(group, ["train", "--kind", "linear", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    want = {"aud-slow": [POWER_MODEL], "mix": [POWER_MODEL, "measured:rapl"]}  # sorted
    assert rep["energy_sources"] == want  # only the classes with an energy model
    assert json.loads(Path(rep["report"]).read_text())["energy_sources"] == want
    _, pset = load_champion(store)
    assert pset.meta["energy_sources"] == want  # in the predictor file itself
    vid = store.list_variants(family="nb201")[0].id
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "aud-slow", "--json"], env=env)
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["energy_lo"] <= d["energy_mj"] <= d["energy_hi"] and d["energy_mj"] > 0
    assert d["energy_source"] == f"predicted:class:aud-slow from {POWER_MODEL}" and "energy_note" not in d
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "mix", "--json"], env=env)
    assert json.loads(out.output)["energy_source"] == f"predicted:class:mix from {POWER_MODEL}, measured:rapl"
    out = runner.invoke(group, ["predict", "--variant", vid, "--device", "aud-slow"], env=env)  # the table
    assert out.exit_code == 0 and "energy_source" in out.output and POWER_MODEL in out.output, out.output
    # the recommender labels the energy it takes from the predictor the same way
    from registry.selector.sources import DeviceSpec, load_candidates

    table = load_candidates(
        store,
        DeviceSpec("aud-slow-1", "aud-slow"),
        DeviceSpec("edge-1", "pixel3"),
        "default",
        use_measurements=False,
        variants=store.list_variants(family="nb201")[:3],
    )
    assert table.energy_source == f"predicted:class:aud-slow from {POWER_MODEL}"


def test_left_out_energy_says_why(pred_store, tmp_path):
    """k-shot, zero-shot and a class without energy rows: energy_mj null, energy_note the reason."""
    store = pred_store
    _energy_store(store)
    env, runner = _env(store, tmp_path), CliRunner()
    assert runner.invoke(group, ["train", "--kind", "linear"], env=env).exit_code == 0
    _, pset = load_champion(store)
    vid = store.list_variants(family="nb201")[0].id

    def predict(*args: str) -> dict:
        out = runner.invoke(group, ["predict", "--variant", vid, *args, "--json"], env=env)
        assert out.exit_code == 0, out.output
        return json.loads(out.output)

    d = predict("--device", "pixel3")  # HELP rows carry no energy
    assert d["energy_mj"] is None and d["energy_source"] is None
    assert "'pixel3' has no energy model" in d["energy_note"]
    probes = tmp_path / "probes.json"
    probes.write_text(
        json.dumps(
            {
                p: float(pset.predict(f, device_class="pixel3").latency_ms[0])
                for p, f in zip(pset.probe_ids, pset.probe_features, strict=True)
            }
        )
    )
    d = predict("--probe-latencies", str(probes))
    assert d["method"].startswith("kshot") and d["energy_mj"] is None and d["energy_lo"] is None
    assert d["energy_source"] is None and "k-shot from probe latencies predicts latency only" in d["energy_note"]
    assert "active_w" in d["energy_note"]
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"cores": 4, "freq_mhz": 1800, "memory_mb": 4096}))
    d = predict("--device-facts", str(facts))
    assert d["method"] == "zeroshot:facts" and d["energy_mj"] is None
    assert "zero-shot from device facts predicts latency only" in d["energy_note"]
    out = runner.invoke(group, ["predict", "--variant", vid, "--probe-latencies", str(probes)], env=env)
    assert out.exit_code == 0 and "energy_note" in out.output and "k-shot" in out.output  # the table too
