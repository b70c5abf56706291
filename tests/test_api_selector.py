"""The HTTP API over the real app (FastAPI TestClient) and a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.api import create_app
from registry.selector.prefs import load_prefs

REPO = Path(__file__).resolve().parents[1]


def _prefs(name: str) -> dict:
    return load_prefs(REPO / "examples" / "prefs" / f"{name}.toml").model_dump()


@pytest.fixture
def client(selector_store: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("EDGEATLAS_API_TOKEN", "s3cret-token")
    return TestClient(create_app(selector_store))


AUTH = {"Authorization": "Bearer s3cret-token"}


def test_reads(client: TestClient) -> None:
    h = client.get("/v1/health").json()
    assert h["status"] == "ok" and h["variants"] == 3
    d = client.get("/v1/devices").json()
    assert {b["name"] for b in d["boards"]} == {"dev-1", "edge-1"}
    v = client.get("/v1/variants").json()
    assert {x["id"] for x in v} == {"mlp-w16", "mlp-w128", "mlp-w1024"}
    page = [x["id"] for x in client.get("/v1/variants", params={"limit": 2}).json()]
    rest = [x["id"] for x in client.get("/v1/variants", params={"limit": 2, "offset": 2}).json()]
    assert len(page) == 2 and len(rest) == 1 and set(page + rest) == {x["id"] for x in v}
    assert client.get("/v1/variants", params={"limit": 0}).status_code == 422
    assert client.get("/v1/predictors").status_code == 200


def test_recommend_and_errors(client: TestClient) -> None:
    body = {
        "device": "dev-1",
        "edge": "edge-1",
        "bandwidth_mbit": 20,
        "rtt_ms": 10,
        "prefs": _prefs("realtime_camera"),
        "top_k": 2,
    }
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["recommendations"]) == 2 and data["recommendations"][0]["predicted"]["latency_ms"] > 0
    # validation: 422 naming the field
    r = client.post("/v1/recommend", json={**body, "bandwidth_mbit": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "bandwidth_mbit"
    r = client.post("/v1/recommend", json={k: v for k, v in body.items() if k != "edge"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "edge"
    r = client.post("/v1/recommend", content=b'{"device": "dev-1",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("(body, character")
    bad = json.loads(json.dumps(body))
    bad["prefs"]["constraints"]["min_accuracy"] = 72
    r = client.post("/v1/recommend", json=bad)
    assert r.status_code == 422 and "constraints.min_accuracy" in r.json()["error"]["message"]
    # device facts are checked against the devices.toml class schema, as a --device-facts file is
    r = client.post(
        "/v1/recommend", json={**body, "device_facts": {"cores": True, "freq_mhz": 1800, "memory_mb": 4096}}
    )
    err = r.json()["error"]
    assert (
        r.status_code == 422 and err["code"] == "INVALID_CONFIG" and "device facts: field 'cores'" in err["message"]
    ), r.text
    r = client.post(
        "/v1/recommend",
        json={**body, "device_facts": {"cores": 4, "freq_mhz": 1800, "memory_mb": 4096, "acclerator": "npu"}},
    )
    assert r.status_code == 422 and "'acclerator'" in r.json()["error"]["message"], r.text
    assert "accelerator" in r.json()["error"]["hint"]  # did you mean
    # over a known device, a partial override is checked field by field, nothing is required
    r = client.post("/v1/recommend", json={**body, "device_facts": {"cpu_quota": 0.5}})
    assert r.status_code == 200, r.text
    r = client.post("/v1/recommend", json={**body, "device_facts": {"cpu_quota": -1}})
    assert r.status_code == 422 and "'cpu_quota'" in r.json()["error"]["message"], r.text
    # unknown device: 404
    r = client.post("/v1/recommend", json={**body, "device": "ghost"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    # impossible constraints: 409 with the explanation
    imp = json.loads(json.dumps(body))
    imp["prefs"]["constraints"]["max_latency_ms"] = 1e-4
    r = client.post("/v1/recommend", json=imp)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "INFEASIBLE" and err["details"]["rules_out_all"] == "max_latency_ms"
    assert "max_latency_ms" in err["details"]["needs"]
    # decision table
    r = client.post(
        "/v1/decision-table",
        json={
            "device": "dev-1",
            "edge": "edge-1",
            "prefs": _prefs("realtime_camera"),
            "bandwidths_mbit": [0.01, 100],
            "rtts_ms": [5],
        },
    )
    assert r.status_code == 200 and r.json()["rows"]


def test_writes_need_the_token(client: TestClient) -> None:
    cand = {
        "key": "mlp-w16/all-on-device/none",
        "predicted": {"latency_ms": 1.0, "device_energy_mj": 5.0, "accuracy": 0.4},
    }
    other = {
        "key": "mlp-w1024/all-on-edge/fp32",
        "predicted": {"latency_ms": 9.0, "device_energy_mj": 1.0, "accuracy": 0.8},
    }
    fb = {"app": "api-app", "chosen": cand, "other": other}
    assert client.post("/v1/feedback", json=fb).status_code == 401
    assert client.post("/v1/feedback", json=fb, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.post("/v1/feedback", json=fb, headers=AUTH)
    assert r.status_code == 201 and r.json()["kind"] == "pairwise"
    r = client.post("/v1/feedback", json={"app": "api-app", "chosen": cand, "rating": 7}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["field"] == "rating"

    m = {
        "artifact_sha256": "ab" * 32,
        "board": "dev-1",
        "variant_id": "mlp-w16",
        "runtime": "onnxruntime",
        "config": {"kind": "model", "threads": 1},
        "latency_ms": 1.25,
    }
    assert client.post("/v1/measurements", json={"measurements": [m]}).status_code == 401
    r = client.post("/v1/measurements", json={"measurements": [m]}, headers=AUTH)
    assert r.status_code == 201 and r.json()["stored"] == 1
    r = client.post("/v1/measurements", json={"measurements": [{**m, "latency_ms": None}]}, headers=AUTH)
    assert r.status_code == 422 and "latency_ms" in r.json()["error"]["message"]
    # the graph level: 'all' spelled out is the same measurement (the fleet leaves it out), a
    # typo or a level on another runtime is refused with the levels named
    key = client.post("/v1/measurements", json={"measurements": [m]}, headers=AUTH).json()["measurements"][0]["key"]
    same = {**m, "config": {**m["config"], "graph_opt": "all"}}
    r = client.post("/v1/measurements", json={"measurements": [same]}, headers=AUTH)
    assert r.status_code == 201 and r.json()["measurements"][0]["key"] == key
    ext = {**m, "config": {**m["config"], "graph_opt": "extended"}}
    r = client.post("/v1/measurements", json={"measurements": [ext]}, headers=AUTH)
    assert r.status_code == 201 and r.json()["measurements"][0]["key"] != key
    for bad, words in [
        ({**m, "config": {"graph_opt": "ext"}}, ["'ext'", "extended"]),
        ({**m, "runtime": "litert", "config": {"graph_opt": "basic"}}, ["onnxruntime only"]),
    ]:
        r = client.post("/v1/measurements", json={"measurements": [bad]}, headers=AUTH)
        e = r.json()["error"]
        assert r.status_code == 422 and all(w in e["message"] + e["hint"] for w in words), e


def test_no_token_configured_refuses_writes(selector_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEATLAS_API_TOKEN", raising=False)
    c = TestClient(create_app(selector_store))
    r = c.post("/v1/feedback", json={"app": "a", "chosen": {}}, headers=AUTH)
    assert r.status_code == 401 and "EDGEATLAS_API_TOKEN" in r.json()["error"]["message"]


def test_serve_over_real_http(selector_store: str, tmp_path: Path) -> None:
    """`edgeatlas serve` (uvicorn) on a free loopback port, queried with httpx."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EDGEATLAS_API_TOKEN": "tok", "EDGEATLAS_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            selector_store,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.poll() is not None else "server did not start"
                    ) from None
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["variants"] == 3
        r = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", json={"app": "x", "chosen": {}}, timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    finally:
        proc.terminate()
        proc.wait(10)
