"""`predictors import` / `predictors eval` on broken dataset files and flags: one error line naming
the file, the line, the column and the fix, never a traceback. The files are small copies written to
tmp_path (the shared datasets stay read-only)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from predictors import datasets as D
from registry.cli import main
from registry.errors import EdgeatlasError, ErrorCode

HELP_CSV = Path("/work/shared/datasets/help/nb201_latency_ms.csv")

pytestmark = pytest.mark.skipif(not HELP_CSV.exists(), reason="needs ../shared/datasets")


def _head(n: int) -> list[str]:
    """The header and the first ``n`` rows of HELP's NB201 file, as lines."""
    with open(HELP_CSV, encoding="utf-8") as fh:
        return [next(fh) for _ in range(n + 1)]


def _help_dir(tmp_path: Path, text: str | bytes) -> Path:
    folder = tmp_path / "help"
    folder.mkdir(exist_ok=True)
    target = folder / "nb201_latency_ms.csv"
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text, encoding="utf-8")
    return folder


def _run(tmp_path: Path, *args: str) -> Result:
    env = {**os.environ, "EDGEATLAS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    return CliRunner().invoke(main, ["predictors", *args], env=env)


def _import_error(tmp_path: Path, folder: Path) -> str:
    res = _run(tmp_path, "import", "help-nb201", "--path", str(folder), "--db", f"sqlite:///{tmp_path / 'a.db'}")
    out = res.stderr.strip()
    assert res.exit_code == 1 and "Traceback" not in res.output and len(out.splitlines()) == 1, res.output
    assert res.stdout == "" and "fix:" in out, res.output
    return out


def test_empty_file(tmp_path: Path) -> None:
    out = _import_error(tmp_path, _help_dir(tmp_path, ""))
    assert "nb201_latency_ms.csv: the file is empty (no header line)" in out and "copy the file again" in out


def test_short_row_names_its_line(tmp_path: Path) -> None:
    lines = _head(3)
    lines[2] = ",".join(lines[2].split(",")[:5]) + "\n"  # a cut-off row
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "nb201_latency_ms.csv line 3: 5 columns, the header has 35" in out and "fix or delete that line" in out


def test_non_utf8_names_its_line(tmp_path: Path) -> None:
    data = "".join(_head(3)).encode() + b"0,caf\xe9\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, data))
    assert "nb201_latency_ms.csv line 5: not UTF-8 text (byte 0xe9)" in out and "save it as UTF-8" in out


def test_bad_value_names_line_column_and_fix(tmp_path: Path) -> None:
    lines = _head(2)
    cells = lines[2].rstrip("\n").split(",")
    pixel3 = lines[0].rstrip("\n").split(",").index("pixel3")
    cells[pixel3] = "fast"
    lines[2] = ",".join(cells) + "\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "nb201_latency_ms.csv line 3 column 'pixel3': 'fast' is not a number" in out
    assert "write a number in column 'pixel3'" in out
    cells[pixel3], cells[0], cells[1] = "1.0", "12a", "|nope~0|+|x|"
    lines[2] = ",".join(cells) + "\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "line 3 column 'arch_str': not a NAS-Bench-201 arch string" in out and "|op~0|+|op~0|op~1|" in out


def test_bad_index_and_missing_column(tmp_path: Path) -> None:
    lines = _head(1)
    lines[1] = "12a" + lines[1][lines[1].index(",") :]
    with pytest.raises(EdgeatlasError) as e:
        D.load_help_nb201(_help_dir(tmp_path, "".join(lines)))
    assert "line 2 column 'nb201_idx': '12a' is not a whole number" in e.value.message and e.value.hint
    lines[0] = lines[0].replace("arch_str", "arch")
    with pytest.raises(EdgeatlasError) as e:
        D.load_help_nb201(_help_dir(tmp_path, "".join(lines)))
    assert "line 1: no column 'arch_str' in the header" in e.value.message and "--path" in e.value.hint


def test_gzip_files_are_checked_the_same_way(tmp_path: Path) -> None:
    folder = tmp_path / "hwnas"
    folder.mkdir()
    (folder / "dataset.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(EdgeatlasError, match="the file is empty"):
        D.load_hwnasbench360(folder)
    (folder / "dataset.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(EdgeatlasError) as e:
        D.load_hwnasbench360(folder)
    assert e.value.code == ErrorCode.BAD_DATA and "dataset.csv.gz: cannot read" in e.value.message


def test_wrong_path_says_which_folder_and_files(tmp_path: Path) -> None:
    empty = tmp_path / "somewhere"
    empty.mkdir()
    out = _import_error(tmp_path, empty)
    assert "nb201_latency_ms.csv: missing dataset file" in out
    assert f"point --path at the help folder of the datasets, e.g. --path {D.DEFAULT_ROOT / 'help'}" in out
    assert "nb201_latency_ms.csv, fbnet_latency_ms.csv, hardware_embedding_index.csv" in out
    a_file = tmp_path / "file.csv"
    a_file.write_text("x\n")
    res = _run(tmp_path, "eval", "--dataset", "help-nb201", "--device", "pixel2", "--path", str(a_file))
    assert res.exit_code == 1 and "is a file, not a folder" in res.stderr and "--path" in res.stderr


@pytest.mark.parametrize("device", [",", "", " , "])
def test_eval_without_a_device_is_a_usage_error(tmp_path: Path, device: str) -> None:
    for extra in ([], ["--json"]):
        res = _run(tmp_path, "eval", "--dataset", "help-nb201", "--device", device, *extra)
        assert res.exit_code == 1 and res.stdout == "" and "Traceback" not in res.output, res.output
        assert (
            "[INVALID_ARGUMENT]" in res.stderr and "names no device" in res.stderr and "--device pixel2" in res.stderr
        )


def test_import_json_is_pure_json(tmp_path: Path) -> None:
    folder = _help_dir(tmp_path, "".join(_head(2)))
    res = _run(
        tmp_path, "import", "help-nb201", "--path", str(folder), "--db", f"sqlite:///{tmp_path / 'a.db'}", "--json"
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("{") and json.loads(res.stdout)["variants"] == 2
