"""The store on SQLite and PostgreSQL: migrations, frozen records, idempotency, transactions, the job queue."""

from __future__ import annotations

import dataclasses

import pytest

from registry.errors import EdgeatlasError, ErrorCode
from registry.store import Measurement, Store, Variant, migrate


def _variant(store: Store, vid: str = "a" * 64, **kw) -> Variant:
    base = dict(
        id=vid, family="mobilenet_v2", format="onnx", path=f"/x/{vid}.onnx", params=10, macs=20, size_bytes=30,
        input_shape=(1, 3, 64, 64), precision="fp32",
    )  # fmt: skip
    base.update(kw)
    return store.add_variant(**base)


def test_open_upgrades_to_head(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    assert store.revision() == migrate.head_revision()
    before, after = store.upgrade()  # a second upgrade is a no-op
    assert before == after == migrate.head_revision()


def test_migrations_build_the_schema_the_models_declare(any_db_url: str) -> None:
    """Column types and lengths included (PostgreSQL enforces VARCHAR lengths, SQLite does not)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from registry.store.models import Base

    store = Store.open(any_db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    store.dispose()


def test_records_are_frozen_dataclasses(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    store.upsert_device_class("emu", {"cores": 1})
    b = store.upsert_board("b 1; rm -rf /", "emu", "127.0.0.1", 2222, "device", emulate={"cpu_quota": 0.5}, tags=["x"])
    assert dataclasses.is_dataclass(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.port = 1  # type: ignore[misc]
    assert store.get_board("b 1; rm -rf /").emulate == {"cpu_quota": 0.5}
    assert [c.name for c in store.list_device_classes()] == ["emu"]


def test_variant_content_addressed_noop_and_prefix(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    v1 = _variant(store)
    v2 = _variant(store, params=999)  # same id: no-op, the first row stands
    assert v1 == v2 and v2.params == 10
    assert store.get_variant("aaaa").id == "a" * 64
    with pytest.raises(EdgeatlasError) as e:
        store.get_variant("zzzz")
    assert e.value.code == ErrorCode.NOT_FOUND


def test_accuracy_needs_provenance(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    _variant(store)
    with pytest.raises(EdgeatlasError):
        store.set_accuracy("a" * 64, 0.9, "trust me")
    with pytest.raises(EdgeatlasError):
        store.set_accuracy("a" * 64, 71.8, "cited:torchvision")
    v = store.set_accuracy("a" * 64, 0.9, "measured:shapes")
    assert (v.accuracy, v.accuracy_source) == (0.9, "measured:shapes")


def test_splits_idempotent(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    _variant(store)
    s1 = store.add_split("a" * 64, "cut1", 1, "/h", "h" * 64, "/t", "t" * 64, (1, 8, 4, 4), "float32", 512)
    s2 = store.add_split("a" * 64, "cut1", 1, "/h2", "h" * 64, "/t", "t" * 64, (1, 8, 4, 4), "float32", 512)
    assert s1.id == s2.id
    store.set_split_codecs(s1.id, {"fp16": {"bytes": 256}})
    assert store.list_splits("a" * 64)[0].codecs == {"fp16": {"bytes": 256}}


def test_measurement_idempotent_and_failed_replaced(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    key = Store.measurement_key("a" * 64, "b1", {"runtime": "onnxruntime", "threads": 1})
    assert key == Store.measurement_key("a" * 64, "b1", {"threads": 1, "runtime": "onnxruntime"})
    failed = store.add_measurement(key, "b1", "v", "onnxruntime", {}, "failed", error_code="TIMEOUT", error_message="x")
    assert not store.has_measurement(key)
    ok = store.add_measurement(key, "b1", "v", "onnxruntime", {}, "ok", latency_ms=1.5)
    assert ok.id == failed.id and ok.status == "ok"
    again = store.add_measurement(key, "b1", "v", "onnxruntime", {}, "ok", latency_ms=9.9)
    assert again.latency_ms == 1.5  # an ok result is not overwritten without replace
    assert (
        store.add_measurement(key, "b1", "v", "onnxruntime", {}, "ok", latency_ms=2.0, replace=True).latency_ms == 2.0
    )
    assert len(store.list_measurements(status=None)) == 1
    assert isinstance(store.list_measurements()[0], Measurement)


def test_energy_needs_source(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    with pytest.raises(EdgeatlasError):
        store.add_measurement(
            "k", "b", "v", "onnxruntime", {}, "ok", latency_ms=1, energy_mj=3.0, energy_source="sensor"
        )
    m = store.add_measurement(
        "k", "b", "v", "onnxruntime", {}, "ok", latency_ms=1, energy_mj=3.0, energy_source="estimated:power-model"
    )
    assert m.energy_source == "estimated:power-model"


def test_bulk_insert_skips_existing_and_is_transactional(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    rows = [
        dict(
            key=f"k{i}",
            board="d",
            variant_id=f"nb201:{i}",
            runtime="x",
            config={},
            status="ok",
            latency_ms=float(i),
            source="dataset:t",
        )
        for i in range(10)
    ]
    assert store.add_measurements_bulk(rows) == 10
    assert store.add_measurements_bulk(rows) == 0
    bad = [dict(key="new1", board="d", variant_id="v", runtime="x", config={}, status="ok", latency_ms=1.0),
           dict(key="new2", board="d", variant_id="v", runtime="x", config={}, status="ok", energy_mj=1.0, energy_source="guess")]  # fmt: skip
    with pytest.raises(EdgeatlasError):
        store.add_measurements_bulk(bad)
    assert store.count_measurements() == 10  # the failed batch left nothing behind
    assert store.count_measurements(source="dataset:*") == 10


def test_predictor_versions_and_champion(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    p1 = store.add_predictor(
        "latency/emu", "latency", "emu", "/p1", "s1", "d1", {"mape": 0.1}, {"sklearn": "1"}, status="champion"
    )
    p2 = store.add_predictor("latency/emu", "latency", "emu", "/p2", "s2", "d2", {"mape": 0.05}, {"sklearn": "1"})
    assert (p1.version, p2.version) == (1, 2)
    assert store.champion("latency/emu").id == p1.id
    store.set_predictor_status(p2.id, "champion")
    assert store.champion("latency/emu").id == p2.id
    assert {p.status for p in store.list_predictors("latency/emu")} == {"champion", "retired"}


def test_feedback_and_qoe_weights(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    with pytest.raises(EdgeatlasError):
        store.add_feedback("cam", "pairwise", {"variant": "a"})
    store.add_feedback("cam", "pairwise", {"variant": "a"}, other={"variant": "b"})
    assert len(store.list_feedback("cam")) == 1
    assert store.latest_qoe_weights("cam") is None
    store.add_qoe_weights("cam", {"accuracy": 1.0})
    w = store.add_qoe_weights("cam", {"accuracy": 0.5})
    assert w.version == 2 and store.latest_qoe_weights("cam").weights == {"accuracy": 0.5}


def test_job_queue_claim_lease_release(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    run = store.start_run("bench", {})
    assert store.enqueue_jobs(run, [("j1", {"n": 1}), ("j2", {"n": 2})]) == 2
    assert store.enqueue_jobs(run, [("j1", {"n": 1})]) == 0
    a = store.claim_job("w1", lease_s=60)
    b = store.claim_job("w2", lease_s=-1)  # already expired lease
    assert {a.key, b.key} == {"j1", "j2"}
    assert store.claim_job("w3") is None
    assert store.release_expired() == 1
    c = store.claim_job("w3", lease_s=60)
    assert c.key == b.key and c.attempts == 2
    assert not store.complete_job(b.id, owner="w2")  # the lease moved to w3
    assert store.complete_job(c.id, measurement_id=7, owner="w3")
    assert store.complete_job(a.id, owner="w1")
    assert {j.status for j in store.list_jobs(run)} == {"done"}


def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(EdgeatlasError) as e:
        Store.open("postgresql+psycopg2://nobody@127.0.0.1:1/nothing")
    assert e.value.code == ErrorCode.STORE_ERROR
    assert "\n" not in str(e.value)


def test_a_board_runs_one_job_at_a_time(any_db_url: str) -> None:
    store = Store.open(any_db_url)
    jobs = [(f"k{i}", {"board": b, "n": i}) for i, b in enumerate(["b1", "b1", "b2", "b3"])]
    assert store.enqueue_jobs(None, jobs) == 4
    claimed = [store.claim_job(f"w{i}") for i in range(4)]
    got = [j for j in claimed if j is not None]
    assert sorted(j.board for j in got) == ["b1", "b2", "b3"]  # the second b1 job waits
    first_b1 = next(j for j in got if j.board == "b1")
    assert store.complete_job(first_b1.id, owner=first_b1.lease_owner)
    nxt = store.claim_job("w9")
    assert nxt is not None and nxt.board == "b1"
    assert store.claim_job("w9", boards=["b2"]) is None
    assert store.queue_counts() == {"claimed": 3, "done": 1}


def test_two_stores_claim_concurrently_without_double_claims(any_db_url: str) -> None:
    import threading

    a, b = Store.open(any_db_url), Store.open(any_db_url)
    a.enqueue_jobs(None, [(f"j{i}", {"board": f"b{i % 5}"}) for i in range(40)])
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(store: Store, name: str) -> None:
        while True:
            job = store.claim_job(name, lease_s=60)
            if job is None:
                if not store.queue_counts().get("queued"):
                    return
                continue
            with lock:
                taken.append((job.key, name))
            assert store.complete_job(job.id, owner=name)

    threads = [threading.Thread(target=work, args=(s, n)) for s, n in ((a, "A"), (b, "B"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    keys = [k for k, _ in taken]
    assert sorted(keys) == sorted(f"j{i}" for i in range(40)) and len(set(keys)) == 40
    assert a.queue_counts() == {"done": 40}


def test_a_split_job_holds_its_edge_board_too(any_db_url: str) -> None:
    """A split job's tail runs on its edge board: no other job may run there meanwhile, neither a
    job of that board nor another split job's tail, and the split waits while the edge is busy."""
    store = Store.open(any_db_url)
    jobs = [
        ("s1", {"board": "dev1", "edge": "edge", "kind": "split"}),
        ("m1", {"board": "edge", "kind": "model"}),
        ("s2", {"board": "dev2", "edge": "edge", "kind": "split"}),
        ("m2", {"board": "dev2", "kind": "model"}),
    ]
    assert store.enqueue_jobs(None, jobs) == 4
    a = store.claim_job("w1")
    assert a is not None and (a.key, a.board, a.edge) == ("s1", "dev1", "edge")
    b = store.claim_job("w2")
    assert b is not None and b.key == "m2"  # m1 (on the edge) and s2 (its tail on the edge) wait
    assert store.claim_job("w3") is None
    assert store.complete_job(a.id, owner=a.lease_owner)
    c = store.claim_job("w3")
    assert c is not None and c.key == "m1"  # the edge is free again; s2 still waits for dev2 and the edge
    assert store.claim_job("w4") is None
    assert store.complete_job(b.id, owner=b.lease_owner) and store.complete_job(c.id, owner=c.lease_owner)
    d = store.claim_job("w4")
    assert d is not None and d.key == "s2"


def test_upgrade_to_0003_fills_the_edge_of_queued_split_jobs(any_db_url: str) -> None:
    """Split jobs queued before jobs.edge existed hold their edge board after the upgrade."""
    import json

    import sqlalchemy as sa

    engine = sa.create_engine(any_db_url)
    migrate.upgrade(engine, "0002_job_board")
    with engine.begin() as c:
        for key, payload in (("s1", {"board": "dev1", "edge": "edge", "kind": "split"}), ("m1", {"board": "edge"})):
            c.execute(
                sa.text(
                    "INSERT INTO jobs (key, board, payload, status, attempts, updated_at) "
                    "VALUES (:k, :b, :p, 'queued', 0, CURRENT_TIMESTAMP)"
                ),
                {"k": key, "b": payload["board"], "p": json.dumps(payload)},
            )
    engine.dispose()
    store = Store.open(any_db_url)  # upgrades to head
    a = store.claim_job("w1")
    assert a is not None and (a.key, a.edge) == ("s1", "edge")
    assert store.claim_job("w2") is None  # m1 runs on the edge board: it waits for the split


def test_bare_postgresql_url_uses_the_installed_driver(pg_url: str) -> None:
    """`postgresql://` (what the --help examples show) opens with psycopg2; SQLAlchemy 2.1 alone
    would ask for psycopg 3, which is not installed."""

    bare = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    store = Store.open(bare)
    assert store.engine.dialect.name == "postgresql" and store.list_boards() == []


def test_with_installed_driver_rewrites_only_bare_postgresql_urls() -> None:
    from registry.store.api import with_installed_driver

    assert with_installed_driver("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"  # installed with [dev]
    assert with_installed_driver("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_installed_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_measurement_columns_filter_by_graph_level(any_db_url: str) -> None:
    """A row whose config names no onnxruntime graph level was measured at the default ('all')."""
    store = Store.open(any_db_url)
    configs = {
        "none": {},
        "old": {"kind": "model", "threads": 1},
        "all": {"kind": "model", "graph_opt": "all"},
        "ext": {"kind": "model", "graph_opt": "extended"},
        "basic": {"kind": "model", "graph_opt": "basic"},
    }
    store.add_measurements_bulk(
        [
            {"key": k, "board": "b", "variant_id": "v", "runtime": "onnxruntime", "config": c, "status": "ok"}
            for k, c in configs.items()
        ]
    )

    def keys(level: str | None) -> list[str]:
        return sorted(store.measurement_columns(("key",), graph_opt=level)["key"])

    assert keys(None) == sorted(configs)
    assert keys("all") == ["all", "none", "old"]
    assert keys("extended") == ["ext"] and keys("basic") == ["basic"] and keys("disabled") == []
    store.dispose()


def test_measurement_columns_read_numbers_from_stats(any_db_url: str) -> None:
    """``stats.FIELD`` reads a number out of the stats JSON (the drift reference's ratio), None where
    a row has no stats or no such field; anything else is refused with the names it knows."""
    store = Store.open(any_db_url)
    stats = {"ref": {"p50_ms": 2.0, "p50_per_ref": 2.5, "ref_p50_ms": 0.8}, "plain": {"p50_ms": 3.0}, "none": None}
    store.add_measurements_bulk(
        [
            {
                "key": k,
                "board": "b",
                "variant_id": "v",
                "runtime": "onnxruntime",
                "config": {},
                "status": "ok",
                "stats": s,
            }
            for k, s in stats.items()
        ]
    )
    cols = store.measurement_columns(("key", "stats.p50_per_ref", "stats.ref_p50_ms"))
    got = dict(zip(cols["key"], zip(cols["stats.p50_per_ref"], cols["stats.ref_p50_ms"], strict=True), strict=True))
    assert got == {"ref": (2.5, 0.8), "plain": (None, None), "none": (None, None)}
    for bad in ("stats.", "stats.a-b", "config.graph_opt"):
        with pytest.raises(EdgeatlasError, match=f"no column {bad}") as e:
            store.measurement_columns(("key", bad))
        assert "stats.FIELD" in e.value.hint
    store.dispose()
