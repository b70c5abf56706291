"""Benchmark: one recommendation over 1000 variants x 20 splits (x codecs), once inputs are loaded.

Target (issue 7): under 10 ms p99 for evaluate + top-k + Pareto front.

The candidate table here is synthetic (random values with the shape of a real zoo: accuracy
rising with model cost, latency split between head and tail along the cut position). Only the
*time* of the selector is measured and printed; no candidate value is reported. With --store
the table comes from the store and the champion predictors instead (the real adapter).

Run: .venv/bin/python bench/recommend_latency.py [--variants 1000 --splits 20 --codecs 3 --repeat 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from registry.selector.candidates import KIND_DEVICE, KIND_EDGE, KIND_SPLIT, CandidateTable, Network, evaluate
from registry.selector.decision import build_answer, pareto_indices
from registry.selector.prefs import prefs_from_dict


def synthetic_table(n_variants: int, n_splits: int, n_codecs: int, seed: int = 0) -> CandidateTable:
    """Random candidates with a realistic structure (for timing only)."""
    rng = np.random.default_rng(seed)
    cost = rng.lognormal(mean=0.0, sigma=1.0, size=n_variants)  # relative model cost
    acc = np.clip(0.4 + 0.1 * np.log1p(cost) + rng.normal(0, 0.03, n_variants), 0, 1)
    frac = np.linspace(0.0, 1.0, n_splits)  # share of the model on the device; 0 = all-on-edge
    v = np.repeat(np.arange(n_variants), n_splits * n_codecs)
    s = np.tile(np.repeat(np.arange(n_splits), n_codecs), n_variants)
    c = np.tile(np.arange(n_codecs), n_variants * n_splits)
    kind = np.where(s == 0, KIND_EDGE, np.where(s == n_splits - 1, KIND_DEVICE, KIND_SPLIT))
    dev_ms = 20.0 * cost[v]
    head = dev_ms * frac[s]
    tail = 0.1 * dev_ms * (1 - frac[s])
    payload = np.where(kind == KIND_DEVICE, 0.0, 150_000 * np.exp(-3 * frac[s]) / (1 + c))
    accs = acc[v] - 0.005 * c
    n = len(v)
    return CandidateTable.from_columns(
        variant_id=[f"v{i:04d}" for i in v],
        family=["synthetic"] * n,
        split=[f"cut{j}" for j in s],
        codec=[f"codec{j}" for j in c],
        kind=kind,
        head_ms=head,
        head_ms_lo=head * 0.9,
        head_ms_hi=head * 1.1,
        tail_ms=tail,
        tail_ms_lo=tail * 0.9,
        tail_ms_hi=tail * 1.1,
        encode_ms=0.2 * c * (kind != KIND_DEVICE),
        decode_ms=0.1 * c * (kind != KIND_DEVICE),
        payload_bytes=payload,
        head_energy_mj=head * 2.0,
        accuracy=accs,
        device="synthetic",
        edge="synthetic",
    )


def time_it(fn, repeat: int) -> np.ndarray:
    fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--codecs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()

    table = synthetic_table(args.variants, args.splits, args.codecs)
    prefs = prefs_from_dict(
        {
            "constraints": {"max_latency_ms": 200, "max_device_energy_mj": 300},
            "weights": {"accuracy": 0.5, "latency": 0.4, "energy": 0.1},
            "utility": {"latency": {"target_ms": 50}, "energy": {"zero_mj": 300}},
        },
        source="bench",
    )
    rng = np.random.default_rng(1)
    nets = [Network(float(rng.uniform(1, 100)), float(rng.uniform(2, 80))) for _ in range(16)]
    k = [0]

    def query_eval() -> None:
        k[0] += 1
        evaluate(table, nets[k[0] % len(nets)], prefs, radio_nj_per_byte=100.0)

    def query_full() -> None:
        k[0] += 1
        ev = evaluate(table, nets[k[0] % len(nets)], prefs, radio_nj_per_byte=100.0)
        build_answer(ev, top_k=args.top)

    ev = evaluate(table, nets[0], prefs, radio_nj_per_byte=100.0)
    front = len(pareto_indices(ev))
    import os

    print(f"host: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} (timings scale with other load)")
    print(
        f"candidates: {len(table)} ({args.variants} variants x {args.splits} splits x {args.codecs} codecs; "
        f"synthetic values, timing only); feasible {int(ev.feasible.sum())}, pareto front {front}"
    )

    def query_front() -> None:
        k[0] += 1
        pareto_indices(evaluate(table, nets[k[0] % len(nets)], prefs, radio_nj_per_byte=100.0))

    for name, fn in (
        ("evaluate only", query_eval),
        ("evaluate + pareto front", query_front),
        ("evaluate + top-k + pareto (recommend)", query_full),
    ):
        t = time_it(fn, args.repeat)
        p50, p99 = np.percentile(t, [50, 99])
        print(f"{name:40s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   (n={args.repeat}; target p99 < 10 ms)")


if __name__ == "__main__":
    main()
