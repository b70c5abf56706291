"""Plots (matplotlib, Agg): the latency/accuracy Pareto front with the pick, and decision tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from registry.selector.decision import Answer, DecisionTable


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_answer(answer: Answer, path: str | Path) -> Path:
    """Latency vs accuracy of the Pareto front (feasible candidates), the pick marked with a star."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = sorted(answer.pareto, key=lambda p: p.latency_ms)
    if pts:
        objectives = [o.replace("_ms", "").replace("device_energy_mj", "energy") for o in answer.pareto_objectives]
        two_d = "device_energy_mj" not in answer.pareto_objectives
        ax.plot(
            [p.latency_ms for p in pts],
            [p.accuracy for p in pts],
            "o-" if two_d else "o",  # a 3-objective front is not a staircase in this projection
            color="tab:blue",
            ms=4,
            lw=1,
            label=f"Pareto front ({', '.join(objectives)})",
        )
    recs = [r for r in answer.recommendations if r.predicted["accuracy"] is not None]
    if len(recs) > 1:
        ax.scatter(
            [r.predicted["latency_ms"] for r in recs[1:]],
            [r.predicted["accuracy"] for r in recs[1:]],
            marker="s",
            color="tab:orange",
            label="next in ranking",
            zorder=3,
        )
    if recs:
        best = recs[0]
        ax.scatter(
            [best.predicted["latency_ms"]],
            [best.predicted["accuracy"]],
            marker="*",
            s=260,
            color="tab:red",
            zorder=4,
            label=f"pick: {_short(best.variant_id, best.family)} / {best.split} / {best.codec}",
        )
    ax.set_xlabel("predicted end-to-end latency (ms)")
    ax.set_ylabel("accuracy (recorded + codec delta)")
    net = answer.network
    ax.set_title(
        f"{answer.device} -> {answer.edge}, {net['bandwidth_mbit']:g} Mbit/s, RTT {net['rtt_ms']:g} ms", fontsize=10
    )
    ax.grid(alpha=0.3)
    if pts or recs:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no candidate with a known accuracy is feasible", ha="center", transform=ax.transAxes)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _short(variant_id: str, family: str | None = None) -> str:
    """A legend label for a variant: content-addressed ids are 64 hex chars; show 12."""
    vid = variant_id[:12] if len(variant_id) == 64 and all(c in "0123456789abcdef" for c in variant_id) else variant_id
    return f"{family} {vid}" if family else vid


def plot_decision_table(dt: DecisionTable, path: str | Path) -> Path:
    """Per RTT (rows), the picked split over the bandwidth axis (log), one colour per pick."""
    plt = _plt()

    def label(r: Any) -> str:
        return f"{_short(r.variant_id)} / {r.split} / {r.codec}" if r.variant_id else "infeasible"

    picks = sorted({label(r) for r in dt.rows})
    cmap = plt.get_cmap("tab20")
    colour = {k: ("lightgrey" if k == "infeasible" else cmap(i % 20)) for i, k in enumerate(picks)}
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(dt.rtts_ms)))
    bws = dt.bandwidths_mbit
    edges = {}
    for i, b in enumerate(bws):  # cell boundaries at geometric midpoints
        lo = bws[0] / 1.5 if i == 0 else (bws[i - 1] * b) ** 0.5
        hi = bws[-1] * 1.5 if i == len(bws) - 1 else (bws[i + 1] * b) ** 0.5
        edges[b] = (lo, hi)
    seen = set()
    for y, rtt in enumerate(dt.rtts_ms):
        for r in (r for r in dt.rows if r.rtt_ms == rtt):
            k = label(r)
            lo, hi = edges[r.bandwidth_min_mbit][0], edges[r.bandwidth_max_mbit][1]
            ax.barh(y, hi - lo, left=lo, color=colour[k], edgecolor="white", label=None if k in seen else k)
            seen.add(k)
    ax.set_xscale("log")
    ax.set_yticks(range(len(dt.rtts_ms)), [f"RTT {r:g} ms" for r in dt.rtts_ms])
    ax.set_xlabel("uplink bandwidth (Mbit/s)")
    ax.set_title(f"decision table: {dt.device} -> {dt.edge} ({Path(dt.prefs_source).name})", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
