"""A build grid (``zoo.toml``): blocks whose knob lists expand to a cartesian product of specs.

``[grid]`` holds defaults (``dataset``, ``max_split_points``, ``codecs``, ``splits``); every
``[[block]]`` names ``families`` and lists ``widths``, ``resolutions``, ``precisions``,
``prunes`` and ``formats`` (each a list; a missing list takes the default in :data:`DEFAULTS`).
A block may set ``dataset = "none"`` for ImageNet-shaped, randomly initialised models.

Every problem is an :class:`EdgeatlasError` naming the file, the block's line and the field.
Building is resumable: a spec whose recipe key is in the store is skipped in milliseconds.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import EdgeatlasError, ErrorCode
from registry.zoo.build import DEFAULT_MAX_SPLIT_POINTS, BuildResult, VariantSpec, build, find_by_recipe

DEFAULTS: dict[str, list[Any]] = {
    "widths": [1.0],
    "resolutions": [64],
    "precisions": ["fp32"],
    "prunes": [0.0],
    "formats": ["onnx"],
}
_BLOCK_KEYS = {"name", "families", "dataset", "task", "why", *DEFAULTS}
_GRID_KEYS = {"dataset", "max_split_points", "codecs", "splits"}


@dataclass(frozen=True)
class GridEntry:
    spec: VariantSpec
    block: str
    line: int


@dataclass(frozen=True)
class GridConfig:
    path: str
    entries: tuple[GridEntry, ...]
    max_split_points: int | None
    codecs: tuple[str, ...] | None
    splits: bool


def _block_lines(text: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*block\s*\]\]", line)]


def load_grid(path: str | Path) -> GridConfig:
    p = Path(path)
    if not p.is_file():
        raise EdgeatlasError(
            f"{p}: no such grid file", code=ErrorCode.NOT_FOUND, hint="give --config zoo.toml (the repo ships one)"
        )
    text = p.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgeatlasError(
            f"{p}: {exc}", code=ErrorCode.INVALID_CONFIG, hint="fix the TOML syntax at that line"
        ) from exc
    grid = doc.get("grid", {})
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise EdgeatlasError(
            f"{p} [grid]: unknown field(s) {sorted(unknown)}",
            code=ErrorCode.INVALID_CONFIG,
            hint=f"use {sorted(_GRID_KEYS)}",
        )
    blocks = doc.get("block", [])
    if not blocks:
        raise EdgeatlasError(
            f"{p}: no [[block]] tables", code=ErrorCode.INVALID_CONFIG, hint="add [[block]] with families = [...]"
        )
    lines = _block_lines(text)
    entries: list[GridEntry] = []
    seen: set[str] = set()
    for i, blk in enumerate(blocks):
        line = lines[i] if i < len(lines) else 0
        name = str(blk.get("name", f"block {i + 1}"))
        where = f"{p}:{line} (block {name!r})"
        unknown = set(blk) - _BLOCK_KEYS
        if unknown:
            raise EdgeatlasError(
                f"{where}: unknown field(s) {sorted(unknown)}",
                code=ErrorCode.INVALID_CONFIG,
                hint=f"use {sorted(_BLOCK_KEYS)}",
            )
        lists: dict[str, list[Any]] = {}
        for key in ("families", *DEFAULTS):
            val = blk.get(key, DEFAULTS.get(key))
            if val is None:
                raise EdgeatlasError(
                    f"{where}: field 'families' is missing",
                    code=ErrorCode.INVALID_CONFIG,
                    hint='add families = ["multitask"]',
                )
            if not isinstance(val, list) or not val:
                raise EdgeatlasError(
                    f"{where}: field {key!r} must be a non-empty list",
                    code=ErrorCode.INVALID_CONFIG,
                    hint=f"write {key} = [...]",
                )
            lists[key] = val
        dataset = blk.get("dataset", grid.get("dataset", "shapes-v1"))
        for fam, w, r, prec, pr, fmt in itertools.product(
            lists["families"],
            lists["widths"],
            lists["resolutions"],
            lists["precisions"],
            lists["prunes"],
            lists["formats"],
        ):
            try:
                spec = VariantSpec(
                    family=fam,
                    width=w,
                    resolution=r,
                    precision=prec,
                    prune=pr,
                    format=fmt,
                    dataset=dataset,
                    task=blk.get("task"),
                )
            except EdgeatlasError as exc:
                raise EdgeatlasError(f"{where}: {exc.message}", code=ErrorCode.INVALID_CONFIG, hint=exc.hint) from None
            key = spec.recipe_key()
            if key not in seen:
                seen.add(key)
                entries.append(GridEntry(spec, name, line))
    mx = grid.get("max_split_points", DEFAULT_MAX_SPLIT_POINTS)
    if mx is not None and (not isinstance(mx, int) or isinstance(mx, bool) or mx < 0):
        raise EdgeatlasError(
            f"{p} [grid]: field 'max_split_points' must be an integer >= 0",
            code=ErrorCode.INVALID_CONFIG,
            hint="e.g. 4",
        )
    codecs = grid.get("codecs")
    if codecs is not None and (not isinstance(codecs, list) or not all(isinstance(c, str) for c in codecs)):
        raise EdgeatlasError(
            f"{p} [grid]: field 'codecs' must be a list of names",
            code=ErrorCode.INVALID_CONFIG,
            hint='e.g. ["fp32", "int8"]',
        )
    return GridConfig(str(p), tuple(entries), mx, tuple(codecs) if codecs else None, bool(grid.get("splits", True)))


def run_grid(
    store: Any,
    config: GridConfig,
    on_start: Callable[[int, GridEntry], None] | None = None,
    on_done: Callable[[int, GridEntry, BuildResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BuildResult]:
    """Build every entry in order (finished ones are skipped by recipe key); returns results.
    The first error stops the grid: what was built stays built, and a rerun resumes."""
    results: list[BuildResult] = []
    for i, entry in enumerate(config.entries):
        if on_start:
            on_start(i, entry)
        try:
            r = build(
                store,
                entry.spec,
                progress,
                splits=config.splits,
                max_split_points=config.max_split_points,
                codecs=config.codecs,
            )
        except EdgeatlasError as exc:
            raise EdgeatlasError(
                f"{config.path}:{entry.line} (block {entry.block!r}) {entry.spec.describe()}: {exc.message}",
                code=exc.code,
                hint=exc.hint,
            ) from exc
        results.append(r)
        if on_done:
            on_done(i, entry, r)
    return results


def pending(store: Any, config: GridConfig) -> list[GridEntry]:
    return [e for e in config.entries if find_by_recipe(store, e.spec) is None]
