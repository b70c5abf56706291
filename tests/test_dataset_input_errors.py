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


def test_a_record_spanning_lines_is_named_by_its_first_line(tmp_path: Path) -> None:
    """A quoted field may hold a newline: the error names the line the record starts on (and, for a
    column count, the lines it spans), not the line it ends on."""
    lines = _head(3)
    pixel3 = lines[0].rstrip("\n").split(",").index("pixel3")
    cells = lines[2].rstrip("\n").split(",")
    cells[pixel3] = '"1.5\n2.5"'  # line 3 holds a value that runs onto line 4
    lines[2] = ",".join(cells) + "\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "nb201_latency_ms.csv line 3 column 'pixel3'" in out and "is not a number" in out, out
    lines[2] = '0,"|nor_conv_3x3~0|\n+|x|",' + "\n"  # 3 columns over lines 3-4
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "nb201_latency_ms.csv lines 3-4: 3 columns, the header has 35" in out, out
    # the record after a multi-line one keeps its own line number
    lines[2] = ",".join(cells) + "\n"
    cells3 = lines[3].rstrip("\n").split(",")
    cells3[pixel3] = "slow"
    lines[3] = ",".join(cells3) + "\n"
    cells[pixel3] = '"1.5\n"'  # a number (float() strips the newline) over lines 3-4
    lines[2] = ",".join(cells) + "\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert "line 5 column 'pixel3': 'slow' is not a number" in out, out


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


def test_non_positive_latency_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    lines = _head(3)
    cells = lines[2].rstrip("\n").split(",")
    column = lines[0].rstrip("\n").split(",")[8]
    cells[8] = "-4.2"  # the first device column of the second row (line 3)
    lines[2] = ",".join(cells) + "\n"
    out = _import_error(tmp_path, _help_dir(tmp_path, "".join(lines)))
    assert f"line 3 column {column!r}: '-4.2' is not a positive measurement" in out, out
    assert "must be > 0" in out and "leave it empty" in out


def test_a_corrected_file_imported_again_updates_and_removes_its_values(tmp_path: Path) -> None:
    """Keys are (dataset, arch, device) hashes, so a value fixed in the file used to be skipped on the
    next import. Now the changed value replaces the stored one, a value blanked in the file is
    deleted, and the same file imported again writes nothing."""
    from registry.store import Store

    db = f"sqlite:///{tmp_path / 'a.db'}"
    header, first, second = _head(2)
    devices = header.rstrip("\n").split(",")[8:]

    def write(row1: list[str]) -> Path:
        return _help_dir(tmp_path, header + ",".join(row1) + "\n" + second)

    def imported(folder: Path) -> dict:
        res = _run(tmp_path, "import", "help-nb201", "--path", str(folder), "--db", db, "--json")
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    row = first.rstrip("\n").split(",")
    n = 2 * len(devices)
    r = imported(write(row))
    assert (r["measurements"], r["inserted"], r["updated"], r["removed"]) == (n, n, 0, 0), r
    assert imported(write(row))["inserted"] == 0 and imported(write(row))["updated"] == 0
    fixed = list(row)
    fixed[8] = str(float(row[8]) * 2)
    r = imported(write(fixed))
    assert (r["inserted"], r["updated"], r["removed"]) == (0, 1, 0), r
    blanked = list(fixed)
    blanked[9] = ""
    r = imported(write(blanked))
    assert (r["measurements"], r["inserted"], r["updated"], r["removed"]) == (n - 1, 0, 0, 1), r
    cols = header.rstrip("\n").split(",")
    arch = D.nb201_key(int(row[cols.index("nb201_idx")]), "eager")
    stored = {m.runtime: m.latency_ms for m in Store.open(db).list_measurements(variant_id=arch)}
    assert stored[devices[0]] == float(row[8]) * 2  # the corrected value
    assert devices[1] not in stored and len(stored) == len(devices) - 1  # the blanked one is gone


def test_hwnasbench360_pi5_development_tasks_are_a_development_class(tmp_path: Path) -> None:
    """The datasets README makes only the pi5's cifar100 rows evaluation data; its ninapro and darcy
    rows are development data. Import keeps them apart: `hwnasbench360/pi5-litert` (development,
    trainable) and `hwnasbench360/pi5-litert/cifar100` (evaluation, left out of training); the
    pixel is one development class. Importing again moves nothing twice."""
    from registry.store import Store

    real = Path("/work/shared/datasets/hwnasbench360/dataset.csv.gz")
    with gzip.open(real, "rt", encoding="utf-8") as fh:
        header = next(fh)
        keep = [
            line
            for line in fh
            if line.split(",")[0] in ("0", "1", "2")
            and line.split(",")[5] in ("cifar100", "ninapro")
            and line.split(",")[4] == "litert"
        ]
    folder = tmp_path / "hwnas"
    folder.mkdir()
    (folder / "dataset.csv.gz").write_bytes(gzip.compress((header + "".join(keep)).encode()))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    for _ in range(2):
        res = _run(tmp_path, "import", "hwnasbench360", "--path", str(folder), "--db", db, "--json")
        assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["inserted"] == 0  # the second import wrote nothing
    store = Store.open(db)
    flags = {c.name: c.facts["evaluation"] for c in store.list_device_classes() if c.name.startswith("hwnasbench360/")}
    assert flags == {
        "hwnasbench360/pi5-litert": False,
        "hwnasbench360/pi5-litert/cifar100": True,
        "hwnasbench360/pixel-litert": False,
    }, flags
    tasks = {c: {m.variant_id.split(":")[0] for m in store.list_measurements(device_class=c)} for c in flags}
    assert tasks["hwnasbench360/pi5-litert"] == {"nb201-ninapro"}
    assert tasks["hwnasbench360/pi5-litert/cifar100"] == {"nb201-cifar100"}
    assert tasks["hwnasbench360/pixel-litert"] == {"nb201-cifar100", "nb201-ninapro"}
    # A store from before the split (one pi5 class, marked evaluation, holding the cifar100 rows),
    # re-imported by an import that stops half-way (a named fault injection: the first row write
    # raises): the class that holds cifar100 rows stays marked evaluation, so training never reads them.
    from sqlalchemy import update

    from predictors.training import evaluation_classes
    from registry.store.models import MeasurementRow

    old = "hwnasbench360/pi5-litert"
    n_cifar = len(store.list_measurements(device_class=f"{old}/cifar100"))
    assert n_cifar > 0
    with store.session() as s:
        s.execute(
            update(MeasurementRow)
            .where(MeasurementRow.device_class == f"{old}/cifar100")
            .values(device_class=old, board=old)
        )
    store.upsert_device_class(old, {"dataset": "hwnasbench360", "device": "pi5-litert", "evaluation": True})

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    real = store.sync_measurements_bulk
    store.sync_measurements_bulk = interrupted
    with pytest.raises(KeyboardInterrupt):
        D.import_dataset(store, "hwnasbench360", folder)
    assert old in evaluation_classes(store)  # still holding cifar100 rows: still left out of training
    store.sync_measurements_bulk = real
    r = D.import_dataset(store, "hwnasbench360", folder)
    assert (r["inserted"], r["updated"], r["removed"]) == (0, n_cifar, 0), r  # the rows moved back
    assert old not in evaluation_classes(store)
    assert {m.variant_id.split(":")[0] for m in store.list_measurements(device_class=old)} == {"nb201-ninapro"}
