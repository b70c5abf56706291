"""Where edgeatlas keeps its files.

Everything lives under one data directory: ``$EDGEATLAS_HOME`` if set, otherwise
the user's data directory (``~/.local/share/edgeatlas`` on Linux, per XDG).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    env = os.environ.get("EDGEATLAS_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
        path = base / "edgeatlas"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(name: str) -> Path:
    path = data_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_dir() -> Path:
    """Content-addressed model files: ``<sha256>.onnx`` / ``<sha256>.tflite``."""
    return _sub("artifacts")


def fleet_dir() -> Path:
    """Emulated fleet state: sshd configs, host keys, client key, known_hosts, pids."""
    return _sub("fleet")


def predictors_dir() -> Path:
    """Versioned predictor files (skops)."""
    return _sub("predictors")


def cache_dir() -> Path:
    """Derived caches (graph features per architecture, datasets)."""
    return _sub("cache")


def reports_dir() -> Path:
    return _sub("reports")


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'edgeatlas.db'}"
