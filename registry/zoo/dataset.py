"""A generated image task on which the zoo trains and evaluates models: ``shapes-v1``.

Every image holds one filled or outlined shape (8 classes) of one colour (6 classes) in one
quadrant (4 classes), on a noisy tinted background with one distractor line. Scenes are drawn
from a seeded numpy generator and rasterised at any resolution from the same scene parameters,
so the data set is identical (up to sampling) at 64, 96 or 160 pixels. Nothing is downloaded.

Splits: ``train`` (2000 scenes, seed 1), ``test`` (1000 scenes, seed 2, held out: used only for
the accuracies the zoo records), ``calib`` (the first 128 training scenes: quantisation and PCA
calibration). Pixels are normalised as ``(x - 0.5) / 0.25``, layout NCHW float32.

Rendered arrays are cached under ``cache_dir()/datasets`` (derived data, rebuilt if missing).
Used by the selector's regret benchmark through :func:`load_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import cache_dir

DATASET = "shapes-v1"  # bump the version when scenes or rendering change
SHAPES = ("circle", "ring", "square", "frame", "rhombus", "triangle", "cross", "ellipse")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right")
TASKS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOURS, "position": POSITIONS}
SPLITS = {"train": (1, 2000), "test": (2, 1000), "calib": (1, 128)}
MEAN, STD = 0.5, 0.25
_RGB = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)


@dataclass(frozen=True)
class Dataset:
    """Images (N, 3, R, R) float32, normalised, and integer labels per task."""

    name: str
    split: str
    resolution: int
    x: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _scenes(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = rng.integers(0, len(SHAPES), n)
    colour = rng.integers(0, len(COLOURS), n)
    size = rng.uniform(0.2, 0.3, n)
    quadrant = rng.integers(0, 4, n)
    cx = np.where(quadrant % 2 == 0, rng.uniform(0.2, 0.45, n), rng.uniform(0.55, 0.8, n))
    cy = np.where(quadrant < 2, rng.uniform(0.2, 0.45, n), rng.uniform(0.55, 0.8, n))
    # keep the whole shape inside the image
    cx = np.clip(cx, size, 1 - size)
    cy = np.clip(cy, size, 1 - size)
    return {
        "shape": shape,
        "colour": colour,
        "position": quadrant,
        "size": size,
        "cx": cx,
        "cy": cy,
        "angle": rng.uniform(0, 2 * np.pi, n),
        "jitter": rng.uniform(-0.2, 0.2, (n, 3)),
        "bright": rng.uniform(0.6, 1.0, n),
        "bg": rng.uniform(0.0, 0.45, (n, 3)),
        "lines": rng.uniform(0, 1, (n, 1, 4)),
        "line_rgb": rng.uniform(0.2, 0.9, (n, 1, 3)),
        "noise_seed": rng.integers(0, 2**31 - 1, n),
    }


def _mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u * u + v * v)
    m = np.maximum(np.abs(u), np.abs(v))
    name = SHAPES[kind]
    if name == "circle":
        return r < 1.0
    if name == "ring":
        return (r < 1.0) & (r > 0.6)
    if name == "square":
        return m < 0.85
    if name == "frame":
        return (m < 0.9) & (m > 0.55)
    if name == "rhombus":
        return np.abs(u) + np.abs(v) / 0.55 < 1.05
    if name == "triangle":
        return (v > -0.55) & (np.sqrt(3.0) * np.abs(u) < 1.0 - v)
    if name == "cross":
        return ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1.0))
    return (u * u + (v / 0.45) ** 2) < 1.0  # ellipse


def render(scenes: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    """Rasterise scenes to (N, 3, R, R) float32 in [0, 1]."""
    n = len(scenes["shape"])
    res = int(resolution)
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((n, 3, res, res), np.float32)
    for i in range(n):
        img = np.broadcast_to(scenes["bg"][i][:, None, None], (3, res, res)).astype(np.float32).copy()
        for j in range(scenes["lines"].shape[1]):  # a distractor line
            x0, y0, x1, y1 = scenes["lines"][i, j]
            dx, dy = x1 - x0, y1 - y0
            norm = max(np.hypot(dx, dy), 1e-6)
            dist = np.abs(dy * (gx - x0) - dx * (gy - y0)) / norm
            line = dist < 0.012
            img[:, line] = scenes["line_rgb"][i, j][:, None]
        s, a = scenes["size"][i], scenes["angle"][i]
        du, dv = (gx - scenes["cx"][i]) / s, (gy - scenes["cy"][i]) / s
        ca, sa = np.cos(a), np.sin(a)
        u, v = ca * du + sa * dv, -sa * du + ca * dv
        mask = _mask(int(scenes["shape"][i]), u, v)
        rgb = np.clip(_RGB[scenes["colour"][i]] * scenes["bright"][i] + scenes["jitter"][i], 0, 1)
        img[:, mask] = rgb[:, None]
        noise = np.random.default_rng(int(scenes["noise_seed"][i])).normal(0, 0.05, (3, res, res))
        out[i] = np.clip(img + noise.astype(np.float32), 0, 1)
    return out


@lru_cache(maxsize=16)
def _load(name: str, split: str, resolution: int) -> Dataset:
    seed, n = SPLITS[split]
    scenes = _scenes(seed, n)
    cache = cache_dir() / "datasets" / f"{name}-{split}-{resolution}.npy"
    x = None
    if cache.exists():
        try:
            x = np.load(cache, allow_pickle=False)
        except (OSError, ValueError):
            x = None
    if x is None or x.shape != (n, 3, resolution, resolution):
        x = ((render(scenes, resolution) - MEAN) / STD).astype(np.float32)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, x, allow_pickle=False)
        os.replace(tmp, cache)
    x.setflags(write=False)
    labels = {t: scenes[t].astype(np.int64) for t in TASKS}
    return Dataset(name=name, split=split, resolution=resolution, x=x, labels=labels)


def load_dataset(name: str = "shapes-v1", split: str = "test", resolution: int = 64) -> Dataset:
    """The generated data set ``name`` at ``resolution`` (deterministic; cached in memory)."""
    if name != DATASET:
        raise EdgeatlasError(
            f"unknown dataset {name!r}", code=ErrorCode.INVALID_ARGUMENT, hint=f"the zoo generates {DATASET!r}"
        )
    if split not in SPLITS:
        raise EdgeatlasError(
            f"unknown split {split!r} of {name}", code=ErrorCode.INVALID_ARGUMENT, hint=f"use one of {list(SPLITS)}"
        )
    if not 16 <= int(resolution) <= 512:
        raise EdgeatlasError(
            f"resolution {resolution} out of range", code=ErrorCode.INVALID_ARGUMENT, hint="use 16..512"
        )
    return _load(name, split, int(resolution))


def task_classes(task: str) -> int:
    return len(TASKS[task])
