"""Imported dataset architectures (no artifact, empty path) are predictor training data: they are
never benchmarked by `bench run --grid`, never recommended, and not listed as zoo artifacts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from probes.sweep import select_variants
from registry.commands.zoo import group as zoo_group
from registry.errors import EdgeatlasError
from registry.selector.sources import DeviceSpec, load_candidates
from registry.store import Store


@pytest.fixture
def store_with_dataset_arch(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'ea.db'}"
    store = Store.open(url)
    store.add_variant(
        id="nb201:7",
        family="nb201",
        format="onnx",
        path="",
        params=1000,
        macs=100000,
        size_bytes=4000,
        input_shape=(1, 3, 32, 32),
        precision="fp32",
    )
    return store, url


def test_grid_skips_dataset_architectures(store_with_dataset_arch):
    store, _ = store_with_dataset_arch
    with pytest.raises(EdgeatlasError, match="has no onnx variants"):
        select_variants(store, "onnxruntime", grid=True)


def test_selector_does_not_offer_dataset_architectures(store_with_dataset_arch):
    store, _ = store_with_dataset_arch
    dev = DeviceSpec(name="d", class_name="c")
    with pytest.raises(EdgeatlasError, match="no model variants"):
        load_candidates(store, dev, DeviceSpec(name="e", class_name="e"), predictor=None)


def test_zoo_list_shows_artifacts_only(store_with_dataset_arch):
    _, url = store_with_dataset_arch
    out = CliRunner().invoke(zoo_group, ["list", "--json", "--db", url])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == []
