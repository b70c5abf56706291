"""The Store: the system of record (MLflow-style SQLAlchemy store).

The URL picks the backend: SQLite by default (a file in the data dir), PostgreSQL
by URL. Every method opens its own transaction and returns frozen records from
:mod:`registry.store.records`, never ORM objects.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, exists, func, or_, select, union, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker

from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import default_db_url
from registry.store import migrate
from registry.store import records as R
from registry.store.models import (
    BoardRow,
    DeviceClassRow,
    FeedbackRow,
    JobRow,
    MeasurementRow,
    PredictorRow,
    QoEWeightsRow,
    RunRow,
    SplitRow,
    VariantRow,
    utcnow,
)

T = TypeVar("T")
_UPGRADED: set[str] = set()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@functools.cache
def _converters(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """Per field of a record dataclass, how to copy it off an ORM row (by its annotation)."""

    def plain(v: Any) -> Any:
        return v

    out = []
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if t.startswith("datetime"):
            conv: Callable[[Any], Any] = _aware
        elif t.startswith("tuple["):
            conv = lambda v: tuple(v or ())  # noqa: E731
        elif t.startswith("dict[") and "None" not in t:
            conv = lambda v: dict(v or {})  # noqa: E731
        elif t == "int":
            conv = int
        else:
            conv = plain
        out.append((f.name, conv))
    return tuple(out)


def _record(cls: type[T], row: Any) -> T:
    """A frozen record from an ORM row whose attributes carry the record's field names."""
    return cls(**{name: conv(getattr(row, name)) for name, conv in _converters(cls)})


def with_installed_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) without a driver -> the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, while edgeatlas installs psycopg2
    (``pip install edgeatlas[postgres]``); an explicit ``postgresql+<driver>://`` is left alone.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return f"postgresql://{rest}"


def _stats_field(column: str) -> str | None:
    """``FIELD`` of a ``stats.FIELD`` column name (a plain identifier), else None."""
    head, _, field = column.partition(".")
    return field if head == "stats" and field.isidentifier() else None


def _filter_measurements(
    q: Any,
    *,
    board: str | None = None,
    variant_id: str | None = None,
    device_class: str | None = None,
    source: str | None = None,
    not_source: str | None = None,
    status: str | None = None,
    split_id: int | None = None,
) -> Any:
    """The measurement filters every read shares; ``source``/``not_source`` take ``*`` globs."""
    m = MeasurementRow
    if board:
        q = q.where(m.board == board)
    if variant_id:
        q = q.where(m.variant_id == variant_id)
    if device_class:
        q = q.where(m.device_class == device_class)
    if source:
        q = q.where(m.source.like(source.replace("*", "%")))
    if not_source:
        q = q.where(~m.source.like(not_source.replace("*", "%")))
    if status:
        q = q.where(m.status == status)
    if split_id is not None:
        q = q.where(m.split_id == split_id)
    return q


