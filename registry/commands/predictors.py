"""`edgeatlas predictors ...`: import datasets, evaluate, train, retrain, list, predict."""

from __future__ import annotations

from pathlib import Path

import click

from probes.agent import GRAPH_OPT_LEVELS, graph_level
from registry.commands.common import db_option, emit, err_console, json_option, note, open_store, print_json
from registry.errors import EdgeatlasError, ErrorCode


@click.group(name="predictors")
def group() -> None:
    """Latency / energy predictors: datasets, training, evaluation, prediction.

    \b
    Example:
        edgeatlas predictors train --source probe
        edgeatlas predictors eval --dataset help-nb201 --device pixel2 --shots 10 --json
        edgeatlas predictors predict --variant 3fa2 --device-facts examples/devices/phone.json
    """


@group.command(name="import")
@click.argument("name")
@click.option(
    "--path",
    "path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset folder (default: $EDGEATLAS_DATASETS/<folder>, else /work/shared/datasets/<folder>).",
)
@db_option
@json_option
def import_cmd(name: str, path: Path | None, db_url: str | None, as_json: bool) -> None:
    """Import an external measurement dataset into the store (source="dataset:<name>").

    NAME is one of help-nb201, help-fbnet, latbench, hwnasbench360, mobile-ml-benchmark (aliases:
    help and nb201 = help-nb201, fbnet = help-fbnet, mmb = mobile-ml-benchmark; the output names it).
    Importing the same file again writes nothing. A corrected file updates the values that changed
    (the output's ``updated``) and deletes those it no longer holds (empty or nan now: ``removed``);
    a zero or negative latency or energy is refused with its file, line and column. Importing also
    deletes this dataset's rows that an older edgeatlas stored under variant ids the dataset no
    longer uses (``replaced``).

    \b
    Example:
        edgeatlas predictors import help-nb201 --path ../shared/datasets/help
    """
    from rich.progress import Progress

    from predictors.datasets import import_dataset

    store = open_store(db_url)
    with Progress(transient=True, console=err_console) as prog:  # stdout holds only the result
        task = prog.add_task(f"importing {name}", total=None)
        result = import_dataset(store, name, path, progress=lambda d, t: prog.update(task, completed=d, total=t))
    emit(result, as_json)


