"""The HTML report, checked in a real headless Chromium by taking a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from registry.config import load_devices, sync_fleet_to_store
from registry.report import build_report, coverage
from registry.store import Store

REPO = Path(__file__).resolve().parents[1]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def filled_store(tmp_path: Path) -> Store:
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    sync_fleet_to_store(load_devices(REPO / "devices.toml"), store)
    v = store.add_variant(
        id="b" * 64, family="mobilenet_v2", format="onnx", path="/x.onnx", params=1000, macs=2_000_000, size_bytes=4000,
        input_shape=(1, 3, 64, 64), precision="fp32", width=0.5, resolution=64,
    )  # fmt: skip
    for board, ms in (("little-1", 8.0), ("big-1", 3.5)):
        key = Store.measurement_key(v.id, board, {"runtime": "onnxruntime", "threads": 1})
        store.add_measurement(key, board, v.id, "onnxruntime", {"threads": 1}, "ok", latency_ms=ms)
    return store


def test_coverage_counts(filled_store: Store) -> None:
    variants, boards, counts = coverage(filled_store)
    assert variants == ["b" * 64] and "little-1" in boards
    assert counts == {("b" * 64, "little-1"): 1, ("b" * 64, "big-1"): 1}


def test_report_html_sections(filled_store: Store, tmp_path: Path) -> None:
    out = build_report(filled_store, tmp_path / "report.html")
    text = out.read_text()
    for section in (
        "Fleet",
        "Coverage",
        "Variants",
        "Predictors",
        "little-1",
        "mobilenet_v2",
        "data:image/png;base64,",
    ):
        assert section in text


def test_report_renders_in_headless_chromium(filled_store: Store, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = build_report(filled_store, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
        "--window-size=1280,1600", f"--screenshot={shot}", out.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1200
    # a rendered page is not blank: it has text and plot pixels of many shades
    assert img[..., :3].std() > 0.05
