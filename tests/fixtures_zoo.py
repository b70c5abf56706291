"""Zoo fixtures shared by every room: a small set of real, built variants in a SQLite store.

``zoo_built`` (session scope) builds, under its own EDGEATLAS_HOME, the multi-task model trained
here on shapes-v1 (width 0.25, 32 px, a short schedule: :data:`TEST_EPOCHS` epochs, recorded in
each recipe) as ONNX fp32 / fp16 / int8 and TFLite fp32 / fp16 / int8, plus an untrained
ImageNet-shaped mobilenet_v3_small (accuracy unknown). Accuracies are measured by onnxruntime
and ai-edge-litert on the held-out split: low-ish because the schedule is short, but real.

Variant paths are relative to the artifacts dir, so a test that reads the files must run with
that home: request ``zoo_env`` (it sets EDGEATLAS_HOME for the test) or use ``zoo_built.path(v)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TEST_EPOCHS = 2
TEST_FINETUNE_EPOCHS = 1


@dataclass(frozen=True)
class ZooBuilt:
    home: Path
    url: str
    variants: dict[str, object]  # name -> registry.store.records.Variant
    notes: dict[str, str | None]  # name -> split building note

    def path(self, name_or_variant: object) -> Path:
        v = self.variants[name_or_variant] if isinstance(name_or_variant, str) else name_or_variant
        p = Path(v.path)  # type: ignore[attr-defined]
        return p if p.is_absolute() else self.home / "artifacts" / p

    def store(self):
        from registry.store import Store

        return Store.open(self.url)


ZOO_SPECS: dict[str, dict] = {
    "mt_onnx_fp32": {"family": "multitask", "width": 0.25, "resolution": 32},
    "mt_onnx_fp16": {"family": "multitask", "width": 0.25, "resolution": 32, "precision": "fp16"},
    "mt_onnx_int8": {"family": "multitask", "width": 0.25, "resolution": 32, "precision": "int8"},
    "mt_tflite_fp32": {"family": "multitask", "width": 0.25, "resolution": 32, "format": "tflite"},
    "mt_tflite_fp16": {"family": "multitask", "width": 0.25, "resolution": 32, "format": "tflite", "precision": "fp16"},
    "mt_tflite_int8": {"family": "multitask", "width": 0.25, "resolution": 32, "format": "tflite", "precision": "int8"},
    "mnv3s_random": {"family": "mobilenet_v3_small", "width": 0.5, "resolution": 32, "dataset": None},
}


@pytest.fixture(scope="session")
def zoo_built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooBuilt]:
    from registry.store import Store
    from registry.zoo import train
    from registry.zoo.build import VariantSpec, build

    home = tmp_path_factory.mktemp("zoo-home")
    old_home = os.environ.get("EDGEATLAS_HOME")
    old_epochs = (train.EPOCHS, train.FINETUNE_EPOCHS)
    os.environ["EDGEATLAS_HOME"] = str(home)
    train.EPOCHS, train.FINETUNE_EPOCHS = TEST_EPOCHS, TEST_FINETUNE_EPOCHS
    try:
        url = f"sqlite:///{home / 'zoo.db'}"
        store = Store.open(url)
        variants, notes = {}, {}
        for name, kw in ZOO_SPECS.items():
            r = build(store, VariantSpec(**kw), max_split_points=3)
            variants[name] = r.variant
            notes[name] = r.splits_note
        store.dispose()
        yield ZooBuilt(home=home, url=url, variants=variants, notes=notes)
    finally:
        train.EPOCHS, train.FINETUNE_EPOCHS = old_epochs
        if old_home is None:
            os.environ.pop("EDGEATLAS_HOME", None)
        else:
            os.environ["EDGEATLAS_HOME"] = old_home


@pytest.fixture
def zoo_env(zoo_built: ZooBuilt, monkeypatch: pytest.MonkeyPatch) -> ZooBuilt:
    """The built zoo with EDGEATLAS_HOME pointing at its home (and the short test schedule, so
    building one of its specs again is a no-op)."""
    from registry.zoo import train

    monkeypatch.setenv("EDGEATLAS_HOME", str(zoo_built.home))
    monkeypatch.delenv("EDGEATLAS_DB", raising=False)
    monkeypatch.setattr(train, "EPOCHS", TEST_EPOCHS)
    monkeypatch.setattr(train, "FINETUNE_EPOCHS", TEST_FINETUNE_EPOCHS)
    return zoo_built