@group.command(name="eval")
@click.option("--dataset", required=True, help="help-nb201, help-fbnet, latbench, hwnasbench360, mobile-ml-benchmark")
@click.option(
    "--device",
    "devices",
    required=True,
    multiple=True,
    help="Target device(s), a column of the dataset (repeat or comma-separate).",
)
@click.option(
    "--shots",
    default=10,
    show_default=True,
    type=click.IntRange(3, 10),
    help="k reference measurements on the device (3-10; HELP's reference archs, on latbench its probe set).",
)
@click.option(
    "--path",
    "path",
    default=None,
    help="Dataset folder (default: $EDGEATLAS_DATASETS/<folder>, else /work/shared/datasets/<folder>).",
)
@click.option(
    "--probe-set",
    type=click.Choice(["selected", "help"]),
    default=None,
    help="latbench only: the shots are the probe set selected on its development devices (default) "
    "or HELP's 10 NB201 reference archs.",
)
@click.option(
    "--target",
    type=click.Choice(["latency", "energy"]),
    default=None,
    help="What to predict. Default: energy when every device given measured it (hwnasbench360's pi5), else "
    "latency. Only hwnasbench360 has energy.",
)
@json_option
def eval_cmd(
    dataset: str,
    devices: tuple[str, ...],
    shots: int,
    path: str | None,
    probe_set: str | None,
    target: str | None,
    as_json: bool,
) -> None:
    """k-shot evaluation on an unseen device (HELP protocol for help-*).

    Prints spearman, kendall, acc10, acc5, rmse_ms, mape, n (an energy evaluation: rmse_mj, and
    target "energy"). The table (and the JSON list
    for several devices) adds, for HELP's evaluation devices, the Spearman HELP published
    (help_spearman), and for the k-shot datasets the calibration the device's shots chose
    ("mix"; on NB201-space data also "mix x op-count correction" or "op-count sum"); with
    several devices, one row each and their mean.

    \b
    Example:
        edgeatlas predictors eval --dataset help-nb201 --device pixel2 --shots 10 --json
        edgeatlas predictors eval --dataset help-nb201 --device pixel2,raspi4,eyeriss
        edgeatlas predictors eval --dataset latbench --device mobile-dsp-snapdragon-855-hexagon-690-int8 --probe-set help
        edgeatlas predictors eval --dataset hwnasbench360 --device pi5-litert            # energy, mJ
        edgeatlas predictors eval --dataset hwnasbench360 --device pixel-litert --target latency
    """
    from predictors.datasets import ALIASES, HELP_PUBLISHED
    from predictors.evaluate import ENERGY_METRIC_KEYS, METRIC_KEYS, evaluate

    names = [d.strip() for v in devices for d in v.split(",") if d.strip()]
    if not names:
        raise EdgeatlasError(
            f"--device {', '.join(repr(v) for v in devices)} names no device",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="give a device column of the dataset, e.g. --device pixel2 or --device pixel2,raspi4 "
            "(an unknown name lists the dataset's devices)",
        )
    published = HELP_PUBLISHED.get(dataset, {})
    # one target for the whole table (energy only if every device has it); only hwnasbench360 has energy,
    # so no other dataset is read an extra time for it
    if target is None and len(names) > 1 and ALIASES.get(dataset, dataset) == "hwnasbench360":
        from predictors.datasets import load
        from predictors.evaluate import default_target

        target = default_target(load(dataset, path), names)
    rows = [dict(evaluate(dataset, dev, shots, path, probe_set, target)) for dev in names]
    shots_from = f", probe set {probe_set or 'selected'}" if dataset == "latbench" else ""
    if len(rows) == 1 and as_json:  # exactly the documented keys
        energy = rows[0].get("target") == "energy"
        print_json(
            {k: rows[0][k] for k in (*ENERGY_METRIC_KEYS, "target")} if energy else {k: rows[0][k] for k in METRIC_KEYS}
        )
        return
    for dev, row in zip(names, rows, strict=True):
        if dev in published:
            row["help_spearman"] = published[dev]
    what = " energy (mJ)" if any(r.get("target") == "energy" for r in rows) else ""
    if len(rows) == 1:
        emit(rows[0], False, title=f"{dataset} {names[0]} {shots}-shot{what}{shots_from}")
        return
    if as_json:
        print_json([{"device": d, **r} for d, r in zip(names, rows, strict=True)])
        return
    table = [{"device": d, **r} for d, r in zip(names, rows, strict=True)]
    mean = {"device": "mean", **{k: sum(r[k] for r in rows) / len(rows) for k in ("spearman", "acc10")}}
    helps = [r["help_spearman"] for r in rows if "help_spearman" in r]
    if len(helps) == len(rows):
        mean["help_spearman"] = sum(helps) / len(helps)
    note = " (help_spearman: HELP's published figure)" if helps else ""
    emit([*table, mean], False, title=f"{dataset} {shots}-shot{what}{shots_from}{note}")


SOURCE_HELP = (
    "Only measurements from this source: probe (the fleet), dataset:<name>, or a glob like dataset:* ('*': "
    "every source). Default: the predictor champion's, else every source."
)
CLASS_HELP = (
    "Fit one device class only. Default: the predictor champion's class (or every class), else every class. "
    "One predictor is one class (or every class): another class needs another --name."
)
TARGET_HELP = (
    "The target the versions are scored and promoted on. Default: the predictor champion's, else latency. "
    "One predictor is one target: another target needs another --name."
)
_KIND_HELP = (
    "Regressor kind: gradient boosting on log latency, ridge, non-negative per-op and per-kernel costs "
    "fitted for relative error (extrapolates to variants larger than any measured), or auto: gbm or additive "
    "per class, whichever has the lower held-out error (the report's chosen_kinds)."
)
KIND_CHOICES = ["auto", "gbm", "linear", "additive"]
kind_option = click.option(
    "--kind",
    type=click.Choice(KIND_CHOICES),
    default=None,
    help=f"{_KIND_HELP} Default: the predictor champion's kind, else auto.",
)
evaluation_option = click.option(
    "--include-evaluation/--no-include-evaluation",
    default=None,
    help="Also fit on imported evaluation devices (../shared/datasets/README.md). By default (the predictor "
    "champion's setting, else off) they are left out, named in the report, and only predicted k-shot or "
    "scored with `predictors eval`.",
)
report_option = click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: the data dir's reports/).",
)