class Store:
    """Open with :meth:`Store.open`; it upgrades the schema on first use."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=True)
        self._session = sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------------ setup
    @classmethod
    def open(cls, url: str | None = None, upgrade: bool = True) -> Store:
        url = with_installed_driver(url or os.environ.get("EDGEATLAS_DB") or default_db_url())
        try:
            kwargs: dict[str, Any] = {"future": True}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            else:
                kwargs["pool_pre_ping"] = True
            engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise EdgeatlasError(
                f"cannot open store {url!r}: {exc}",
                ErrorCode.STORE_ERROR,
                hint="give --db / EDGEATLAS_DB as a SQLAlchemy URL, e.g. sqlite:///atlas.db or postgresql://user@host/db",
            ) from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if upgrade:
            store.upgrade_if_needed()
        return store

    def upgrade(self) -> tuple[str | None, str | None]:
        try:
            return migrate.upgrade(self.engine)
        except OperationalError as exc:
            raise EdgeatlasError(
                f"cannot reach store {self.url}: {exc.orig}",
                ErrorCode.STORE_ERROR,
                hint="check the URL in --db / EDGEATLAS_DB and that the database server is running",
            ) from exc

    def upgrade_if_needed(self) -> None:
        key = self.url
        if key in _UPGRADED and ":memory:" not in key:
            return
        try:
            current = migrate.current_revision(self.engine)
        except OperationalError as exc:
            raise EdgeatlasError(
                f"cannot reach store {self.url}: {exc.orig}",
                ErrorCode.STORE_ERROR,
                hint="check the URL in --db / EDGEATLAS_DB and that the database server is running",
            ) from exc
        if current != migrate.head_revision():
            self.upgrade()
        _UPGRADED.add(key)

    def revision(self) -> str | None:
        return migrate.current_revision(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error."""
        s = self._session()
        try:
            yield s
            s.commit()
        except EdgeatlasError:
            s.rollback()
            raise
        except IntegrityError as exc:
            s.rollback()
            raise EdgeatlasError(f"store refused the write: {exc.orig}", ErrorCode.ALREADY_EXISTS) from exc
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()

    # --------------------------------------------------------- device classes
    def upsert_device_class(self, name: str, facts: dict[str, Any]) -> R.DeviceClass:
        with self.session() as s:
            row = s.get(DeviceClassRow, name)
            if row is None:
                row = DeviceClassRow(name=name, facts=dict(facts))
                s.add(row)
            else:
                row.facts = dict(facts)
            return R.DeviceClass(name=row.name, facts=dict(row.facts))

    def list_device_classes(self) -> list[R.DeviceClass]:
        with self.session() as s:
            rows = s.scalars(select(DeviceClassRow).order_by(DeviceClassRow.name)).all()
            return [R.DeviceClass(name=r.name, facts=dict(r.facts or {})) for r in rows]

    def get_device_class(self, name: str) -> R.DeviceClass:
        with self.session() as s:
            row = s.get(DeviceClassRow, name)
            if row is None:
                raise EdgeatlasError(
                    f"unknown device class {name!r}",
                    ErrorCode.NOT_FOUND,
                    hint=self._known("classes", [c.name for c in self.list_device_classes()]),
                )
            return R.DeviceClass(name=row.name, facts=dict(row.facts or {}))

    # ----------------------------------------------------------------- boards
    @staticmethod
    def _board(r: BoardRow) -> R.Board:
        return _record(R.Board, r)

    def upsert_board(
        self,
        name: str,
        class_name: str,
        host: str,
        port: int,
        role: str,
        emulate: dict[str, Any] | None = None,
        energy: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> R.Board:
        with self.session() as s:
            if s.get(DeviceClassRow, class_name) is None:
                s.add(DeviceClassRow(name=class_name, facts={}))
                s.flush()
            row = s.get(BoardRow, name)
            if row is None:
                row = BoardRow(name=name)
                s.add(row)
            row.class_name, row.host, row.port, row.role = class_name, host, int(port), role
            row.emulate, row.energy, row.tags = emulate, energy, list(tags)
            s.flush()
            return self._board(row)

    def list_boards(self, role: str | None = None) -> list[R.Board]:
        with self.session() as s:
            q = select(BoardRow).order_by(BoardRow.name)
            if role:
                q = q.where(BoardRow.role == role)
            return [self._board(r) for r in s.scalars(q).all()]

    def get_board(self, name: str) -> R.Board:
        with self.session() as s:
            row = s.get(BoardRow, name)
            if row is None:
                names = [b.name for b in self.list_boards()]
                raise EdgeatlasError(f"unknown board {name!r}", ErrorCode.NOT_FOUND, hint=self._known("boards", names))
            return self._board(row)

    def set_board_facts(self, name: str, facts: dict[str, Any]) -> R.Board:
        with self.session() as s:
            row = s.get(BoardRow, name)
            if row is None:
                raise EdgeatlasError(
                    f"unknown board {name!r}",
                    ErrorCode.NOT_FOUND,
                    hint="run `edgeatlas fleet list` to sync boards from devices.toml",
                )
            row.facts = dict(facts)
            row.checked_at = utcnow()
            s.flush()
            return self._board(row)

    # --------------------------------------------------------------- variants
    @staticmethod
    def _variant(r: VariantRow) -> R.Variant:
        return _record(R.Variant, r)

    def add_variant(
        self,
        id: str,
        family: str,
        format: str,
        path: str,
        params: int,
        macs: int,
        size_bytes: int,
        input_shape: Sequence[int],
        precision: str,
        width: float | None = None,
        resolution: int | None = None,
        prune: float | None = None,
        opset: int | None = None,
        runtime_needs: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        accuracy: float | None = None,
        accuracy_source: str | None = None,
        features: dict[str, Any] | None = None,
        parent_id: str | None = None,
        replace_features: bool = False,
    ) -> R.Variant:
        """Add a variant; idempotent on ``id``. An existing row keeps its fields, except its features:
        features of an older feature set are replaced by newer ones, and with ``replace_features``
        (dataset imports) a dataset arch's (no artifact) features and sizes are replaced by the
        given ones whenever they differ: the dataset is the truth about what it measured."""
        if (accuracy is None) != (accuracy_source is None):
            raise EdgeatlasError(
                "accuracy needs a source (measured:<dataset> or cited:<source>) and vice versa",
                ErrorCode.INVALID_ARGUMENT,
            )
        with self.session() as s:
            row = s.get(VariantRow, id)
            if row is not None:
                # idempotent, except that features of an older feature set are replaced by newer ones
                # (a dataset imported again after an upgrade; predictors.features.FEATURES_VERSION)
                old = (row.features or {}).get("features_version", 1)
                if features is not None and features.get("features_version", 1) > old:
                    row.features = dict(features)
                    s.flush()
                elif replace_features and features is not None and row.path == "" and row.features != features:
                    row.features = dict(features)
                    row.params, row.macs, row.size_bytes = int(params), int(macs), int(size_bytes)
                    row.input_shape = [int(x) for x in input_shape]
                    s.flush()
                return self._variant(row)
            row = VariantRow(
                id=id,
                family=family,
                format=format,
                path=str(path),
                params=int(params),
                macs=int(macs),
                size_bytes=int(size_bytes),
                input_shape=[int(x) for x in input_shape],
                precision=precision,
                width=width,
                resolution=resolution,
                prune=prune,
                opset=opset,
                runtime_needs=runtime_needs,
                recipe=recipe,
                accuracy=accuracy,
                accuracy_source=accuracy_source,
                features=features,
                parent_id=parent_id,
            )
            s.add(row)
            s.flush()
            return self._variant(row)

    def _resolve_variant(self, s: Session, id_or_prefix: str) -> VariantRow:
        row = s.get(VariantRow, id_or_prefix)
        if row is not None:
            return row
        if len(id_or_prefix) >= 4:
            rows = s.scalars(
                select(VariantRow).where(VariantRow.id.like(id_or_prefix.replace("%", "") + "%")).limit(3)
            ).all()
            if len(rows) == 1:
                return rows[0]
            if len(rows) > 1:
                raise EdgeatlasError(
                    f"variant prefix {id_or_prefix!r} is ambiguous",
                    ErrorCode.INVALID_ARGUMENT,
                    hint="give more characters of the id (see `edgeatlas zoo list`)",
                )
        short = len(id_or_prefix) < 4
        raise EdgeatlasError(
            f"unknown variant {id_or_prefix!r}" + (" (a prefix needs at least 4 characters)" if short else ""),
            ErrorCode.NOT_FOUND,
            hint="see `edgeatlas zoo list` for variant ids (imported dataset archs: `zoo list --all`)"
            if not short
            else "give at least 4 characters of the id (see `edgeatlas zoo list`)",
        )

    def get_variant(self, id_or_prefix: str) -> R.Variant:
        with self.session() as s:
            return self._variant(self._resolve_variant(s, id_or_prefix))

    def list_variants(
        self, family: str | None = None, format: str | None = None, artifacts_only: bool = False
    ) -> list[R.Variant]:
        """Variants, optionally of one family/format. ``artifacts_only`` leaves out imported dataset
        architectures (no artifact, empty path): they train predictors but cannot be run or deployed."""
        with self.session() as s:
            q = select(VariantRow).order_by(VariantRow.family, VariantRow.created_at, VariantRow.id)
            if artifacts_only:
                q = q.where(VariantRow.path != "")
            if family:
                q = q.where(VariantRow.family == family)
            if format:
                q = q.where(VariantRow.format == format)
            return [self._variant(r) for r in s.scalars(q).all()]

    def set_accuracy(self, id: str, value: float | None, source: str | None) -> R.Variant:
        if value is not None:
            if not source or ":" not in source:
                raise EdgeatlasError(
                    f"accuracy source {source!r} has no provenance",
                    ErrorCode.INVALID_ARGUMENT,
                    hint="use measured:<dataset>, cited:<source> or user:<who>",
                )
            if not (0.0 <= float(value) <= 1.0):
                raise EdgeatlasError(
                    f"accuracy {value} is not a fraction in [0, 1]",
                    ErrorCode.INVALID_ARGUMENT,
                    hint="give 0.71 for 71 %",
                )
        with self.session() as s:
            row = self._resolve_variant(s, id)
            row.accuracy = None if value is None else float(value)
            row.accuracy_source = None if value is None else source
            s.flush()
            return self._variant(row)

    def set_variant_features(self, id: str, features: dict[str, Any]) -> R.Variant:
        with self.session() as s:
            row = self._resolve_variant(s, id)
            row.features = dict(features)
            s.flush()
            return self._variant(row)

    # ----------------------------------------------------------------- splits
    @staticmethod
    def _split(r: SplitRow) -> R.Split:
        return _record(R.Split, r)

    def add_split(
        self,
        variant_id: str,
        cut_name: str,
        position: int,
        head_path: str | None,
        head_sha256: str | None,
        tail_path: str | None,
        tail_sha256: str | None,
        payload_shape: Sequence[int],
        payload_dtype: str,
        payload_bytes: int,
        head_macs: int | None = None,
        tail_macs: int | None = None,
        codecs: dict[str, Any] | None = None,
    ) -> R.Split:
        with self.session() as s:
            vrow = self._resolve_variant(s, variant_id)
            row = s.scalars(
                select(SplitRow).where(SplitRow.variant_id == vrow.id, SplitRow.cut_name == cut_name)
            ).first()
            if row is not None:
                return self._split(row)
            row = SplitRow(
                variant_id=vrow.id,
                cut_name=cut_name,
                position=int(position),
                head_path=head_path and str(head_path),
                head_sha256=head_sha256,
                tail_path=tail_path and str(tail_path),
                tail_sha256=tail_sha256,
                payload_shape=[int(x) for x in payload_shape],
                payload_dtype=payload_dtype,
                payload_bytes=int(payload_bytes),
                head_macs=head_macs,
                tail_macs=tail_macs,
                codecs=dict(codecs or {}),
            )
            s.add(row)
            s.flush()
            return self._split(row)

    def list_splits(self, variant_id: str) -> list[R.Split]:
        with self.session() as s:
            vrow = self._resolve_variant(s, variant_id)
            rows = s.scalars(select(SplitRow).where(SplitRow.variant_id == vrow.id).order_by(SplitRow.position)).all()
            return [self._split(r) for r in rows]

    def all_splits(self) -> list[R.Split]:
        with self.session() as s:
            return [
                self._split(r)
                for r in s.scalars(select(SplitRow).order_by(SplitRow.variant_id, SplitRow.position)).all()
            ]

    def get_split(self, split_id: int) -> R.Split:
        with self.session() as s:
            row = s.get(SplitRow, int(split_id))
            if row is None:
                raise EdgeatlasError(
                    f"unknown split {split_id}", ErrorCode.NOT_FOUND, hint="see `edgeatlas zoo splits VARIANT`"
                )
            return self._split(row)

    def set_split_codecs(self, split_id: int, codecs: dict[str, Any]) -> R.Split:
        with self.session() as s:
            row = s.get(SplitRow, int(split_id))
            if row is None:
                raise EdgeatlasError(f"unknown split {split_id}", ErrorCode.NOT_FOUND)
            row.codecs = dict(codecs)
            s.flush()
            return self._split(row)

    # ------------------------------------------------------------------- runs
    def start_run(self, kind: str, config: dict[str, Any] | None = None) -> int:
        with self.session() as s:
            row = RunRow(kind=kind, config=dict(config or {}), status="running")
            s.add(row)
            s.flush()
            return int(row.id)

    def finish_run(self, run_id: int, status: str = "done") -> None:
        with self.session() as s:
            row = s.get(RunRow, int(run_id))
            if row is not None:
                row.status = status
                row.finished_at = utcnow()

    def list_runs(self) -> list[R.Run]:
        with self.session() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.id)).all()
            return [_record(R.Run, r) for r in rows]

    # ----------------------------------------------------------- measurements
    @staticmethod
    def measurement_key(artifact_sha256: str, board: str, runtime_config: dict[str, Any]) -> str:
        """The idempotency key: (artifact sha256, board, runtime config)."""
        blob = json.dumps([artifact_sha256, board, runtime_config], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @staticmethod
    def _measurement(r: MeasurementRow) -> R.Measurement:
        return _record(R.Measurement, r)

    def has_measurement(self, key: str, status: str | None = "ok") -> bool:
        with self.session() as s:
            q = select(MeasurementRow.id).where(MeasurementRow.key == key)
            if status:
                q = q.where(MeasurementRow.status == status)
            return s.scalars(q).first() is not None

    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` that already have an ok measurement."""
        keys = list(keys)
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = select(MeasurementRow.key).where(MeasurementRow.key.in_(chunk), MeasurementRow.status == "ok")
                out.update(s.scalars(q).all())
        return out

    _MEASUREMENT_FIELDS = (
        "board", "variant_id", "runtime", "config", "status", "latency_ms", "stats", "energy_mj", "energy_source",
        "system", "error_code", "error_message", "split_id", "device_class", "run_id", "source",
    )  # fmt: skip

    @staticmethod
    def _check_energy_source(src: str | None, energy: float | None) -> None:
        if energy is not None and not (src and (src.startswith("measured:") or src.startswith("estimated:"))):
            raise EdgeatlasError(
                f"energy {energy} has source {src!r}",
                ErrorCode.INVALID_ARGUMENT,
                hint="energy_source must be measured:<backend> or estimated:<method>",
            )

    def add_measurement(
        self,
        key: str,
        board: str,
        variant_id: str,
        runtime: str,
        config: dict[str, Any],
        status: str,
        latency_ms: float | None = None,
        stats: dict[str, Any] | None = None,
        energy_mj: float | None = None,
        energy_source: str | None = None,
        system: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        split_id: int | None = None,
        device_class: str | None = None,
        run_id: int | None = None,
        source: str = "probe",
        replace: bool = False,
    ) -> R.Measurement:
        """Insert a result, idempotent on ``key``.

        An ok measurement is never overwritten unless ``replace``; a failed one is
        replaced by the next attempt, so a retry leaves exactly one row per key.
        """
        self._check_energy_source(energy_source, energy_mj)
        values = dict(locals())
        with self.session() as s:
            row = s.scalars(select(MeasurementRow).where(MeasurementRow.key == key).with_for_update()).first()
            if row is not None and row.status == "ok" and not replace:
                return self._measurement(row)
            if row is None:
                row = MeasurementRow(key=key)
                s.add(row)
            for f in self._MEASUREMENT_FIELDS:
                setattr(row, f, values[f])
            row.created_at = utcnow()
            s.flush()
            return self._measurement(row)

    def add_measurements_bulk(self, rows: Sequence[dict[str, Any]], chunk: int = 5000) -> int:
        """Insert many rows in one transaction; rows whose key exists are skipped. Returns rows inserted."""
        with self.session() as s:
            return self._write_measurements_bulk(s, rows, chunk, replace_changed=False)[0]

    def sync_measurements_bulk(
        self, rows: Sequence[dict[str, Any]], remove_keys: Collection[str] = (), chunk: int = 5000
    ) -> tuple[int, int, int]:
        """Write a dataset's rows in one transaction: new keys are inserted; a stored key whose
        status, latency_ms, energy_mj, energy_source, board or device class differs from the row's
        gets the row's values (a dataset file corrected and imported again, or a row that moved to
        another class); the ``remove_keys`` rows (values the file no longer holds) are deleted.
        Returns (inserted, updated, removed)."""
        with self.session() as s:
            inserted, updated = self._write_measurements_bulk(s, rows, chunk, replace_changed=True)
            removed = 0
            keys = sorted(set(remove_keys))
            for i in range(0, len(keys), chunk):
                res = s.execute(
                    delete(MeasurementRow)
                    .where(MeasurementRow.key.in_(keys[i : i + chunk]))
                    .execution_options(synchronize_session=False)
                )
                removed += int(res.rowcount or 0)
        return inserted, updated, removed

    _SYNCED_FIELDS = ("status", "latency_ms", "energy_mj", "energy_source", "board", "device_class")

    def _write_measurements_bulk(
        self, s: Session, rows: Sequence[dict[str, Any]], chunk: int, *, replace_changed: bool
    ) -> tuple[int, int]:
        """(inserted, updated) in session ``s``: :meth:`add_measurements_bulk`, and with
        ``replace_changed`` the :meth:`sync_measurements_bulk` replacement of changed values."""
        inserted = updated = 0
        # the stored values are read only to be compared
        cols = [getattr(MeasurementRow, f) for f in self._SYNCED_FIELDS] if replace_changed else []
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            keys = [r["key"] for r in part]
            existing = {
                k: tuple(v)
                for k, *v in s.execute(select(MeasurementRow.key, *cols).where(MeasurementRow.key.in_(keys))).all()
            }
            seen: set[str] = set()
            fresh = []
            for r in part:
                if r["key"] in seen:
                    continue
                seen.add(r["key"])
                old = existing.get(r["key"])
                if old is not None:
                    if replace_changed:
                        new = tuple(r.get(f) or ("ok" if f == "status" else None) for f in self._SYNCED_FIELDS)
                        if new != old:
                            self._check_energy_source(r.get("energy_source"), r.get("energy_mj"))
                            s.execute(
                                update(MeasurementRow)
                                .where(MeasurementRow.key == r["key"])
                                .values({**dict(zip(self._SYNCED_FIELDS, new, strict=True)), "created_at": utcnow()})
                                .execution_options(synchronize_session=False)
                            )
                            updated += 1
                    continue
                self._check_energy_source(r.get("energy_source"), r.get("energy_mj"))
                d = {f: r.get(f) for f in self._MEASUREMENT_FIELDS}
                d["key"] = r["key"]
                d["config"] = d["config"] or {}
                d["source"] = d["source"] or "probe"
                d["status"] = d["status"] or "ok"
                d["created_at"] = utcnow()
                fresh.append(d)
            if fresh:
                s.execute(MeasurementRow.__table__.insert(), fresh)
                inserted += len(fresh)
        return inserted, updated

    def drop_dataset_rows(self, source: str, variant_ids: Collection[str]) -> tuple[int, int]:
        """Delete, in one transaction, the measurements of ``source`` under ``variant_ids`` (ids a
        dataset no longer uses), then those variants that are dataset archs (no artifact) and have
        no measurement left from any source. Returns (measurements deleted, variants deleted)."""
        ids = sorted(set(variant_ids))
        gone_rows = gone_variants = 0
        used = exists().where(MeasurementRow.variant_id == VariantRow.id)
        with self.session() as s:
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                res = s.execute(
                    delete(MeasurementRow)
                    .where(MeasurementRow.source == source, MeasurementRow.variant_id.in_(part))
                    .execution_options(synchronize_session=False)
                )
                gone_rows += int(res.rowcount or 0)
                res = s.execute(
                    delete(VariantRow)
                    .where(VariantRow.id.in_(part), VariantRow.path == "", ~used)
                    .execution_options(synchronize_session=False)
                )
                gone_variants += int(res.rowcount or 0)
        return gone_rows, gone_variants

    def list_measurements(
        self,
        board: str | None = None,
        variant_id: str | None = None,
        device_class: str | None = None,
        source: str | None = None,
        status: str | None = "ok",
        split_id: int | None = None,
        limit: int | None = None,
        newest: bool = False,
        not_source: str | None = None,
    ) -> list[R.Measurement]:
        """Measurements in insertion order; with ``newest`` and ``limit``, the newest ``limit`` of them
        (still in insertion order)."""
        with self.session() as s:
            q = _filter_measurements(
                select(MeasurementRow).order_by(MeasurementRow.id.desc() if newest else MeasurementRow.id),
                board=board,
                variant_id=variant_id,
                device_class=device_class,
                source=source,
                not_source=not_source,
                status=status,
                split_id=split_id,
            )
            if limit:
                q = q.limit(limit)
            out = [self._measurement(r) for r in s.scalars(q).all()]
            return out[::-1] if newest else out

    def measurement_columns(
        self,
        columns: Sequence[str],
        device_class: str | None = None,
        source: str | None = None,
        status: str | None = "ok",
        whole_model_only: bool = False,
        graph_opt: str | None = None,
    ) -> dict[str, list[Any]]:
        """Only the named columns of the matching measurements, one list per column, in id order.

        The lean read for bulk consumers (predictor training reads ~1M rows): one SELECT of plain
        values, no ORM objects or records. Filters as :meth:`list_measurements`; ``whole_model_only``
        keeps the rows without a split (``split_id IS NULL``); ``graph_opt`` keeps the rows measured
        at that onnxruntime graph optimization level (a row whose config names none was measured at
        the default, ``all``: imported rows, other runtimes, rows from before the option).

        A column named ``stats.FIELD`` reads that number from the row's ``stats`` JSON (None where
        the row has none), e.g. ``stats.p50_per_ref`` of a run with the drift reference."""
        table = MeasurementRow.__table__
        unknown = [c for c in columns if c not in table.c and not _stats_field(c)]
        if unknown:
            raise EdgeatlasError(
                f"measurements have no column {', '.join(unknown)}",
                ErrorCode.INVALID_ARGUMENT,
                hint=f"known: {', '.join(table.c.keys())}, and stats.FIELD for a number in stats",
            )
        sqlite = self.engine.dialect.name == "sqlite"

        def expr(c: str) -> Any:
            if c in table.c:
                return table.c[c]
            # json_extract on SQLite (a JSON number comes back as one), ->> cast on PostgreSQL
            field = _stats_field(c)
            return func.json_extract(table.c.stats, f"$.{field}") if sqlite else table.c.stats[field].as_float()

        q = _filter_measurements(
            select(*(expr(c) for c in columns)).order_by(table.c.id),
            device_class=device_class,
            source=source,
            status=status,
        )
        if whole_model_only:
            q = q.where(table.c.split_id.is_(None))
        if graph_opt is not None:
            # json_extract on SQLite (the fast path below passes bound values as they are, so no
            # JSON-path bind processing), ->> on PostgreSQL
            level = (
                func.json_extract(table.c.config, "$.graph_opt") if sqlite else table.c.config["graph_opt"].as_string()
            )
            q = q.where(or_(level == graph_opt, level.is_(None)) if graph_opt == "all" else level == graph_opt)
        with self.engine.connect() as conn:
            d = conn.dialect
            if d.name == "sqlite" and all(
                table.c[c].type.dialect_impl(d).result_processor(d, None) is None for c in columns if c in table.c
            ):
                # plain values need no result processing: read the DBAPI cursor itself (a million
                # Row objects cost ~2 s more than the tuples under them)
                compiled = q.compile(dialect=d)
                params = compiled.params
                args = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
                cur = conn.connection.dbapi_connection.cursor()
                try:
                    cur.execute(str(compiled), args)
                    rows = cur.fetchall()
                finally:
                    cur.close()
            else:
                rows = conn.execute(q).all()
        if not rows:
            return {c: [] for c in columns}
        return {c: list(v) for c, v in zip(columns, zip(*rows, strict=True), strict=True)}

    def count_measurements(
        self,
        status: str | None = "ok",
        source: str | None = None,
        board: str | None = None,
        variant_id: str | None = None,
        not_source: str | None = None,
    ) -> int:
        with self.session() as s:
            q = _filter_measurements(
                select(func.count(MeasurementRow.id)),
                board=board,
                variant_id=variant_id,
                source=source,
                not_source=not_source,
                status=status,
            )
            return int(s.scalar(q) or 0)

    # ------------------------------------------------------------- predictors
    @staticmethod
    def _predictor(r: PredictorRow) -> R.PredictorVersion:
        return _record(R.PredictorVersion, r)

    def add_predictor(
        self,
        name: str,
        target: str,
        device_class: str | None,
        path: str,
        file_sha256: str,
        data_hash: str,
        metrics: dict[str, Any],
        libs: dict[str, Any],
        status: str = "challenger",
    ) -> R.PredictorVersion:
        with self.session() as s:
            latest = s.scalar(select(func.max(PredictorRow.version)).where(PredictorRow.name == name)) or 0
            if status == "champion":
                s.execute(
                    update(PredictorRow)
                    .where(PredictorRow.name == name, PredictorRow.status == "champion")
                    .values(status="retired")
                )
            row = PredictorRow(
                name=name,
                version=int(latest) + 1,
                target=target,
                device_class=device_class,
                path=str(path),
                file_sha256=file_sha256,
                data_hash=data_hash,
                metrics=dict(metrics),
                libs=dict(libs),
                status=status,
            )
            s.add(row)
            s.flush()
            return self._predictor(row)

    def list_predictors(self, name: str | None = None) -> list[R.PredictorVersion]:
        with self.session() as s:
            q = select(PredictorRow).order_by(PredictorRow.name, PredictorRow.version)
            if name:
                q = q.where(PredictorRow.name == name)
            return [self._predictor(r) for r in s.scalars(q).all()]

    def champion(self, name: str) -> R.PredictorVersion | None:
        with self.session() as s:
            q = (
                select(PredictorRow)
                .where(PredictorRow.name == name, PredictorRow.status == "champion")
                .order_by(PredictorRow.version.desc())
            )
            row = s.scalars(q).first()
            return self._predictor(row) if row else None

    def set_predictor_status(self, id: int, status: str) -> R.PredictorVersion:
        with self.session() as s:
            row = s.get(PredictorRow, int(id))
            if row is None:
                raise EdgeatlasError(
                    f"unknown predictor version id {id}", ErrorCode.NOT_FOUND, hint="see `edgeatlas predictors list`"
                )
            if status == "champion":
                s.execute(
                    update(PredictorRow)
                    .where(PredictorRow.name == row.name, PredictorRow.status == "champion", PredictorRow.id != row.id)
                    .values(status="retired")
                )
            row.status = status
            s.flush()
            return self._predictor(row)

    # --------------------------------------------------------------- feedback
    def add_feedback(
        self,
        app: str,
        kind: str,
        chosen: dict[str, Any],
        other: dict[str, Any] | None = None,
        rating: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> R.Feedback:
        if kind not in ("pairwise", "rating"):
            raise EdgeatlasError(f"feedback kind {kind!r} is not pairwise or rating", ErrorCode.INVALID_ARGUMENT)
        if kind == "pairwise" and other is None:
            raise EdgeatlasError(
                "pairwise feedback needs the candidate it was chosen over",
                ErrorCode.INVALID_ARGUMENT,
                hint="pass --over",
            )
        if kind == "rating" and rating is None:
            raise EdgeatlasError(
                "rating feedback needs a rating", ErrorCode.INVALID_ARGUMENT, hint="pass --rating 1..5"
            )
        with self.session() as s:
            row = FeedbackRow(app=app, kind=kind, chosen=dict(chosen), other=other, rating=rating, context=context)
            s.add(row)
            s.flush()
            return _record(R.Feedback, row)

    def list_feedback(self, app: str | None = None) -> list[R.Feedback]:
        with self.session() as s:
            q = select(FeedbackRow).order_by(FeedbackRow.id)
            if app:
                q = q.where(FeedbackRow.app == app)
            return [_record(R.Feedback, r) for r in s.scalars(q).all()]

    def add_qoe_weights(
        self, app: str, weights: dict[str, float], metrics: dict[str, Any] | None = None
    ) -> R.QoEWeights:
        with self.session() as s:
            latest = s.scalar(select(func.max(QoEWeightsRow.version)).where(QoEWeightsRow.app == app)) or 0
            row = QoEWeightsRow(app=app, version=int(latest) + 1, weights=dict(weights), metrics=dict(metrics or {}))
            s.add(row)
            s.flush()
            return _record(R.QoEWeights, row)

    def latest_qoe_weights(self, app: str) -> R.QoEWeights | None:
        with self.session() as s:
            row = s.scalars(
                select(QoEWeightsRow).where(QoEWeightsRow.app == app).order_by(QoEWeightsRow.version.desc())
            ).first()
            if row is None:
                return None
            return _record(R.QoEWeights, row)

    # -------------------------------------------------------------- job queue
    @staticmethod
    def _job(r: JobRow) -> R.Job:
        return _record(R.Job, r)

    def enqueue_jobs(self, run_id: int | None, jobs: Sequence[tuple[str, dict[str, Any]]], force: bool = False) -> int:
        """Queue jobs keyed by measurement key (``payload["board"]`` names the board that runs it).

        A queued or claimed job is left alone; a done job is re-queued only with ``force``;
        a failed job is re-queued with its attempts reset. Returns how many were queued.
        """
        queued = 0
        with self.session() as s:
            for key, payload in jobs:
                row = s.scalars(select(JobRow).where(JobRow.key == key)).first()
                board, edge = payload.get("board"), payload.get("edge")
                if row is None:
                    s.add(
                        JobRow(
                            run_id=run_id, key=key, board=board, edge=edge, payload=dict(payload), status="queued",
                            attempts=0,
                        )
                    )  # fmt: skip
                    queued += 1
                elif (force and row.status == "done") or row.status == "failed":
                    row.run_id, row.payload, row.board, row.edge, row.status, row.attempts = (
                        run_id,
                        dict(payload),
                        board,
                        edge,
                        "queued",
                        0,
                    )
                    row.lease_owner = row.lease_expires_at = row.error = None
                    queued += 1
        return queued

    def claim_job(
        self, owner: str, lease_s: float = 120.0, max_attempts: int = 3, boards: Sequence[str] | None = None
    ) -> R.Job | None:
        """Claim the next queued job whose boards are not busy, or None.

        A job holds its board, and a split job also its edge board (``payload["edge"]``, where
        its tail runs): a job is claimed only while no claimed job holds either of them, so a
        tail is never timed beside another job on the same edge board.
        PostgreSQL: candidate rows are taken with ``FOR UPDATE SKIP LOCKED``, and a
        transaction-scoped advisory lock per board serialises claims that involve the same board
        (a try-lock: a row whose board another controller is claiming for is skipped, never waited
        on, so two claims cannot deadlock), so across any number of controllers a board runs one
        job at a time. SQLite has a single writer, which gives the same guarantee.
        """
        now = utcnow()
        pg = self.engine.dialect.name == "postgresql"
        with self.session() as s:
            live = (JobRow.status == "claimed", JobRow.lease_expires_at > now)
            busy = union(
                select(JobRow.board).where(*live, JobRow.board.is_not(None)),
                select(JobRow.edge).where(*live, JobRow.edge.is_not(None)),
            ).scalar_subquery()
            q = (
                select(JobRow)
                .where(JobRow.status == "queued", JobRow.attempts < max_attempts)
                .where((JobRow.board.is_(None)) | (JobRow.board.not_in(busy)))
                .where((JobRow.edge.is_(None)) | (JobRow.edge.not_in(busy)))
                .order_by(JobRow.id)
                .limit(8)
                .with_for_update(skip_locked=True)
            )
            if boards:
                q = q.where(JobRow.board.in_(list(boards)))
            for row in s.scalars(q).all():
                held = sorted({b for b in (row.board, row.edge) if b is not None})
                if pg and not all(
                    s.execute(select(func.pg_try_advisory_xact_lock(func.hashtext(b)))).scalar() for b in held
                ):
                    continue  # another controller is claiming for one of these boards: never wait (no deadlock)
                # compare-and-set: only a still-queued job whose boards are still free is taken
                # (on SQLite, where FOR UPDATE does not exist, this UPDATE is the atomic step)
                other = aliased(JobRow)
                cond = [JobRow.id == row.id, JobRow.status == "queued"]
                if held:
                    cond.append(
                        ~exists(
                            select(other.id).where(
                                other.status == "claimed",
                                other.lease_expires_at > utcnow(),
                                or_(other.board.in_(held), other.edge.in_(held)),
                            )
                        )
                    )
                res = s.execute(
                    update(JobRow)
                    .where(*cond)
                    .values(
                        status="claimed",
                        lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_s),
                        attempts=JobRow.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount != 1:
                    continue
                s.flush()
                s.refresh(row)
                return self._job(row)
            return None

    def fail_exhausted_jobs(self, max_attempts: int = 3) -> int:
        """Mark queued jobs that used up their attempts as failed. Returns how many."""
        with self.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.status == "queued", JobRow.attempts >= max_attempts)
                .values(status="failed", error="attempts exhausted")
            )
            return int(res.rowcount or 0)

    def queue_counts(self, run_id: int | None = None) -> dict[str, int]:
        with self.session() as s:
            q = select(JobRow.status, func.count(JobRow.id)).group_by(JobRow.status)
            if run_id is not None:
                q = q.where(JobRow.run_id == run_id)
            return {status: int(n) for status, n in s.execute(q).all()}

    def renew_lease(self, job_id: int, owner: str, lease_s: float = 120.0) -> bool:
        with self.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.status == "claimed")
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
            return bool(res.rowcount)

    def complete_job(
        self, job_id: int, measurement_id: int | None = None, error: str | None = None, owner: str | None = None
    ) -> bool:
        """Mark a claimed job done (or failed). Returns False when the lease was lost to another worker."""
        with self.session() as s:
            q = select(JobRow).where(JobRow.id == job_id).with_for_update()
            row = s.scalars(q).first()
            if row is None or (owner is not None and row.lease_owner != owner) or row.status != "claimed":
                return False
            row.status = "failed" if error else "done"
            row.error = error
            row.measurement_id = measurement_id
            row.lease_expires_at = None
            return True

    def release_expired(self) -> int:
        """Put claimed jobs whose lease has expired back in the queue. Returns how many."""
        with self.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.status == "claimed", JobRow.lease_expires_at < utcnow())
                .values(status="queued", lease_owner=None, lease_expires_at=None)
            )
            return int(res.rowcount or 0)

    def list_jobs(self, run_id: int | None = None, status: str | None = None) -> list[R.Job]:
        with self.session() as s:
            q = select(JobRow).order_by(JobRow.id)
            if run_id is not None:
                q = q.where(JobRow.run_id == run_id)
            if status:
                q = q.where(JobRow.status == status)
            return [self._job(r) for r in s.scalars(q).all()]

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _known(what: str, names: Sequence[str]) -> str:
        if not names:
            return f"there are no {what} yet"
        shown = ", ".join(list(names)[:12])
        return f"known {what}: {shown}" + (" ..." if len(names) > 12 else "")
