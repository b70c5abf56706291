"""The board agent, run as a real subprocess on real onnxruntime (no sshd needed here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probes import agent
from probes.protocol import RESULT_MARKER, ErrorCode, Job, MeasureProtocol, Result, parse_marked

pytest_plugins = ["fixtures_probes"]

AGENT = Path(agent.__file__)
FAST = MeasureProtocol(warmup_runs=1, warmup_s=0.02, repeat=3, number=5, min_repeat_ms=10.0)


def run_agent(job: dict, cwd: Path, python: str = sys.executable, timeout: float = 120) -> dict:
    p = subprocess.run(
        [python, str(AGENT)], input=json.dumps(job), capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert p.returncode == 0, p.stderr
    d = parse_marked(p.stdout)
    assert d is not None, p.stdout + p.stderr
    return d


def test_model_job_reports_the_protocol_stats_and_system(tiny_models, tmp_path):
    job = Job(job_id="j1", model=str(tiny_models["full"]), threads=1, protocol=FAST, power_model={"active_w": 2.0})
    d = run_agent(job.to_dict(), tmp_path)
    r = Result.from_agent(d)
    assert r.ok, r.error_message
    s = r.stats
    assert s["n"] >= 15 and len(s["session_medians_ms"]) == 3 and all(n >= 5 for n in s["session_n"])
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert r.latency_ms == s["p50_ms"] > 0
    assert d["warmup"]["warmup_runs_done"] >= 1 and d["warmup"]["warmup_s_done"] >= 0.02
    # no sensor on this machine: energy is estimated from the declared power model and says so
    assert r.energy_source == "estimated:power-model-active_w"
    assert r.energy_mj == pytest.approx(2.0 * s["mean_ms"])
    assert r.runtime_version and d["threads"] == 1 and d["pinned_cpus"]
    for snap in (d["system_before"], d["system_after"]):
        assert {"freq_mhz", "loadavg", "temperature_c", "peak_rss_mb", "mem_available_mb"} <= set(snap)
    assert d["system_after"]["peak_rss_mb"] > 10


def test_litert_missing_model_and_bad_jobs_are_results_not_crashes(tiny_models, tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"not a model")
    cases = [
        ({"job_id": "m", "model": str(tmp_path / "nope.onnx")}, ErrorCode.MODEL_LOAD_ERROR),
        ({"job_id": "c", "model": str(bad), "protocol": FAST.to_dict()}, ErrorCode.MODEL_LOAD_ERROR),
        ({"job_id": "k", "model": str(tiny_models["full"]), "kind": "weird"}, ErrorCode.BAD_JOB),
        ({"job_id": "r", "model": str(tiny_models["full"]), "runtime": "tvm"}, ErrorCode.BAD_JOB),
    ]
    for job, code in cases:
        d = run_agent(job, tmp_path)
        assert d["status"] == "error" and d["error_code"] == code, d
        assert d["error_message"]
    p = subprocess.run([sys.executable, str(AGENT)], input="{not json", capture_output=True, text=True)
    assert parse_marked(p.stdout)["error_code"] == ErrorCode.BAD_JOB


def test_graph_opt_sets_the_onnxruntime_level_and_is_reported(tiny_models, tmp_path):
    import onnxruntime as ort

    for name, level in agent.GRAPH_OPT_LEVELS.items():
        if not hasattr(ort.GraphOptimizationLevel, level):
            continue  # an older onnxruntime without this level (the job then fails with RUNTIME_MISSING)
        runner = agent._Runner("onnxruntime", str(tiny_models["full"]), 1, graph_opt=name)
        got = runner.sess.get_session_options().graph_optimization_level
        assert got == getattr(ort.GraphOptimizationLevel, level), name
        assert runner.run() is not None
    job = Job(job_id="g", model=str(tiny_models["full"]), protocol=FAST, graph_opt="extended")
    d = run_agent(job.to_dict(), tmp_path)
    assert d["status"] == "ok" and d["graph_opt"] == "extended", d
    assert (
        run_agent(Job(job_id="h", model=str(tiny_models["full"]), protocol=FAST).to_dict(), tmp_path)["graph_opt"]
        == "all"
    )
    for job, words in [
        ({"job_id": "u", "model": str(tiny_models["full"]), "graph_opt": "max"}, ["unknown graph_opt", "extended"]),
        (
            {"job_id": "l", "model": str(tiny_models["full"]), "runtime": "litert", "graph_opt": "extended"},
            ["onnxruntime only", "litert"],
        ),
    ]:
        d = run_agent(job, tmp_path)
        assert d["status"] == "error" and d["error_code"] == ErrorCode.BAD_JOB, d
        assert all(w in d["error_message"] for w in words), d["error_message"]


def test_a_level_the_boards_onnxruntime_lacks_is_a_clear_error(tiny_models, monkeypatch):
    # stands in for an older onnxruntime on the board (ORT_ENABLE_LAYOUT is recent): a level name
    # whose enum member this onnxruntime does not have
    monkeypatch.setitem(agent.GRAPH_OPT_LEVELS, "future", "ORT_ENABLE_NOT_YET")
    with pytest.raises(agent.JobError) as e:
        agent._Runner("onnxruntime", str(tiny_models["full"]), 1, graph_opt="future")
    assert e.value.code == ErrorCode.RUNTIME_MISSING
    assert "'future'" in str(e.value) and "upgrade onnxruntime on the board" in str(e.value)


def test_timeout_is_a_result(tiny_models, tmp_path):
    slow = MeasureProtocol(warmup_runs=1, warmup_s=0.0, repeat=50, number=5, min_repeat_ms=200.0)
    d = run_agent(Job(job_id="t", model=str(tiny_models["full"]), protocol=slow, timeout_s=0.5).to_dict(), tmp_path)
    assert d["error_code"] == ErrorCode.TIMEOUT and "0.5" in d["error_message"]


def test_runtime_missing_on_a_python_without_onnxruntime(tiny_models, tmp_path):
    if subprocess.run(["/usr/bin/python3", "-c", "import onnxruntime"], capture_output=True).returncode == 0:
        pytest.skip("the system python has onnxruntime")
    d = run_agent(Job(job_id="x", model=str(tiny_models["full"])).to_dict(), tmp_path, python="/usr/bin/python3")
    assert d["error_code"] == ErrorCode.RUNTIME_MISSING and "onnxruntime" in d["error_message"]


def test_split_head_then_tail_with_codecs(tiny_models, tmp_path):
    head = run_agent(
        Job(
            job_id="h",
            model=str(tiny_models["head"]),
            kind="split_head",
            protocol=FAST,
            codecs=("fp32", "fp16", "int8"),
            payload_dir=str(tmp_path / "pay"),
        ).to_dict(),
        tmp_path,
    )
    assert head["status"] == "ok", head["error_message"]
    c = head["codecs"]
    assert c["fp32"]["payload_bytes"] > c["fp16"]["payload_bytes"] > c["int8"]["payload_bytes"]
    assert c["fp32"]["max_abs_error"] == 0.0 and c["int8"]["max_abs_error"] < 0.05
    tail = run_agent(
        Job(
            job_id="t",
            model=str(tiny_models["tail"]),
            kind="split_tail",
            protocol=FAST,
            payloads={k: v["payload_path"] for k, v in c.items()},
        ).to_dict(),
        tmp_path,
    )
    assert tail["status"] == "ok", tail["error_message"]
    assert set(tail["codecs"]) == {"fp32", "fp16", "int8"} and tail["codecs"]["int8"]["decode"]["n"] >= 5


def test_codecs_round_trip_and_pca(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 4, 4)).astype(np.float32)
    for codec, tol in (("fp32", 0), ("fp16", 1e-2), ("int8", 0.05)):
        y = agent.decode_payload(agent.encode_payload(x, codec))
        assert y.shape == x.shape and np.abs(y - x).max() <= tol
    # a full-rank PCA basis reconstructs (up to fp16 rounding of the projections)
    basis = tmp_path / "basis.npz"
    np.savez(basis, components=np.eye(8, dtype=np.float32), mean=np.zeros(8, dtype=np.float32))
    blob = agent.encode_payload(x, "pca", {"basis": str(basis)})
    assert np.abs(agent.decode_payload(blob, {"basis": str(basis)}) - x).max() < 1e-2
    # the board's standalone copy writes exactly the zoo's bytes
    from registry.zoo import codecs as zoo

    pb = zoo.PcaBasis.from_bytes(basis.read_bytes())
    for codec in ("fp32", "fp16", "int8", "pca"):
        ours = agent.encode_payload(x, codec, {"basis": str(basis)})
        assert ours == zoo.encode(x, codec, pb)
        assert np.array_equal(agent.decode_payload(ours, {"basis": str(basis)}), zoo.decode(ours, pb))
    with pytest.raises(agent.JobError) as e:
        agent.encode_payload(x, "zip")
    assert e.value.code == ErrorCode.CODEC_ERROR


def test_stats_and_job_round_trip():
    s = agent.summarize([1.0, 2.0, 3.0, 4.0], [[1.0, 2.0], [3.0, 4.0]])
    assert s["p50_ms"] == 2.5 and s["min_ms"] == 1.0 and s["session_medians_ms"] == [1.5, 3.5]
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    j = Job(job_id="a b", model="/m x.onnx", cpus=(0,), codecs=("fp16",), graph_opt="extended")
    assert Job.from_json(j.to_json()) == j
    r = Result.failure("a", ErrorCode.TIMEOUT, "slow")
    assert Result.from_json(r.to_json()) == r
    assert RESULT_MARKER.endswith(" ")


def test_facts(tmp_path):
    p = subprocess.run([sys.executable, str(AGENT), "--facts"], capture_output=True, text=True, timeout=60)
    facts = parse_marked(p.stdout, agent.FACTS_MARKER)
    assert facts["runtimes"]["onnxruntime"] and facts["cores_online"] >= 1 and facts["cpu_model"]
    assert facts["energy_backends"] == []  # this machine has no sensor


def test_serve_answers_each_job_line_in_one_process(tiny_models, tmp_path):
    """`agent.py --serve`: a hello, then one marked result per job line (a bad line is a BAD_JOB
    result, not the end); the runtime stays loaded; pinning and peak RSS do not leak between jobs."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    jobs = [
        Job(job_id="s1", model=str(tiny_models["full"]), protocol=FAST, cpus=(allowed[-1],)).to_json(),
        "{not json",
        "",
        Job(job_id="s2", model=str(tiny_models["full"]), protocol=FAST, threads=len(allowed)).to_json(),
        Job(job_id="s3", model=str(tmp_path / "missing.onnx"), protocol=FAST).to_json(),
    ]
    p = subprocess.run(
        [sys.executable, str(AGENT), "--serve"],
        input="\n".join(jobs) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith(agent.SERVE_MARKER), lines  # only marked lines on the result channel
    hello = json.loads(lines[0][len(agent.SERVE_MARKER) :])
    assert hello["pid"] > 0 and hello["protocol_version"] == agent.PROTOCOL_VERSION
    results = [json.loads(x[len(RESULT_MARKER) :]) for x in lines[1:]]
    assert all(x.startswith(RESULT_MARKER) for x in lines[1:]) and len(results) == 4
    s1, bad, s2, s3 = results
    assert s1["job_id"] == "s1" and s1["status"] == "ok" and s1["pinned_cpus"] == [allowed[-1]]
    assert bad["error_code"] == ErrorCode.BAD_JOB and "could not read the job" in bad["error_message"]
    assert s2["status"] == "ok" and s2["stats"]["n"] >= 15
    # the job pinned to one cpu does not leave the next job (which asks for all) pinned to it
    assert s2["pinned_cpus"] == allowed and s2["peak_rss_scope"] == "job"
    assert s3["error_code"] == ErrorCode.MODEL_LOAD_ERROR
    for r in (s1, s2):
        assert r["system_after"]["peak_rss_mb"] > 10


def test_litert_job_on_a_real_tflite(tiny_tflite, tmp_path):
    """ai-edge-litert runs a .tflite converted by litert-torch through the same protocol as onnxruntime."""
    pytest.importorskip("ai_edge_litert")
    lite = run_agent(
        Job(job_id="l", model=str(tiny_tflite["tflite"]), runtime="litert", protocol=FAST).to_dict(), tmp_path
    )
    assert lite["status"] == "ok", lite["error_message"]
    assert lite["runtime"] == "litert" and lite["runtime_version"]
    s = lite["stats"]
    assert s["n"] >= 15 and len(s["session_medians_ms"]) == 3 and 0 < s["p50_ms"] < 1000
    onnx = run_agent(Job(job_id="o", model=str(tiny_tflite["onnx"]), protocol=FAST).to_dict(), tmp_path)
    assert onnx["status"] == "ok" and onnx["runtime"] == "onnxruntime"
    # a .tflite given to onnxruntime is a model-load error, not a crash
    wrong = run_agent(Job(job_id="w", model=str(tiny_tflite["tflite"]), protocol=FAST).to_dict(), tmp_path)
    assert wrong["error_code"] == ErrorCode.MODEL_LOAD_ERROR


def test_drift_reference_is_interleaved_and_reported_apart(tiny_models, tmp_path):
    """--drift-ref: the agent runs the reference model between the model's runs and reports its
    p50 and the model's p50 in its units; the model's own samples hold no reference run."""
    from probes.drift import reference_model

    ref, _ = reference_model(tmp_path)
    proto = MeasureProtocol(warmup_runs=1, warmup_s=0.02, repeat=3, number=5, min_repeat_ms=120.0)
    job = Job(job_id="d", model=str(tiny_models["full"]), protocol=proto, drift_ref=str(ref))
    d = run_agent(job.to_dict(), tmp_path)
    assert d["status"] == "ok", d
    s = d["stats"]
    # 360 ms of timed sessions, a 10 ms chunk after every 50 ms of the model: several chunks
    assert s["ref_n"] >= 5 and s["ref_p50_ms"] > 0
    assert s["p50_per_ref"] == pytest.approx(s["p50_ms"] / s["ref_p50_ms"])
    assert 0 < s["ref_min_ms"] <= s["ref_p50_ms"] and s["min_per_ref"] == pytest.approx(s["min_ms"] / s["ref_min_ms"])
    assert s["n"] == sum(s["session_n"])  # the model's samples are its own runs only
    plain = run_agent(Job(job_id="p", model=str(tiny_models["full"]), protocol=FAST).to_dict(), tmp_path)
    assert not {"ref_p50_ms", "p50_per_ref", "ref_min_ms", "min_per_ref"} & set(plain["stats"])
    # a session shorter than the 50 ms interval still times the reference once
    short = Job(job_id="s", model=str(tiny_models["full"]), protocol=FAST, drift_ref=str(ref))
    assert run_agent(short.to_dict(), tmp_path)["stats"]["ref_n"] >= 1
    # an energy meter would count the reference's runs: refused, as a result
    bad = agent.run_job(
        {**job.to_dict(), "energy": {"backend": "rapl", "options": {"root": str(tmp_path)}}, "protocol": FAST.to_dict()}
    )
    assert bad["status"] == "error" and bad["error_name"] == "BAD_JOB" and "energy" in bad["error_message"]
    # a reference the board lacks is a load error that names it
    gone = agent.run_job({**short.to_dict(), "drift_ref": str(tmp_path / "nope.onnx")})
    assert gone["status"] == "error" and "nope.onnx" in gone["error_message"]
