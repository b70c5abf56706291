"""Pareto front (non-dominated set) over minimised cost columns, vectorised."""

from __future__ import annotations

import numpy as np


def pareto_front(costs: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Indices (ascending) of the rows of ``costs`` that no other row dominates.

    ``costs`` is an (N, M) array or a list of M columns of length N. Every column is minimised
    (negate a column to maximise it). Row a dominates row b when a <= b in every column and
    a < b in at least one. Exact duplicates are all kept. Rows with a NaN are never on the front.

    Vectorised: a few anchor points (minimisers of weighted sums of range-normalised costs,
    each on the front) first remove what they dominate in one pass each; the survivors are
    visited in order of their normalised cost sum, one vectorised pass per front member.
    """
    if isinstance(costs, np.ndarray):
        if costs.ndim != 2:
            raise ValueError("costs must be a 2-D array (N, M)")
        cols = [np.asarray(costs[:, m], dtype=float) for m in range(costs.shape[1])]
    else:
        cols = [np.asarray(c, dtype=float) for c in costs]
    n = len(cols[0])
    valid = np.ones(n, dtype=bool)
    for col in cols:
        valid &= ~np.isnan(col)
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return idx
    if len(idx) < n:
        cols = [col[idx] for col in cols]
    if len(idx) > _GRID_MIN_ROWS and len(cols) in _GRID_CELLS:
        keep = _grid_survivors(cols, _GRID_CELLS[len(cols)])
        idx = idx[keep]
        cols = [col[keep] for col in cols]
    scaled = []
    for col in cols:
        lo, hi = col.min(), col.max()
        scaled.append((col - lo) / (hi - lo) if hi > lo else np.zeros(len(col)))
    m = len(cols)
    anchors = (
        [np.full(m, 1.0 / m)] + [np.where(np.arange(m) == k, 0.8, 0.2 / (m - 1)) for k in range(m)] if m > 1 else []
    )
    for wvec in anchors:
        score = scaled[0] * wvec[0]
        for col, wk in zip(scaled[1:], wvec[1:], strict=True):
            score += col * wk
        a = int(np.argmin(score))
        dom = _dominated_by(cols, a)
        if dom.any():
            keep = ~dom
            idx = idx[keep]
            cols = [col[keep] for col in cols]
            scaled = [col[keep] for col in scaled]
    # a point that dominates another has a smaller scaled sum, so no later point can dominate
    # an earlier one: each visited survivor is on the front.
    total = scaled[0].copy()
    for col in scaled[1:]:
        total += col
    order = np.argsort(total, kind="stable")
    idx = idx[order]
    cols = [col[order] for col in cols]
    m_rows = len(idx)
    alive = np.ones(m_rows, dtype=bool)
    i = 0
    while i < m_rows:
        # only later rows (larger sum) can be dominated by row i: work on views, no copies
        tail = [col[i + 1 :] for col in cols]
        ge = tail[0] >= cols[0][i]
        gt = tail[0] > cols[0][i]
        for col, full in zip(tail[1:], cols[1:], strict=True):
            v = full[i]
            ge &= col >= v
            gt |= col > v
        ge &= gt
        alive[i + 1 :] &= ~ge
        rest = alive[i + 1 :]
        if not rest.any():
            break
        i += 1 + int(rest.argmax())
    return np.sort(idx[alive])


#: cells per axis of the grid pre-filter, by number of cost columns (G**M cells in all)
_GRID_CELLS = {2: 256, 3: 32, 4: 12}
_GRID_MIN_ROWS = 2000


def _grid_survivors(cols: list[np.ndarray], g: int) -> np.ndarray:
    """Mask of rows that may be on the front: an exact pre-filter in O(N + G**M).

    Every column is cut into g cells at edges drawn from a sorted sample. A row in cell
    (i, j, ...) is strictly dominated when some row sits in a cell (i', j', ...) with every
    index strictly smaller: that row is then strictly smaller in every column (it lies below
    an edge that is <= the first row's value). Occupancy is OR-accumulated along each axis,
    so one lookup per row answers "is any strictly-lower cell occupied". Only dominated rows
    are removed; the exact sweep runs on the survivors.
    """
    n = len(cols[0])
    step = max(1, n // (8 * g))
    cells = []
    for col in cols:
        sample = np.sort(col[::step])
        edges = sample[np.linspace(0, len(sample) - 1, g + 1)[1:-1].round().astype(np.int64)]
        cells.append(np.searchsorted(edges, col, side="right"))
    m = len(cols)
    occ = np.zeros((g,) * m, dtype=bool)
    occ[tuple(cells)] = True
    for ax in range(m):
        occ = np.logical_or.accumulate(occ, axis=ax)
    lower = np.zeros_like(occ)
    lower[(slice(1, None),) * m] = occ[(slice(None, -1),) * m]
    return ~lower[tuple(cells)]


def _dominated_by(cols: list[np.ndarray], i: int) -> np.ndarray:
    """Mask of the rows that row i dominates."""
    ge = cols[0] >= cols[0][i]
    gt = cols[0] > cols[0][i]
    for col in cols[1:]:
        v = col[i]
        ge &= col >= v
        gt |= col > v
    ge &= gt
    return ge


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when cost vector a dominates b (all <=, one <)."""
    return bool((a <= b).all() and (a < b).any())
