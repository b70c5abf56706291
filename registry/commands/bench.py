"""`edgeatlas bench run|worker|results`: sweeps on the fleet and their measurements (the probes room)."""

from __future__ import annotations

from pathlib import Path

import click

from probes.agent import GRAPH_OPT_LEVELS, graph_opt_problem
from registry.commands.common import db_option, devices_option, emit, json_option, note, open_store, print_json
from registry.errors import EdgeatlasError, ErrorCode


@click.group("bench")
def group() -> None:
    """Benchmark model variants (and split points) on the boards of devices.toml.

    \b
    Example:
        edgeatlas bench run --grid --boards little-1,big-1
        edgeatlas bench run --grid --splits --edge edge-1
        edgeatlas bench results --board little-1 --csv > little.csv
    """


def _split(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@group.command("run")
@devices_option
@db_option
@click.option("--boards", multiple=True, metavar="NAME", help="Boards to run on (default: every device board).")
@click.option(
    "--variants", multiple=True, metavar="ID", help="Variant ids or unique prefixes (repeat or comma-separate)."
)
@click.option("--grid", is_flag=True, help="Every variant in the store of the runtime's format.")
@click.option(
    "--probe-set",
    "probe_set",
    default=None,
    metavar="PREDICTOR",
    help="Also the reference models (probe set) of this predictor's champion: measure them on a new "
    "board and the selector predicts it k-shot.",
)
@click.option("--runtime", type=click.Choice(["onnxruntime", "litert"]), default="onnxruntime", show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="Intra-op threads.")
@click.option(
    "--graph-opt",
    type=click.Choice(list(GRAPH_OPT_LEVELS)),
    default=None,
    help="onnxruntime graph optimization level (default: all, onnxruntime's own default; with "
    "--probe-set, that predictor's level). 'extended' leaves out the hardware-specific layout "
    "transforms (NCHWc on x86). Another level is another runtime config: its measurements are "
    "stored apart (README, Benchmarks: what it costs and what it does to prediction).",
)
@click.option(
    "--drift-ref",
    is_flag=True,
    help="Interleave a fixed reference model with each whole-model job (10 ms after every 50 ms) and "
    "record the model's p50 in reference units (results: ref_p50_ms, p50_per_ref), which repeats "
    "where the raw p50 drifts with a shared host's speed. onnxruntime only; not with an energy meter.",
)
@click.option("--repeat", type=click.IntRange(1, 1000), default=5, show_default=True, help="Timed sessions.")
@click.option("--number", type=click.IntRange(1, 100000), default=10, show_default=True, help="Min runs per session.")
@click.option("--min-repeat-ms", type=click.FloatRange(0), default=200.0, show_default=True, help="Min session length.")
@click.option("--warmup-s", type=click.FloatRange(0), default=0.5, show_default=True)
@click.option("--cooldown-s", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=300.0, show_default=True, help="Per job.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True, help="On connection loss.")
@click.option("--splits", is_flag=True, help="Run split points: head on the device, tail on --edge.")
@click.option("--edge", default=None, metavar="BOARD", help="Edge board for --splits (default: the first edge).")
@click.option("--codecs", default="fp32,fp16,int8", show_default=True, help="Payload codecs for --splits.")
@click.option(
    "--max-splits",
    type=click.IntRange(0),
    default=None,
    metavar="N",
    help="With --splits: at most N split points per variant, evenly spaced (a reduced sweep).",
)
@click.option("--force", is_flag=True, help="Redo jobs the store already has.")
@click.option("--trust-new-hosts", is_flag=True, help="Accept and record unknown host keys.")
@click.option("--enqueue-only", is_flag=True, help="Only queue the jobs (for `edgeatlas bench worker`s).")
@click.option("--lease-s", type=click.FloatRange(1), default=60.0, show_default=True, help="Job lease (renewed).")
@json_option
def run(
    devices_path: Path,
    db_url: str | None,
    boards: tuple[str, ...],
    variants: tuple[str, ...],
    grid: bool,
    probe_set: str | None,
    runtime: str,
    threads: int,
    graph_opt: str | None,
    drift_ref: bool,
    repeat: int,
    number: int,
    min_repeat_ms: float,
    warmup_s: float,
    cooldown_s: float,
    timeout_s: float,
    retries: int,
    splits: bool,
    edge: str | None,
    codecs: str,
    max_splits: int | None,
    force: bool,
    trust_new_hosts: bool,
    enqueue_only: bool,
    lease_s: float,
    as_json: bool,
) -> None:
    """Run variants on boards; results land in the store (a rerun skips what is done).

    The jobs go into the store's queue, keyed by measurement key (queuing twice adds
    nothing), then this command works the queue for the chosen boards until it is empty:
    boards in parallel, one job at a time per board. Agent and artifacts are uploaded only
    when a board lacks them. Failed jobs are recorded with an error code and retried by the
    next run; --force redoes everything. On PostgreSQL, --enqueue-only just queues, and any
    number of `edgeatlas bench worker` controllers run the jobs.

    \b
    Example:
        edgeatlas bench run --grid
        edgeatlas bench run --boards little-1,big-1 --variants 3fa2,9c1e --threads 1 --repeat 5
        edgeatlas bench run --grid --graph-opt extended
        edgeatlas bench run --boards mid-1 --grid --drift-ref
        edgeatlas bench run --grid --splits --edge edge-1 --codecs fp16,int8,pca --max-splits 2 --json
        edgeatlas bench run --grid --db postgresql://atlas@db/atlas --enqueue-only
        edgeatlas bench run --boards mid-1 --probe-set default
    """
    from probes.fleet import SweepConfig
    from probes.protocol import MeasureProtocol
    from probes.sweep import run_bench
    from registry.config import load_devices

    fleet = load_devices(devices_path, check_keys=False)
    store = open_store(db_url)
    if probe_set:
        from predictors.training import predictor_graph_level

        # the probe models are measured at the predictor's level, or k-shot would never read them
        graph_opt = predictor_graph_level(store, probe_set, graph_opt)
    graph_opt = graph_opt or "all"
    problem = graph_opt_problem(graph_opt, runtime)
    if problem:
        raise EdgeatlasError(problem, ErrorCode.INVALID_ARGUMENT, hint="drop --graph-opt for litert")
    if drift_ref and runtime != "onnxruntime":
        raise EdgeatlasError(
            f"--drift-ref runs an ONNX reference model; --runtime {runtime} cannot",
            ErrorCode.INVALID_ARGUMENT,
            hint="drop --drift-ref for litert",
        )
    cfg = SweepConfig(
        runtime=runtime,
        threads=threads,
        graph_opt=graph_opt,
        protocol=MeasureProtocol(
            warmup_s=warmup_s, repeat=repeat, number=number, min_repeat_ms=min_repeat_ms, cooldown_s=cooldown_s
        ),
        timeout_s=timeout_s,
        retries=retries,
        force=force,
        trust_new_hosts=trust_new_hosts,
        codecs=tuple(_split((codecs,))),
        drift_ref=drift_ref,
    )
    chosen = _split(variants)
    if probe_set:
        from predictors.training import load_champion

        _, pset = load_champion(store, probe_set, check_features=False)  # only its probe ids
        chosen = [*chosen, *(v for v in pset.probe_ids if v not in chosen)]
    res = run_bench(
        store,
        fleet,
        cfg,
        _split(boards),
        chosen,
        grid=grid,
        splits=splits,
        edge=edge,
        progress=not as_json,
        max_splits=max_splits,
        lease_s=lease_s,
        enqueue_only=enqueue_only,
    )
    if enqueue_only:
        emit(res.enqueued.summary(), as_json, title="queued (run `edgeatlas bench worker` to work them)")
        return
    _print_outcomes(res.summary(), res.sweep.outcomes, as_json)


def _print_outcomes(summary: dict, outcomes, as_json: bool) -> None:
    failures = [o for o in outcomes if o.status == "error"]
    if as_json:
        print_json({**summary, "failures": failures})
        return
    emit(summary, False, title="sweep")
    if failures:
        emit(
            [
                {
                    "board": o.board,
                    "variant": o.variant_id[:12],
                    "codec": o.codec,
                    "error": o.error_code,
                    "message": (o.error_message or "")[:160],
                }
                for o in failures
            ],
            False,
            title="failed jobs (rerun to retry)",
        )


@group.command("worker")
@devices_option
@db_option
@click.option(
    "--boards", multiple=True, metavar="NAME", help="Only claim jobs for these boards (default: all devices)."
)
@click.option(
    "--lease-s", type=click.FloatRange(1), default=60.0, show_default=True, help="Job lease, renewed while it runs."
)
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True, help="Claims per job.")
@click.option(
    "--retries", type=click.IntRange(0, 10), default=2, show_default=True, help="On connection loss, per claim."
)
@click.option("--poll-s", type=click.FloatRange(0.05), default=0.5, show_default=True, help="Wait between empty polls.")
@click.option("--once", is_flag=True, help="Run one job, then exit.")
@click.option("--follow", is_flag=True, help="Keep polling when the queue is empty (a service).")
@click.option("--trust-new-hosts", is_flag=True, help="Accept and record unknown host keys.")
@json_option
def worker(
    devices_path: Path,
    db_url: str | None,
    boards: tuple[str, ...],
    lease_s: float,
    max_attempts: int,
    retries: int,
    poll_s: float,
    once: bool,
    follow: bool,
    trust_new_hosts: bool,
    as_json: bool,
) -> None:
    """Claim queued jobs and run them on this controller's boards until the queue is empty.

    Any number of workers (on any machines sharing a PostgreSQL store) can run at once:
    jobs are claimed with SELECT ... FOR UPDATE SKIP LOCKED and a lease that a heartbeat
    renews while the job runs; a board runs one job at a time across all workers. A worker
    that dies has its jobs put back when the lease expires, and a job's measurement and its
    completion are written in one transaction, so every job completes exactly once.

    \b
    Example:
        edgeatlas bench run --grid --db postgresql://atlas@db/atlas --enqueue-only
        edgeatlas bench worker --db postgresql://atlas@db/atlas --devices lab-a.toml
        edgeatlas bench worker --follow --lease-s 120     # as a service
    """
    from probes.fleet import SweepConfig
    from probes.queue import QueueWorker
    from registry.config import load_devices

    fleet = load_devices(devices_path, check_keys=False)
    names = _split(boards)
    for n in names:
        fleet.board(n)
    store = open_store(db_url)
    base = SweepConfig(retries=retries, trust_new_hosts=trust_new_hosts)
    w = QueueWorker(
        store,
        fleet,
        names or None,
        base=base,
        lease_s=lease_s,
        max_attempts=max_attempts,
        poll_s=poll_s,
        once=once,
        follow=follow,
        progress=not as_json,
    )
    rep = w.run()
    final = {o.key: o for o in rep.outcomes}.values()
    _print_outcomes(rep.summary(), list(final), as_json)


@group.command("results")
@db_option
@click.option("--board", default=None, help="Only this board.")
@click.option("--variant", default=None, help="Only this variant (id or unique prefix).")
@click.option("--all", "all_status", is_flag=True, help="Include failed jobs.")
@click.option(
    "--source",
    default="fleet",
    show_default=True,
    help="Whose measurements: fleet (everything not imported: the probes' and rows posted to the API), "
    "probe, api, dataset:<name> or dataset:* (imported with `predictors import`), or all.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Show the newest N rows (0: all). Default: 200 in the table, all with --csv/--json.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@json_option
def results(
    db_url: str | None,
    board: str | None,
    variant: str | None,
    all_status: bool,
    source: str,
    limit: int | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """Show measurements: latency percentiles, CV, energy with its source, errors.

    \b
    Example:
        edgeatlas bench results --board little-1
        edgeatlas bench results --variant 3fa2 --csv > lat.csv
        edgeatlas bench results --source 'dataset:*' --limit 50
    """
    from probes.sweep import RESULT_COLUMNS, result_rows, rows_to_csv

    store = open_store(db_url)
    if (
        board
        and board not in {b.name for b in store.list_boards()}
        and not store.count_measurements(status=None, board=board)
    ):
        raise EdgeatlasError(
            f"unknown board {board!r}: no board of that name and no measurements from it",
            code=ErrorCode.NOT_FOUND,
            hint="see `edgeatlas fleet list` for the boards",
        )
    src = None if source in ("all", "fleet") else source
    not_src = "dataset:*" if source == "fleet" else None
    status = None if all_status else "ok"
    vid = store.get_variant(variant).id if variant else None
    table_limit = 200 if limit is None and not (as_csv or as_json) else (limit or None)
    rows = result_rows(store, board, vid, status=status, source=src, limit=table_limit, not_source=not_src)
    if as_csv:
        click.echo(rows_to_csv(rows), nl=False)
        return
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["variant"] = r["variant"][:12]
    total = len(rows)
    if table_limit is not None and len(rows) == table_limit:
        total = store.count_measurements(status=status, source=src, board=board, variant_id=vid, not_source=not_src)
    title = "measurements" + (f" (newest {len(rows)} of {total})" if total > len(rows) else "")
    emit(rows, False, RESULT_COLUMNS, title=title)
    if total > len(rows):
        note(f"{total - len(rows)} older rows not shown; --limit 0 shows all, --csv/--json print all")
    elif not rows and source == "fleet" and store.count_measurements(status=status):
        note("no fleet measurements match; imported rows are shown with --source 'dataset:*'")
