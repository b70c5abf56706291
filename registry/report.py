"""A static HTML report of the registry: fleet, coverage, predictors, Pareto plots, decision tables.

Self-contained (plots embedded as PNG data URIs), so it can be mailed or served as a file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probes.agent import graph_level
from registry import __version__
from registry.store import Store

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1d2330;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #e3e7ef;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem} th,td{border:1px solid #d7dce6;padding:.25rem .5rem;text-align:left}
th{background:#f2f4f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#6b7385} .ok{background:#e4f5e8} .miss{background:#fbeaea} img{max-width:100%;border:1px solid #e3e7ef;margin:.5rem 0}
code{background:#f2f4f8;padding:0 .25rem;border-radius:3px}
"""


def _esc(v: Any) -> str:
    if v is None:
        return '<span class="muted">-</span>'
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return html.escape(json.dumps(v, separators=(", ", ": ")))
    return html.escape(str(v))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], numeric: Sequence[str] = ()) -> str:
    if not rows:
        return '<p class="muted">none yet</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(f'<td class="{"num" if c in numeric else ""}">{_esc(r.get(c))}</td>' for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_file(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def coverage(store: Store) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    """(variant ids, board names, {(variant, board): ok probe measurements})."""
    counts: Counter[tuple[str, str]] = Counter()
    for m in store.list_measurements(source="probe"):
        counts[(m.variant_id, m.board)] += 1
    boards = [b.name for b in store.list_boards()]
    variants = [v.id for v in store.list_variants(artifacts_only=True)]
    return variants, boards, dict(counts)


def _coverage_plot(store: Store) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants, boards, counts = coverage(store)
    if not variants or not boards:
        return None
    mat = np.array([[counts.get((v, b), 0) for b in boards] for v in variants], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(boards), 1.5 + 0.12 * len(variants)))
    ax.imshow(mat > 0, aspect="auto", cmap="Greens", vmin=0, vmax=1.3)
    ax.set_xticks(range(len(boards)), boards, rotation=30, ha="right")
    labels = {
        v.id: f"{v.family} {v.precision} {v.resolution or ''} {v.id[:8]}"
        for v in store.list_variants(artifacts_only=True)
    }
    ax.set_yticks(range(len(variants)), [labels.get(v, v[:8]) for v in variants], fontsize=6)
    ax.set_title(f"measured variants x boards ({int((mat > 0).sum())} of {mat.size} cells)")
    return _png(fig)


def _latency_plot(store: Store) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_board: dict[str, list[float]] = defaultdict(list)
    for m in store.list_measurements(source="probe"):
        # onnxruntime's default graph level only: another level is another runtime config
        if m.latency_ms is not None and m.split_id is None and graph_level(m.config) == "all":
            by_board[m.board].append(m.latency_ms)
    if not by_board:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = sorted(by_board)
    ax.boxplot([by_board[n] for n in names], tick_labels=names)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency per variant (ms, measured)")
    ax.set_title("measured latency by board")
    return _png(fig)


def build_report(
    store: Store, out: Path, plots_dir: Path | None = None, extra_sections: Sequence[tuple[str, str]] = ()
) -> Path:
    """Write the HTML report to ``out`` and return its path."""
    boards = store.list_boards()
    classes = {c.name: c.facts for c in store.list_device_classes()}
    variants = store.list_variants(artifacts_only=True)
    preds = store.list_predictors()
    n_meas = store.count_measurements(status=None)
    n_ok = store.count_measurements()
    n_probe = store.count_measurements(source="probe")

    parts: list[str] = []
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<h1>edgeatlas report</h1><p class='muted'>edgeatlas {__version__} &middot; store <code>{html.escape(store.url)}</code> &middot; {now}</p>"
    )
    parts.append(
        "<p>"
        f"{len(boards)} boards &middot; {len(variants)} variants &middot; {n_meas} measurements ({n_ok} ok, {n_probe} from probes) &middot; {len(preds)} predictor versions"
        "</p>"
    )

    parts.append("<h2 id='fleet'>Fleet</h2>")
    rows = []
    for b in boards:
        facts = b.facts or {}
        rows.append(
            {
                "name": b.name,
                "class": b.class_name,
                "role": b.role,
                "address": f"{b.host}:{b.port}",
                "emulate": b.emulate,
                "cpu": facts.get("cpu_model") or classes.get(b.class_name, {}).get("arch"),
                "checked": b.checked_at.strftime("%Y-%m-%d %H:%M") if b.checked_at else None,
            }
        )
    parts.append(_table(rows, ["name", "class", "role", "address", "emulate", "cpu", "checked"]))

    parts.append("<h2 id='coverage'>Coverage: variants x boards</h2>")
    img = _coverage_plot(store)
    parts.append(
        f"<img alt='coverage matrix' src='{img}'>" if img else "<p class='muted'>no probe measurements yet</p>"
    )
    img = _latency_plot(store)
    if img:
        parts.append(f"<img alt='latency by board' src='{img}'>")

    parts.append("<h2 id='variants'>Variants</h2>")
    vrows = [
        {
            "id": v.id[:12],
            "family": v.family,
            "format": v.format,
            "precision": v.precision,
            "width": v.width,
            "resolution": v.resolution,
            "prune": v.prune,
            "MMACs": round(v.macs / 1e6, 2),
            "params": v.params,
            "accuracy": v.accuracy,
            "accuracy source": v.accuracy_source or "unknown",
        }
        for v in variants
    ]
    parts.append(
        _table(
            vrows,
            list(vrows[0]) if vrows else [],
            numeric=["MMACs", "params", "accuracy", "width", "resolution", "prune"],
        )
    )

    parts.append("<h2 id='predictors'>Predictors</h2>")
    prows = []
    for p in preds:
        r = {
            "name": p.name,
            "version": p.version,
            "status": p.status,
            "target": p.target,
            "class": p.device_class,
            "data": p.data_hash[:10],
        }
        for k in ("acc10", "acc5", "mape", "rmse_ms", "spearman", "n_train", "n_test"):
            if k in p.metrics:
                r[k] = p.metrics[k]
        prows.append(r)
    cols = [
        "name",
        "version",
        "status",
        "target",
        "class",
        "data",
        "acc10",
        "acc5",
        "mape",
        "rmse_ms",
        "spearman",
        "n_train",
        "n_test",
    ]
    parts.append(_table(prows, cols, numeric=cols[6:]))

    for title, body in extra_sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")

    if plots_dir is not None and plots_dir.is_dir():
        pngs = sorted(p for p in plots_dir.glob("*.png"))
        tables = sorted(plots_dir.glob("*.json"))
        if pngs or tables:
            parts.append("<h2 id='plots'>Pareto fronts and decision tables</h2>")
        for p in pngs:
            parts.append(f"<h3>{html.escape(p.stem)}</h3><img alt='{html.escape(p.stem)}' src='{_img_file(p)}'>")
        for t in tables:
            try:
                data = json.loads(t.read_text())
            except (OSError, ValueError):
                continue
            rows_t = data.get("rows") if isinstance(data, dict) else None
            if isinstance(rows_t, list) and rows_t and isinstance(rows_t[0], dict):
                parts.append(f"<h3>{html.escape(t.stem)}</h3>" + _table(rows_t, list(rows_t[0])))

    doc = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>edgeatlas report</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return out
