"""Read commands over a store that also holds imported dataset rows (real SQLite): bench results,
zoo list --all, predictors list, report --plots."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from click.testing import CliRunner
from fixtures_predictors import add_featureless_variant

from registry.cli import main
from registry.store import Store


def _store(tmp_path: Path, n_imported: int = 450) -> str:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    s = Store.open(url)
    add_featureless_variant(s, "v" * 64)  # no artifact file, as an imported arch
    rows = []
    for i in range(n_imported + 3):
        src, board = ("probe" if i < 2 else "api", "little-1") if i < 3 else ("dataset:help-nb201", "help-nb201/pixel3")
        rows.append(
            {
                "key": hashlib.sha256(f"{i}".encode()).hexdigest(),
                "board": board,
                "variant_id": "v" * 64,
                "runtime": "onnxruntime",
                "config": {"i": i},
                "status": "ok",
                "latency_ms": 1.0 + i,
                "device_class": board,
                "source": src,
            }
        )
    s.add_measurements_bulk(rows)
    return url


def test_results_default_to_the_fleets_own_rows_and_page_the_table(tmp_path: Path) -> None:
    url = _store(tmp_path)
    r = CliRunner()
    own = json.loads(r.invoke(main, ["bench", "results", "--db", url, "--json"]).stdout)
    assert len(own) == 3 and {x["board"] for x in own} == {"little-1"}  # probe and API-posted rows
    assert len(json.loads(r.invoke(main, ["bench", "results", "--db", url, "--source", "probe", "--json"]).stdout)) == 2
    every = r.invoke(main, ["bench", "results", "--db", url, "--source", "all", "--csv"]).stdout
    assert len(list(csv.DictReader(io.StringIO(every)))) == 453
    table = r.invoke(main, ["bench", "results", "--db", url, "--source", "dataset:*"])
    assert table.exit_code == 0 and "newest 200 of 450" in table.stdout and "--limit 0" in table.stderr
    newest = json.loads(
        r.invoke(main, ["bench", "results", "--db", url, "--source", "all", "--limit", "5", "--json"]).stdout
    )
    assert [x["p50_ms"] for x in newest] == [449.0, 450.0, 451.0, 452.0, 453.0]  # newest 5, oldest first


def test_results_json_and_csv_carry_each_rows_source(tmp_path: Path) -> None:
    url = _store(tmp_path, n_imported=2)
    r = CliRunner()
    rows = json.loads(r.invoke(main, ["bench", "results", "--db", url, "--source", "all", "--json"]).stdout)
    assert [x["source"] for x in rows] == ["probe", "probe", "api", "dataset:help-nb201", "dataset:help-nb201"]
    text = r.invoke(main, ["bench", "results", "--db", url, "--source", "all", "--csv"]).stdout
    header = text.splitlines()[0].split(",")
    assert header[-1] == "source" and header[:3] == ["board", "variant", "runtime"]  # new columns go last
    assert [x["source"] for x in csv.DictReader(io.StringIO(text))] == [x["source"] for x in rows]


def test_results_unknown_board_is_an_error(tmp_path: Path) -> None:
    url = _store(tmp_path, n_imported=1)
    out = CliRunner().invoke(main, ["bench", "results", "--db", url, "--board", "nope"])
    assert out.exit_code == 1 and "unknown board 'nope'" in out.output and "fleet list" in out.output


def test_zoo_list_all_shows_variants_without_artifacts(tmp_path: Path) -> None:
    url = _store(tmp_path, n_imported=1)
    r = CliRunner()
    assert json.loads(r.invoke(main, ["zoo", "list", "--db", url, "--json"]).stdout) == []
    every = json.loads(r.invoke(main, ["zoo", "list", "--all", "--db", url, "--json"]).stdout)
    assert [v["id"] for v in every] == ["v" * 64]
    out = r.invoke(main, ["zoo", "show", "vvv", "--db", url])
    assert out.exit_code == 1 and "at least 4 characters" in out.output


def test_empty_predictor_list_and_missing_plots_folder_say_so(tmp_path: Path) -> None:
    url = _store(tmp_path, n_imported=1)
    r = CliRunner()
    out = r.invoke(main, ["predictors", "list", "--db", url])
    assert out.exit_code == 0 and "predictors train" in out.stderr
    assert json.loads(r.invoke(main, ["predictors", "list", "--db", url, "--json"]).stdout) == []
    out = r.invoke(main, ["report", "--db", url, "--out", str(tmp_path / "r.html"), "--plots", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "no such folder" in out.output and not (tmp_path / "r.html").exists()