graph_opt_option = click.option(
    "--graph-opt",
    type=click.Choice(list(GRAPH_OPT_LEVELS)),
    default=None,
    help="Fit the measurements taken at this onnxruntime graph optimization level (`bench run "
    "--graph-opt`; rows that name no level count as 'all'). Default: the level of the predictor's "
    "champion, else 'all'. One predictor is one level: another level needs another --name.",
)

jobs_option = click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes for the fits of a training (default: every CPU this process may use; "
    "--kind linear from 50k rows). 1 fits everything in this process. The models do not depend on it.",
)

drift_correct_option = click.option(
    "--drift-correct/--no-drift-correct",
    default=None,
    help="Fit latencies with the host's speed drift taken out: a row measured with `bench run "
    "--drift-ref` counts as its p50 in reference units times its class's median reference p50 (ms); "
    "rows without the reference keep their p50. Default: the predictor champion's setting, else off.",
)


@group.command(name="train")
@click.option("--class", "device_class", default=None, help=CLASS_HELP)
@click.option("--source", default=None, help=SOURCE_HELP)
@graph_opt_option
@drift_correct_option
@report_option
@click.option("--target", type=click.Choice(["latency", "energy"]), default=None, help=TARGET_HELP)
@click.option("--name", default=None, help="Predictor name (default: 'default', or 'class:<C>' with --class).")
@kind_option
@evaluation_option
@jobs_option
@db_option
@json_option
def train_cmd(
    device_class: str | None,
    source: str | None,
    graph_opt: str | None,
    drift_correct: bool | None,
    report_dir: Path | None,
    target: str | None,
    name: str | None,
    kind: str,
    include_evaluation: bool | None,
    jobs: int | None,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Train a predictor set from the store's measurements and make it the champion.

    One latency regressor per device class (and an energy one where energy was measured), the
    probe set for k-shot and the zero-shot facts model. Writes a report (JSON + PNG). Training an
    existing --name again keeps its champion's class, target, source and graph level unless given.

    \b
    Example:
        edgeatlas predictors train --source probe --target latency --json
        edgeatlas predictors train --source probe --target energy --name fleet-energy
        edgeatlas predictors train --source probe --graph-opt extended --name fleet-extended
        edgeatlas predictors train --source probe --drift-correct --name fleet-drift
        edgeatlas predictors train --jobs 1   # a shared server: fit on one CPU
    """
    from predictors.training import DEFAULT_NAME, train

    store = open_store(db_url)
    nm = name if name is not None else (f"class:{device_class}" if device_class else DEFAULT_NAME)
    emit(
        train(
            store,
            name=nm,
            device_class=device_class,
            target=target,
            kind=kind,
            promote="always",
            source=source,
            report_dir=report_dir,
            include_evaluation=include_evaluation,
            graph_opt=graph_opt,
            drift_correct=drift_correct,
            jobs=jobs,
        ),
        as_json,
    )


@group.command(name="retrain")
@click.option("--name", default=None, help="Predictor name (default: 'default', or 'class:<C>' with --class).")
@click.option("--class", "device_class", default=None, help=CLASS_HELP)
@click.option("--target", type=click.Choice(["latency", "energy"]), default=None, help=TARGET_HELP)
@kind_option
@click.option("--source", default=None, help=SOURCE_HELP)
@graph_opt_option
@drift_correct_option
@report_option
@click.option(
    "--schedule",
    is_flag=True,
    help="Print a systemd service + timer pair and a cron line that run this retrain; do not train.",
)
@click.option(
    "--on-calendar",
    default="*-*-* 03:17:00",
    show_default=True,
    help="With --schedule: systemd OnCalendar expression, and the cron line at the same times (daily, hourly, "
    "weekly, monthly, or '[Mon..Fri] *-*-* HH:MM[:SS]').",
)
@evaluation_option
@jobs_option
@db_option
@json_option
def retrain_cmd(
    name: str | None,
    device_class: str | None,
    target: str | None,
    kind: str | None,
    source: str | None,
    graph_opt: str | None,
    drift_correct: bool | None,
    report_dir: Path | None,
    schedule: bool,
    on_calendar: str,
    include_evaluation: bool | None,
    jobs: int | None,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Challenger from all measurements; promoted only if it beats the champion on held-out data.

    The challenger is fitted with the champion's settings (class, target, kind, source, graph level,
    drift correction, evaluation devices) unless an option says otherwise; another class or target
    is another predictor (another --name). Prints "no new data" (exit 0) and changes nothing when
    the measurements are the ones the champion (or an already rejected challenger) was trained on.
    Otherwise writes a report: JSON with champion and challenger held-out metrics and whether it
    was promoted, and a PNG of predicted against measured.

    \b
    Example:
        edgeatlas predictors retrain --json
        edgeatlas predictors retrain --name fleet-energy --report /var/lib/edgeatlas/reports
        edgeatlas predictors retrain --schedule > units.txt   # systemd + cron for the docs
    """
    from predictors.training import DEFAULT_NAME, check_name, predictor_settings, retrain_args, train

    store = open_store(db_url)
    name = name if name is not None else (f"class:{device_class}" if device_class else DEFAULT_NAME)
    given = {  # each None: the champion's (predictor_settings)
        "device_class": device_class,
        "target": target,
        "kind": kind,
        "source": source,
        "graph_opt": graph_opt,
        "drift_correct": drift_correct,
        "include_evaluation": include_evaluation,
    }
    if schedule:
        check_name(name)
        # the champion's, spelled out; refuses another class, target or level
        args = retrain_args(name, predictor_settings(store, name, **given))
        if report_dir:
            args += ["--report", str(report_dir.resolve())]
        if jobs is not None:
            args += ["--jobs", str(jobs)]
        units = schedule_units(store.url, args, on_calendar)
        if as_json:
            print_json(units)
        else:
            click.echo(units["text"])
        return
    result = train(store, name=name, promote="if_better", report_dir=report_dir, jobs=jobs, **given)
    if as_json:
        print_json(result)
    elif result["status"] == "no new data":
        click.echo(f"no new data: {result['message']} (data hash {result['data_hash'][:12]}, {result['rows']} rows)")
    else:
        emit(result, False)


def _binary() -> list[str]:
    """How to invoke this CLI from a unit file: the installed `edgeatlas` script, else `python -m`."""
    import shutil
    import sys

    here = Path(sys.executable).parent / "edgeatlas"
    if here.exists():
        return [str(here)]
    found = shutil.which("edgeatlas")
    return [found] if found else [sys.executable, "-m", "registry.cli"]


def _systemd_escape(text: str) -> str:
    """A unit file line's value: systemd expands ``%`` specifiers and ``$VAR`` in ExecStart and
    Environment, so a literal ``%`` or ``$`` (a predictor name may hold one) is doubled."""
    return text.replace("%", "%%").replace("$", "$$")


def schedule_units(db_url: str, args: list[str], on_calendar: str = "*-*-* 03:17:00") -> dict[str, str]:
    """systemd service + timer and a crontab line running ``edgeatlas <args> --db URL --json``."""
    import shlex

    from sqlalchemy.engine import make_url

    from registry.paths import data_dir

    home = str(data_dir())
    parsed = make_url(db_url)
    secret_note = ""
    if parsed.password is not None:  # never written into a unit file or a crontab
        db_url = parsed._replace(password=None).render_as_string(hide_password=False)
        secret_note = (
            "# the store URL's password is left out: give it to libpq in ~/.pgpass of the user that runs "
            "this, or as PGPASSWORD in an EnvironmentFile= readable only by it\n"
        )
    argv = [*_binary(), *args, "--db", db_url, "--json"]
    cmd = " ".join(shlex.quote(a) for a in argv)
    log = str(Path(home) / "retrain.log")
    service = (
        "# /etc/systemd/system/edgeatlas-retrain.service\n"
        "[Unit]\n"
        "Description=edgeatlas: retrain predictors, promote the challenger only if it beats the champion\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"Environment={_systemd_escape(shlex.quote('EDGEATLAS_HOME=' + home))}\n"
        f"ExecStart={_systemd_escape(cmd)}\n"
        "Nice=10\n"
    )
    timer = (
        "# /etc/systemd/system/edgeatlas-retrain.timer\n"
        "[Unit]\n"
        "Description=edgeatlas: scheduled predictor retraining\n\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=10min\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    # cron treats % as a newline: escape it
    cron = (
        f"{calendar_to_cron(on_calendar)} EDGEATLAS_HOME={shlex.quote(home)} {cmd} >> {shlex.quote(log)} 2>&1".replace(
            "%", "\\%"
        )
    )
    text = (
        f"{secret_note}{service}\n{timer}\n"
        "# enable: systemctl daemon-reload && systemctl enable --now edgeatlas-retrain.timer\n"
        "# or one crontab line (crontab -e):\n"
        f"{cron}\n"
    )
    return {"service": service, "timer": timer, "cron": cron, "command": cmd, "text": text}


_CAL_SHORTHAND = {
    "minutely": "* * * * *",
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annually": "0 0 1 1 *",
}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # systemd's week runs Monday to Sunday
_DAY_NAMES = {n: i for i, n in enumerate(_DAYS)} | {
    full: i for i, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}


def calendar_to_cron(on_calendar: str) -> str:
    """The five cron time fields for a systemd OnCalendar expression, so the timer and the cron line
    run at the same times. Supported: the shorthands (daily, weekly, ...) and ``[DOW] *-*-* HH:MM[:00]``
    with DOW like ``Mon``, ``Mon,Fri`` or ``Mon..Fri`` (ascending, Monday first, as systemd reads it)
    and HH/MM a number, a list or ``*``. Anything else is refused (an error naming the forms),
    rather than a cron line that runs at other times."""
    if on_calendar.lower() in _CAL_SHORTHAND:
        return _CAL_SHORTHAND[on_calendar.lower()]
    bad = EdgeatlasError(
        f"--on-calendar {on_calendar!r}: not a form the cron line can follow",
        code=ErrorCode.INVALID_ARGUMENT,
        hint="use daily/hourly/weekly/monthly or '[Mon..Fri] *-*-* HH:MM[:00]', e.g. '*-*-* 03:17:00' or "
        "'Mon *-*-* 04:00:00' (check an expression with `systemd-analyze calendar`)",
    )
    parts = on_calendar.split(" ")  # single spaces only: a newline would break the unit file
    dow = "*"
    if len(parts) == 3:
        days = []
        for item in parts[0].lower().split(","):
            ends = item.split("..")
            if len(ends) > 2 or any(e not in _DAY_NAMES for e in ends):
                raise bad
            first, last = (_DAY_NAMES[e] for e in (ends[0], ends[-1]))
            if last < first:  # systemd refuses a range that wraps past Sunday
                raise bad
            days.append(str(first + 1) if first == last else f"{first + 1}-{last + 1}")  # cron: Mon=1 .. Sun=7
        dow = ",".join(days)
        parts = parts[1:]
    if len(parts) != 2 or parts[0] != "*-*-*":
        raise bad
    hms = parts[1].split(":")
    if len(hms) not in (2, 3) or (len(hms) == 3 and hms[2] not in ("0", "00")):
        raise bad  # cron has no seconds: only a timer that fires at second 0 can be followed

    def field(v: str, top: int) -> str:
        if v == "*":
            return "*"
        vals = v.split(",")
        if not all(x.isdigit() and int(x) <= top for x in vals):
            raise bad
        return ",".join(str(int(x)) for x in vals)

    return f"{field(hms[1], 59)} {field(hms[0], 23)} * * {dow}"


@group.command(name="list")
@db_option
@json_option
def list_cmd(db_url: str | None, as_json: bool) -> None:
    """List predictor versions (champion, challengers, retired).

    \b
    Example:
        edgeatlas predictors list --json
    """
    store = open_store(db_url)
    rows = [
        {
            "id": p.id,
            "name": p.name,
            "version": p.version,
            "target": p.target,
            "kind": _kind_label(p.metrics or {}),
            "chosen_kinds": (p.metrics or {}).get("chosen_kinds"),
            "class": p.device_class,
            # the measurements it was fitted on: a source glob, "*" (every source) or, for a version
            # from before sources were recorded, null
            "source": ((p.metrics or {})["source"] or "*") if "source" in (p.metrics or {}) else None,
            "graph_opt": graph_level(p.metrics),
            "drift_correct": bool((p.metrics or {}).get("drift_correct")),
            "status": p.status,
            "acc10": (p.metrics or {}).get("acc10"),
            "mape": (p.metrics or {}).get("mape"),
            "data_hash": p.data_hash[:12],
            "sklearn": (p.libs or {}).get("scikit-learn"),
            "created_at": p.created_at,
        }
        for p in store.list_predictors()
    ]
    if not rows and not as_json:
        err_console.print("no predictor versions yet: run `edgeatlas predictors train` after a sweep or an import")
        return
    emit(rows, as_json, title="predictors")


def _kind_label(metrics: dict) -> str | None:
    """The version's kind; for auto, what it chose, e.g. "auto: additive 5, gbm 1"."""
    kind, chosen = metrics.get("kind"), metrics.get("chosen_kinds")
    if kind != "auto" or not chosen:
        return kind
    counts: dict[str, int] = {}
    for targets in chosen.values():
        for k in targets.values():
            counts[k] = counts.get(k, 0) + 1
    return "auto: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


@group.command(name="predict")
@click.option("--variant", "variant", required=True, help="Variant id (or unique prefix).")
@click.option("--device", default=None, help="A trained device class or a board name.")
@click.option(
    "--device-facts",
    "facts_file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON/TOML facts of a new device.",
)
@click.option(
    "--probe-latencies",
    "probe_file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON {probe variant id: ms}.",
)
@click.option("--name", default="default", show_default=True, help="Predictor name.")
@db_option
@json_option
def predict_cmd(
    variant: str,
    device: str | None,
    facts_file: Path | None,
    probe_file: Path | None,
    name: str,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Predict latency (and energy) of a variant on a device, with an interval.

    energy_source names where predicted energy comes from: "predicted:class:<C> from" the
    energy_source of the rows it was fitted on (e.g. estimated:power-model-active_w). Where no energy
    is predicted (k-shot, zero-shot, a class without energy rows) energy_mj is null and energy_note
    says why.

    \b
    Example:
        edgeatlas predictors predict --variant nb201:123 --device help-nb201/pixel3 --json
        edgeatlas predictors predict --variant nb201:123 --probe-latencies probes.json
    """
    from predictors.features import features_from_dict
    from predictors.training import load_champion
    from registry.selector.sources import read_device_facts, read_probe_latencies

    if sum(x is not None for x in (device, facts_file, probe_file)) != 1:
        raise EdgeatlasError(
            "give exactly one of --device, --device-facts, --probe-latencies", code=ErrorCode.INVALID_ARGUMENT
        )
    # the input files first: a bad one is reported before the store or the predictor is read
    facts = read_device_facts(facts_file) if facts_file is not None else None
    probes = read_probe_latencies(probe_file) if probe_file is not None else None
    store = open_store(db_url)
    v = store.get_variant(variant)
    feats = features_from_dict(v.features, f"variant {v.id}").vector()
    rec, pset = load_champion(store, name)
    kwargs: dict = {}
    if device is not None:
        cls = device
        if device not in pset.classes:
            try:
                cls = store.get_board(device).class_name
            except EdgeatlasError:
                cls = device
        kwargs["device_class"] = cls
    elif facts is not None:
        kwargs["facts"] = facts
    else:
        kwargs["probe_latencies"] = probes
        kwargs["variant_ids"] = [v.id]  # k-shot: the reference classes' own measurements of it, if any
    p = pset.predict(feats, **kwargs)
    out = {
        "variant": v.id,
        "predictor": f"{rec.name} v{rec.version}",
        "method": p.method,
        "latency_ms": float(p.latency_ms[0]),
        "latency_lo": float(p.latency_lo[0]),
        "latency_hi": float(p.latency_hi[0]),
    }
    if p.energy_mj is not None:
        out.update(energy_mj=float(p.energy_mj[0]), energy_lo=float(p.energy_lo[0]), energy_hi=float(p.energy_hi[0]))
    else:  # left out, and the note says why
        out.update(energy_mj=None, energy_lo=None, energy_hi=None)
    out["energy_source"] = p.energy_source  # predicted:<method> from <the training rows' energy_source>
    if p.energy_note:
        out["energy_note"] = p.energy_note
    ignored = sorted(set(kwargs.get("probe_latencies", {})) - set(pset.probe_ids))
    if ignored:  # e.g. a probe set measured for an older predictor version: the rest is used
        out["ignored_probes"] = ignored
        note(
            f"{len(ignored)} probe ids are not in this predictor's probe set and were not used: "
            f"{', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''} (probe set: {', '.join(pset.probe_ids)})"
        )
    if as_json:
        print_json(out)
    else:
        emit(out, False)
