"""The HTTP API (FastAPI, under /v1) over the same library functions as the CLI.

Read endpoints are open: GET /v1/health, /v1/devices, /v1/variants, /v1/predictors, and the
queries POST /v1/recommend and /v1/decision-table. Write endpoints (POST /v1/feedback,
POST /v1/measurements) need ``Authorization: Bearer <token>`` matching the server's
EDGEATLAS_API_TOKEN (401 otherwise; a server without the variable refuses every write).

Errors: an EdgeatlasError becomes ``{"error": {code, message, hint[, details]}}`` with its
HTTP status (INFEASIBLE -> 409 with the explanation in ``details``); a request that fails
validation is a 422 naming the field.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import EdgeatlasError, ErrorCode

TOKEN_ENV = "EDGEATLAS_API_TOKEN"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceQuery(_Body):
    device: str | None = Field(None, description="a board or device class in the store")
    device_facts: dict[str, Any] | None = Field(None, description="facts of a device nobody measured (zero-shot)")
    probe_latencies: dict[str, float] | None = Field(None, description="{probe variant id: ms} (k-shot)")
    edge: str
    prefs: dict[str, Any] = Field(description="the prefs.toml structure as JSON")
    app: str | None = None
    predictor: str = "default"


class RecommendRequest(DeviceQuery):
    bandwidth_mbit: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    top_k: int = Field(5, ge=1, le=1000)


class DecisionTableRequest(DeviceQuery):
    bandwidths_mbit: list[float] = Field(min_length=1)
    rtts_ms: list[float] = Field(min_length=1)


class FeedbackRequest(_Body):
    app: str = Field(min_length=1)
    chosen: dict[str, Any] = Field(description="a candidate as in a recommend answer (with predicted values)")
    other: dict[str, Any] | None = None
    rating: float | None = Field(None, ge=1, le=5)
    context: dict[str, Any] | None = None


class MeasurementIn(_Body):
    artifact_sha256: str = Field(
        min_length=16, description="sha256 of the measured artifact (part of the idempotency key)"
    )
    board: str
    variant_id: str
    runtime: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: str = "ok"
    latency_ms: float | None = Field(None, gt=0)
    stats: dict[str, Any] | None = None
    energy_mj: float | None = Field(None, ge=0)
    energy_source: str | None = None
    system: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    split_id: int | None = None
    device_class: str | None = None


class MeasurementsRequest(_Body):
    measurements: list[MeasurementIn] = Field(min_length=1)


def _normalise_graph_opt(config: dict[str, Any], runtime: str, i: int) -> dict[str, Any]:
    """A posted measurement's onnxruntime graph level, as the fleet writes it: a known level, and
    none for the default ``all`` (so the same measurement gets the same key either way)."""
    from probes.agent import graph_opt_problem

    if "graph_opt" not in config:
        return config
    level = "all" if config["graph_opt"] is None else config["graph_opt"]
    problem = graph_opt_problem(level, runtime)
    if problem:
        raise EdgeatlasError(
            f"measurements[{i}].config: {problem}",
            ErrorCode.INVALID_ARGUMENT,
            hint="leave graph_opt out for the default level, 'all'",
        )
    return {k: v for k, v in config.items() if k != "graph_opt"} if level == "all" else config


def require_token(authorization: str | None = Header(None)) -> None:
    expected = os.environ.get(TOKEN_ENV)
    if not expected:
        raise EdgeatlasError(
            "this server accepts no writes: EDGEATLAS_API_TOKEN is not set",
            ErrorCode.UNAUTHORIZED,
            hint="start the server with EDGEATLAS_API_TOKEN=<secret> and send 'Authorization: Bearer <secret>'",
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise EdgeatlasError(
            "missing or wrong bearer token",
            ErrorCode.UNAUTHORIZED,
            hint="send 'Authorization: Bearer <EDGEATLAS_API_TOKEN>'",
        )


def create_app(db_url: str | None = None) -> FastAPI:
    from registry import __version__

    app = FastAPI(title="edgeatlas", version=__version__, description=__doc__)
    state: dict[str, Any] = {}

    def store():
        if "store" not in state:
            from registry.store import Store

            state["store"] = Store.open(db_url or os.environ.get("EDGEATLAS_DB"))
        return state["store"]

    @app.exception_handler(EdgeatlasError)
    async def _edgeatlas_error(_: Request, exc: EdgeatlasError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.code == ErrorCode.UNAUTHORIZED else None
        return JSONResponse(status_code=exc.http_status, content={"error": exc.to_dict()}, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        field = ".".join(loc) or "(body)"
        if first.get("type") == "json_invalid":  # loc holds the character position, not a field
            field = f"(body, character {loc[0]})" if loc else "(body)"
        return JSONResponse(
            status_code=422,
            content={
                "error": {
                    "code": ErrorCode.INVALID_ARGUMENT.value,
                    "message": f"field '{field}': {first.get('msg')}",
                    "hint": "see /docs for the request schema",
                    "field": field,
                    "errors": [
                        {"field": ".".join(str(x) for x in e.get("loc", ()) if x != "body"), "message": e.get("msg")}
                        for e in errs
                    ],
                }
            },
        )

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        s = store()
        return {"status": "ok", "version": __version__, "schema": s.revision(), "variants": len(s.list_variants())}

    @app.get("/v1/devices")
    def devices() -> dict[str, Any]:
        from registry.commands.common import to_jsonable

        s = store()
        return {"classes": to_jsonable(s.list_device_classes()), "boards": to_jsonable(s.list_boards())}

    @app.get("/v1/variants")
    def variants(
        family: str | None = None,
        limit: int | None = Query(None, ge=1, description="at most this many (default: all)"),
        offset: int = Query(0, ge=0, description="skip this many first (id order)"),
    ) -> list[dict[str, Any]]:
        from registry.commands.common import to_jsonable

        rows = store().list_variants(family=family)
        return to_jsonable(rows[offset : None if limit is None else offset + limit])

    @app.get("/v1/predictors")
    def predictors(name: str | None = None) -> list[dict[str, Any]]:
        from registry.commands.common import to_jsonable

        return to_jsonable(store().list_predictors(name=name))

    @app.post("/v1/recommend")
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        from registry.selector.prefs import prefs_from_dict
        from registry.selector.recommend import recommend as run

        ans = run(
            store(),
            device=req.device,
            device_facts=req.device_facts,
            probe_latencies=req.probe_latencies,
            edge=req.edge,
            bandwidth_mbit=req.bandwidth_mbit,
            rtt_ms=req.rtt_ms,
            prefs=prefs_from_dict(req.prefs, source="request.prefs"),
            app=req.app,
            top_k=req.top_k,
            predictor=req.predictor,
            raise_infeasible=True,
        )
        return ans.to_dict()

    @app.post("/v1/decision-table")
    def decision_table(req: DecisionTableRequest) -> dict[str, Any]:
        from registry.selector.prefs import prefs_from_dict
        from registry.selector.recommend import decision_table_for

        return decision_table_for(
            store(),
            device=req.device,
            device_facts=req.device_facts,
            probe_latencies=req.probe_latencies,
            edge=req.edge,
            bandwidths_mbit=req.bandwidths_mbit,
            rtts_ms=req.rtts_ms,
            prefs=prefs_from_dict(req.prefs, source="request.prefs"),
            app=req.app,
            predictor=req.predictor,
        ).to_dict()

    @app.post("/v1/feedback", status_code=201, dependencies=[Depends(require_token)])
    def feedback(req: FeedbackRequest) -> dict[str, Any]:
        from registry.commands.common import to_jsonable
        from registry.selector.feedback import record_feedback

        return to_jsonable(record_feedback(store(), req.app, req.chosen, req.other, req.rating, req.context))

    @app.post("/v1/measurements", status_code=201, dependencies=[Depends(require_token)])
    def measurements(req: MeasurementsRequest) -> dict[str, Any]:
        from registry.store import Store

        s = store()
        boards = {b.name: b for b in s.list_boards()}
        ids = []
        for i, m in enumerate(req.measurements):
            if m.board not in boards and m.device_class is None:
                raise EdgeatlasError(
                    f"measurements[{i}].board {m.board!r} is not a known board and no device_class is given",
                    ErrorCode.INVALID_ARGUMENT,
                    hint="register the board (devices.toml + `fleet check`) or send device_class",
                )
            if m.status == "ok" and m.latency_ms is None:
                raise EdgeatlasError(
                    f"measurements[{i}].latency_ms is required when status is ok",
                    ErrorCode.INVALID_ARGUMENT,
                    hint="send latency_ms or status='error'",
                )
            config = _normalise_graph_opt(m.config, m.runtime, i)
            key = Store.measurement_key(m.artifact_sha256, m.board, config)
            rec = s.add_measurement(
                key,
                m.board,
                m.variant_id,
                m.runtime,
                config,
                m.status,
                latency_ms=m.latency_ms,
                stats=m.stats,
                energy_mj=m.energy_mj,
                energy_source=m.energy_source,
                system=m.system,
                error_code=m.error_code,
                error_message=m.error_message,
                split_id=m.split_id,
                device_class=m.device_class or boards[m.board].class_name,
                source="api",
            )
            ids.append({"id": rec.id, "key": rec.key})
        return {"stored": len(ids), "measurements": ids}

    return app


def __getattr__(name: str) -> Any:  # `uvicorn registry.api:app` works without opening a store at import
    if name == "app":
        return create_app()
    raise AttributeError(name)
