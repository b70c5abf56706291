"""Pareto front (non-dominated set) over minimised cost columns, vectorised and exact."""

from __future__ import annotations

import numpy as np


def pareto_front(costs: np.ndarray | list[np.ndarray], mask: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of the rows of ``costs`` that no other row dominates.

    ``costs`` is an (N, M) array or a list of M columns of length N. Every column is minimised
    (negate a column to maximise it). Row a dominates row b when a <= b in every column and
    a < b in at least one. Exact duplicates are all kept. Rows with a NaN are never on the front.
    With ``mask`` (bool, N) only the rows it selects take part (neither on the front nor
    dominating); the caller then promises those rows hold no NaN, which saves passes over N.

    No Python loop over rows: 2 columns use an exact strip filter then a sort-and-sweep
    (running minimum), O(N log N); 3 columns use an exact grid filter (cells on two columns,
    the exact minimum of the third per cell, prefix minima over the grid) that removes almost
    every dominated row in O(N + G**2), then a block staircase sweep over the few survivors.
    More columns use a filter-free per-member sweep.
    """
    if isinstance(costs, np.ndarray):
        if costs.ndim != 2:
            raise ValueError("costs must be a 2-D array (N, M)")
        cols = [np.asarray(costs[:, m], dtype=float) for m in range(costs.shape[1])]
    else:
        cols = [np.asarray(c, dtype=float) for c in costs]
    n = len(cols[0])
    m = len(cols)
    if mask is None:
        mask = np.ones(n, dtype=bool)
        for col in cols:
            mask &= ~np.isnan(col)
    if m in (2, 3) and int(np.count_nonzero(mask)) > _FILTER_MIN_ROWS:
        # the first filter runs over all N rows with the mask folded in (no gather of N rows)
        keep = _strip_filter(cols[0], cols[1], mask) if m == 2 else _grid_min_filter(cols[0], cols[1], cols[2], mask)
    else:
        keep = mask
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return idx
    cols = [col[idx] for col in cols]
    if m == 1:
        return idx[cols[0] == cols[0].min()]
    if m == 2:
        return np.sort(idx[_front2(cols[0], cols[1])])
    if m == 3:
        # more rotations (each column once exact, the other two celled) while they pay
        for a, b, exact in ((2, 0, 1), (1, 2, 0)):
            if len(idx) <= _FILTER_MIN_ROWS:
                break
            keep = _grid_min_filter(cols[a], cols[b], cols[exact])
            before = len(idx)
            idx, cols = idx[keep], [col[keep] for col in cols]
            if len(idx) > 0.8 * before:
                break
        return np.sort(idx[_front3(cols[2], cols[0], cols[1])])
    return np.sort(idx[_front_sweep(cols)])


#: below this many rows the exact step runs directly (the filters do not pay off)
_FILTER_MIN_ROWS = 512
#: rows per block of the exact 3-column staircase sweep
_BLOCK = 256
#: grid cells per axis of the 3-column filter, and cells of the 2-column strip filter
_GRID_CELLS = 128
_STRIP_CELLS = 4096


def _cells(x: np.ndarray, g: int) -> np.ndarray:
    """Cell index 0..g-1 of every value, non-decreasing in the value.

    Cells are linear between the minimum and the 0.9 quantile of a sample of about 1000
    values; values outside share the first or last cell. Only monotonicity matters for
    exactness (a strictly lower cell means a strictly smaller value); the resolution goes
    where the front lives, the low end.
    """
    step = max(1, len(x) // 1024)
    sample = np.sort(x[::step])
    lo = float(sample[0])
    hi = float(sample[int(0.9 * (len(sample) - 1))])
    if not hi > lo:
        hi = float(sample[-1])
        if not hi > lo:
            lo, hi = float(x.min()), float(x.max())
            if not hi > lo:
                return np.zeros(len(x), dtype=np.intp)
    scale = g / (hi - lo)
    cells = np.multiply(x, scale)
    cells -= lo * scale
    np.clip(cells, 0, g - 1, out=cells)
    return cells.astype(np.intp)


def _strip_filter(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mask of rows that may be on the 2-column front (exact: removes only dominated rows).

    A row is dominated when some row in a strictly lower x cell (so strictly smaller x) has
    y <= its y. The minimum y per cell, then a running minimum over cells, answers that for
    every row with one lookup.
    """
    g = _STRIP_CELLS
    cx = _cells(x, g)
    if mask is not None:
        y = np.where(mask, y, np.inf)  # rows outside the mask never dominate
    best = np.full(g + 1, np.inf)
    np.minimum.at(best[1:], cx, y)
    np.minimum.accumulate(best, out=best)  # best[c] = min y over cells < c
    keep = best[cx] > y
    if mask is not None:
        keep &= mask
    return keep


def _grid_min_filter(a: np.ndarray, b: np.ndarray, exact: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mask of rows that may be on the 3-column front (exact: removes only dominated rows).

    Columns a and b are cut into cells; per cell the minimum of ``exact`` is kept, and prefix
    minima over both axes give, for cell (i, j), the smallest ``exact`` among rows in cells
    (< i, < j). Those rows are strictly smaller in a and b, so a row whose own ``exact`` is >=
    that minimum is dominated.
    """
    g = _GRID_CELLS
    flat = _cells(a, g)
    flat *= g
    flat += _cells(b, g)
    if mask is not None:
        exact = np.where(mask, exact, np.inf)  # rows outside the mask never dominate
    best = np.full(g * g, np.inf)
    np.minimum.at(best, flat, exact)
    best = best.reshape(g, g)
    np.minimum.accumulate(best, axis=0, out=best)
    np.minimum.accumulate(best, axis=1, out=best)
    lower = np.full((g, g), np.inf)
    lower[1:, 1:] = best[:-1, :-1]
    keep = lower.ravel()[flat] > exact
    if mask is not None:
        keep &= mask
    return keep


def _front2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Positions of the exact 2-column front: sort by (x, y), keep rows below the running min of y.

    A row is dominated exactly when an earlier row (smaller x, or equal x and smaller y) has
    y <= its y, unless that row is an exact duplicate; duplicates share their first row's fate.
    """
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    prev_min = np.empty(len(ys))
    prev_min[0] = np.inf
    np.minimum.accumulate(ys[:-1], out=prev_min[1:])
    strict = ys < prev_min
    new = np.ones(len(ys), dtype=bool)
    new[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    first = np.maximum.accumulate(np.where(new, np.arange(len(ys)), 0))
    return order[strict[first]]


def _front3(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Positions of the exact 3-column front: sort by (a, b, d), then sweep in blocks.

    In that order every dominator of a row comes before it, so a row is dominated exactly when
    an earlier distinct row has b and d both <= its own. The earlier rows are summarised by
    their (b, d) staircase (the 2-column front: b ascending, d descending), so one
    searchsorted per block answers it; rows inside a block are compared pairwise. Exact
    duplicates share the fate of their first copy.
    """
    n = len(a)
    order = np.lexsort((d, b, a))
    a, b, d = a[order], b[order], d[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (d[1:] != d[:-1])
    uniq = np.flatnonzero(new)
    ub, ud = b[uniq], d[uniq]
    dominated = np.zeros(len(uniq), dtype=bool)
    stair_b = np.empty(0)
    stair_d = np.empty(0)
    for start in range(0, len(uniq), _BLOCK):
        bb, db = ub[start : start + _BLOCK], ud[start : start + _BLOCK]
        k = len(bb)
        pos = np.searchsorted(stair_b, bb, side="right") - 1
        dom = (pos >= 0) & (stair_d[np.maximum(pos, 0)] <= db) if len(stair_b) else np.zeros(k, dtype=bool)
        earlier = np.tri(k, k, -1, dtype=bool).T  # [j, i]: j < i
        earlier &= bb[:, None] <= bb[None, :]
        earlier &= db[:, None] <= db[None, :]
        dom |= earlier.any(axis=0)
        dominated[start : start + k] = dom
        sb = np.concatenate((stair_b, bb[~dom]))
        sd = np.concatenate((stair_d, db[~dom]))
        keep = _front2(sb, sd)  # in (b, d) order: b ascending, d descending
        stair_b, stair_d = sb[keep], sd[keep]
    on_front = np.zeros(n, dtype=bool)
    on_front[uniq] = ~dominated
    first = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return order[on_front[first]]


def _front_sweep(cols: list[np.ndarray]) -> np.ndarray:
    """Positions of the exact front for any number of columns: one vectorised pass per member.

    Rows are visited in order of their range-normalised cost sum: a row that dominates another
    has a smaller sum, so no later row can dominate an earlier one, and each visited survivor
    is on the front.
    """
    total = np.zeros(len(cols[0]))
    for col in cols:
        lo, hi = col.min(), col.max()
        if hi > lo:
            total += (col - lo) / (hi - lo)
    order = np.argsort(total, kind="stable")
    cols = [col[order] for col in cols]
    m_rows = len(order)
    alive = np.ones(m_rows, dtype=bool)
    i = 0
    while i < m_rows:
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
    return order[alive]


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when cost vector a dominates b (all <=, one <)."""
    return bool((a <= b).all() and (a < b).any())
