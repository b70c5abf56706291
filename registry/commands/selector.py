"""Selector commands: recommend, decision-table, feedback, qoe fit, serve (thin calls into registry.selector)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from registry.commands.common import console, db_option, emit, json_option, note, open_store, print_json
from registry.errors import EdgeatlasError, ErrorCode


def _device_options(fn):
    fn = click.option(
        "--predictor", default="default", show_default=True, help="Predictor name (its champion is used)."
    )(fn)
    fn = click.option("--app", default=None, help="App name: use its learned QoE weights (default: the prefs' app).")(
        fn
    )
    fn = click.option(
        "--prefs",
        "prefs_path",
        required=True,
        type=click.Path(path_type=Path),
        help="prefs.toml (or .json).",
    )(fn)
    fn = click.option("--edge", required=True, help="Edge board or device class.")(fn)
    fn = click.option(
        "--probe-latencies",
        "probe_file",
        type=click.Path(path_type=Path),
        help="JSON {probe variant id: ms} measured on the device (k-shot).",
    )(fn)
    fn = click.option(
        "--device-facts",
        "facts_file",
        type=click.Path(path_type=Path),
        help="JSON/TOML facts of a device nobody measured (zero-shot).",
    )(fn)
    fn = click.option("--device", default=None, help="Device board or device class.")(fn)
    return fn


def _check_device(device: str | None, facts_file: Path | None, probe_file: Path | None) -> None:
    if device and facts_file:
        raise EdgeatlasError(
            "give --device or --device-facts, not both",
            ErrorCode.INVALID_ARGUMENT,
            hint="--device NAME for a known board/class, --device-facts FILE for a new one",
        )
    if not device and not facts_file and not probe_file:
        raise EdgeatlasError(
            "no device given",
            ErrorCode.INVALID_ARGUMENT,
            hint="pass --device NAME or --device-facts FILE [--probe-latencies FILE]",
        )


def _pick_rows(answer: Any) -> list[dict[str, Any]]:
    rows = []
    for r in answer.recommendations:
        lo, hi = r.interval["latency_ms"]
        acc = r.predicted["accuracy"]
        rows.append(
            {
                "#": r.rank,
                "variant": r.variant_id[:16],
                "family": r.family,
                "split": r.split,
                "codec": r.codec,
                "latency ms": f"{r.predicted['latency_ms']:.3g} [{lo:.3g}, {hi:.3g}]",
                "energy mJ": "unknown" if r.predicted["device_energy_mj"] is None else r.predicted["device_energy_mj"],
                "accuracy": "unknown" if acc is None else acc,
                "qoe": "unknown" if r.qoe is None else r.qoe,
                "binding": r.binding_constraint,
            }
        )
    return rows


@click.command("recommend")
@_device_options
@click.option("--bandwidth-mbit", type=float, required=True, help="Uplink bandwidth, Mbit/s.")
@click.option("--rtt-ms", type=float, required=True, help="Round-trip time, ms.")
@click.option("--top", "top_k", type=int, default=5, show_default=True, help="How many candidates to rank.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the latency/accuracy Pareto plot (PNG).",
)
@json_option
@db_option
def recommend_cmd(
    device,
    facts_file,
    probe_file,
    edge,
    prefs_path,
    app,
    predictor,
    bandwidth_mbit,
    rtt_ms,
    top_k,
    plot_path,
    as_json,
    db_url,
) -> None:
    """Recommend a model variant, split point and payload codec for a device, an edge and a network.

    Ranks every variant x split x codec by QoE under the prefs' hard constraints, with
    predicted latency/energy intervals, the binding constraint and the Pareto front. A device
    nobody measured is given by its facts (zero-shot) and optionally probe latencies (k-shot).
    When nothing is feasible it says which constraint rules everything out (exit 1).

    \b
    Example:
        edgeatlas recommend --device emu-mid --edge edge-1 --bandwidth-mbit 20 --rtt-ms 20 \\
            --prefs examples/prefs/realtime_camera.toml --top 3 --json
        edgeatlas recommend --device-facts phone.json --probe-latencies probes.json \\
            --edge edge-1 --bandwidth-mbit 5 --rtt-ms 60 --prefs examples/prefs/wearable_battery.toml
    """
    from registry.selector.decision import InfeasibleError
    from registry.selector.recommend import recommend

    _check_device(device, facts_file, probe_file)
    store = open_store(db_url)
    ans = recommend(
        store,
        device=device,
        device_facts=facts_file,
        probe_latencies=probe_file,
        edge=edge,
        bandwidth_mbit=bandwidth_mbit,
        rtt_ms=rtt_ms,
        prefs=prefs_path,
        app=app,
        top_k=top_k,
        predictor=predictor,
    )
    if plot_path:
        from registry.selector.plots import plot_answer

        plot_answer(ans, plot_path)
    if as_json:
        print_json(ans.to_dict())
    elif ans.feasible:
        emit(
            _pick_rows(ans),
            False,
            title=f"{ans.device} -> {ans.edge}: {ans.n_feasible}/{ans.n_candidates} feasible; predictor {ans.predictor_version}; weights {ans.weights_source}",
        )
        console.print(
            escape(f"Pareto front: {len(ans.pareto)} candidates" + (f"; plot: {plot_path}" if plot_path else ""))
        )
        for n in ans.notes:
            console.print(f"note: {escape(n)}", highlight=False)
    if not ans.feasible:
        raise InfeasibleError(ans)


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise EdgeatlasError(
            f"{name} must be comma-separated numbers, got {text!r}",
            ErrorCode.INVALID_ARGUMENT,
            hint=f"e.g. {name} 1,5,20,100",
        ) from None
    if not vals:
        raise EdgeatlasError(f"{name} is empty", ErrorCode.INVALID_ARGUMENT, hint=f"e.g. {name} 1,5,20,100")
    return vals


@click.command("decision-table")
@_device_options
@click.option(
    "--bandwidths",
    default="0.5,1,2,5,10,20,50,100,200",
    show_default=True,
    help="Uplink bandwidths, Mbit/s (comma-separated).",
)
@click.option("--rtts", default="5,20,50,100", show_default=True, help="Round-trip times, ms (comma-separated).")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the decision-table plot (PNG)."
)
@json_option
@db_option
def decision_table_cmd(
    device, facts_file, probe_file, edge, prefs_path, app, predictor, bandwidths, rtts, plot_path, as_json, db_url
) -> None:
    """Best (variant, split, codec) per network range, for runtime adaptation.

    Evaluates the candidates over every (bandwidth, RTT) cell and merges adjacent bandwidths
    with the same pick into ranges.

    \b
    Example:
        edgeatlas decision-table --device emu-little --edge edge-1 \\
            --prefs examples/prefs/realtime_camera.toml --bandwidths 1,5,20,100 --rtts 10,50 --plot dt.png
    """
    from registry.selector.recommend import decision_table_for

    _check_device(device, facts_file, probe_file)
    store = open_store(db_url)
    dt = decision_table_for(
        store,
        device=device,
        device_facts=facts_file,
        probe_latencies=probe_file,
        edge=edge,
        bandwidths_mbit=_floats(bandwidths, "--bandwidths"),
        rtts_ms=_floats(rtts, "--rtts"),
        prefs=prefs_path,
        app=app,
        predictor=predictor,
    )
    if plot_path:
        from registry.selector.plots import plot_decision_table

        plot_decision_table(dt, plot_path)
    if as_json:
        print_json(dt.to_dict())
        return
    rows = [
        {
            "rtt ms": r.rtt_ms,
            "bandwidth Mbit/s": f"{r.bandwidth_min_mbit:g}-{r.bandwidth_max_mbit:g}",
            "variant": (r.variant_id or "-")[:16],
            "split": r.split or "infeasible",
            "codec": r.codec,
            "latency ms": "-" if r.variant_id is None else f"{r.latency_ms[0]:.3g}..{r.latency_ms[1]:.3g}",
        }
        for r in dt.rows
    ]
    emit(rows, False, title=f"decision table {dt.device} -> {dt.edge} (predictor {dt.predictor_version})")


@click.command("feedback")
@click.option("--app", required=True, help="The app the feedback is for.")
@click.option("--chose", "chosen_key", required=True, help="Candidate key variant/split/codec (or a unique prefix).")
@click.option("--over", "other_key", default=None, help="The candidate it was chosen over (pairwise).")
@click.option("--rating", type=float, default=None, help="A 1..5 rating of --chose (instead of --over).")
@click.option(
    "--recommendation",
    "rec_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A saved `recommend --json` answer holding both candidates.",
)
@json_option
@db_option
def feedback_cmd(app, chosen_key, other_key, rating, rec_path, as_json, db_url) -> None:
    """Record what a user preferred: a pairwise choice (--over) or a rating (--rating).

    The candidates are looked up in a saved `recommend --json` answer, so their predicted
    latency, energy and accuracy are stored with the feedback (`qoe fit` learns from them).

    \b
    Example:
        edgeatlas recommend ... --json > rec.json
        edgeatlas feedback --app camera --recommendation rec.json --chose mnv2-a1/all-on-device/none \\
            --over mnv2-a1/features.7/int8
        edgeatlas feedback --app camera --recommendation rec.json --chose mnv2-a1/features.7/int8 --rating 4
    """
    from registry.selector.feedback import find_in_answer, record_feedback

    if (other_key is None) == (rating is None):
        raise EdgeatlasError(
            "give exactly one of --over and --rating",
            ErrorCode.INVALID_ARGUMENT,
            hint="--over B for a pairwise choice, --rating 1..5 for a rating",
        )
    from registry.selector.sources import read_text

    _, text = read_text(rec_path, "recommendation")  # (missing, a directory, not UTF-8: named errors)
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeatlasError(
            f"{rec_path}: not a readable recommend --json answer ({exc})",
            ErrorCode.INVALID_ARGUMENT,
            hint="save one with `edgeatlas recommend ... --json > rec.json`",
        ) from None
    chosen = find_in_answer(answer, chosen_key)
    other = find_in_answer(answer, other_key) if other_key else None
    context = {
        "device": answer.get("device"),
        "edge": answer.get("edge"),
        "network": answer.get("network"),
        "prefs": answer.get("prefs_source"),
    }
    store = open_store(db_url)
    rec = record_feedback(store, app, chosen, other, rating, context)
    emit(
        {
            "id": rec.id,
            "app": rec.app,
            "kind": rec.kind,
            "chosen": rec.chosen["key"],
            "other": (rec.other or {}).get("key"),
            "rating": rec.rating,
        },
        as_json,
    )


@click.group("qoe")
def qoe_group() -> None:
    """Per-app QoE weights learned from user feedback.

    \b
    Example:
        edgeatlas qoe fit --app camera --prefs examples/prefs/realtime_camera.toml
    """


@qoe_group.command("fit")
@click.option("--app", required=True, help="The app whose feedback to fit.")
@click.option(
    "--prefs",
    "prefs_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The app's prefs (its utility shapes define the features).",
)
@click.option(
    "--C", "C", type=float, default=10.0, show_default=True, help="Inverse regularisation of the logistic model."
)
@json_option
@db_option
def qoe_fit_cmd(app, prefs_path, C, as_json, db_url) -> None:
    """Fit the app's QoE weights (pairwise logistic model) from its feedback; stores a new version.

    `recommend --app APP` then uses the learned weights instead of the prefs' weights.

    \b
    Example:
        edgeatlas qoe fit --app camera --prefs examples/prefs/realtime_camera.toml --json
    """
    from registry.selector.feedback import fit_app
    from registry.selector.prefs import load_prefs

    store = open_store(db_url)
    rec = fit_app(store, app, load_prefs(prefs_path), C=C)
    emit(
        {
            "app": rec.app,
            "version": rec.version,
            "weights": rec.weights,
            "n_pairs": rec.metrics["n_pairs"],
            "pairwise_agreement": rec.metrics["pairwise_agreement"],
        },
        as_json,
    )


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@db_option
def serve_cmd(host: str, port: int, db_url: str | None) -> None:
    """Serve the HTTP API (FastAPI, under /v1). Write endpoints need EDGEATLAS_API_TOKEN.

    \b
    Example:
        EDGEATLAS_API_TOKEN=$(openssl rand -hex 16) edgeatlas serve --host 127.0.0.1 --port 8000
        curl -s localhost:8000/v1/health
    """
    import os

    import uvicorn

    from registry.api import create_app

    if db_url:
        os.environ["EDGEATLAS_DB"] = db_url
    if not os.environ.get("EDGEATLAS_API_TOKEN"):
        note(
            "EDGEATLAS_API_TOKEN is not set, so the server refuses every write (401); "
            "set it to accept writes with 'Authorization: Bearer <token>'"
        )
    uvicorn.run(create_app(db_url), host=host, port=port, log_level="info")


commands = [recommend_cmd, decision_table_cmd, feedback_cmd, qoe_group, serve_cmd]
