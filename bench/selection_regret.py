"""Selection regret on an unseen emulated board (issue 7, "Done when").

What it does, end to end, with real parts only:

1. Brings up the shipped emulated fleet (devices.toml: little-1, big-1, the held-out mid-1 of
   class emu-mid, and edge-1) in a temporary EDGEATLAS_HOME, on free ports: real sshd in
   cgroup-v1 cpu groups behind the user-space rate+delay link proxy.
2. Builds a small zoo of CNN variants (width x input resolution) with split points (after each
   conv stage and after pooling) and payload codecs (fp32, fp16, int8). The zoo engineers'
   ``edgeatlas zoo build`` was not on main when this was written, so the bench builds its own,
   here only: random-feature CNNs whose last layer is fitted by ridge regression on a generated
   task (``gratings-v2``: 10 classes of oriented sinusoidal gratings, 8 or 16 cycles per image (fine
   enough that accuracy keeps growing with input resolution, so latency and accuracy trade off),
   random phase/tint, Gaussian noise; train 1200 / test 600 scenes from fixed seeds). Every
   accuracy is measured on the test split (``measured:gratings-v2``); every codec's accuracy
   delta is measured by running the tail on decoded payloads.
3. Measures every variant on the training boards (little-1, big-1, edge-1) with the probe agent
   (FleetRunner), one board at a time (big-1 and edge-1 share a host core).
4. Trains the predictors (predictors.training.train) on those measurements: mid-1 never appears.
   One predictor version per ``--kind`` (default auto, the CLI default, gbm and additive), each on
   the same measurements.
5. k-shot: measures only the predictor's probe set (<= 10 variants) on mid-1 and recommends for
   mid-1 under each of the three example prefs (examples/prefs/*.toml) at mid-1's link
   (20 Mbit/s, 20 ms RTT), through registry.selector.recommend (the library behind the CLI),
   with each kind's version as the champion in turn: every pick is made before any ground truth.
6. Ground truth: benchmarks every candidate on mid-1 for real: every whole variant, every split
   (head on mid-1, tail on edge-1, each codec). End-to-end = measured head + encode + decode +
   tail + transfer, where transfer = payload bytes x 8 / bandwidth + RTT (the network model the
   selector uses; the SFTP copy that the sweep also times carries several protocol round trips
   an app would not pay, so it is printed for information only). Device energy = active_w x
   measured device time + radio_nj_per_byte x payload (estimated:power-model, this host has no
   sensor). all-on-edge = measured edge-1 latency + transfer of the raw float32 input.
7. Prints per kind and prefs: the k-shot latency error on mid-1, the pick, its measured QoE, the best measured QoE and
   regret = (best - pick) / best (target <= 2 %). The measured QoE comes from the same
   utility functions (registry.selector.candidates.evaluate over a table of measured values).

Run: .venv/bin/python bench/selection_regret.py [--widths 4,8,12,16,24 --resolutions 32,48,64,80,96]
Needs root (sshd, cgroup v1). Takes about 5-9 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATASET = "gratings-v2"
N_CLASSES = 10
NOISE = 0.25  # pixel noise sigma (grating contrast is 0.15..0.5)
PREFS = ("realtime_camera", "wearable_battery", "medical_accuracy")
CODECS = ("fp32", "fp16", "int8")
CUTS = ("s2", "s3", "pool")  # after conv stage 2, after conv stage 3, after global pooling
TRAINING_BOARDS = ("little-1", "big-1", "edge-1")
UNSEEN, EDGE = "mid-1", "edge-1"


# ============================================================================ generated data


def gratings(n: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes of the generated task at ``resolution`` (NCHW float32) and their labels.

    Class k: orientation (k % 5) x 36 degrees, spatial frequency 8 or 16 cycles per image (k // 5).
    Scene parameters (phase, tint, contrast, noise) come from ``seed``; the image is rendered at
    any resolution from the same parameters, so the task is identical across resolutions.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    theta = (y % 5) * (np.pi / 5) + rng.normal(0, 0.08, n)
    freq = np.where(y // 5 == 0, 8.0, 16.0) * rng.uniform(0.85, 1.15, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    contrast = rng.uniform(0.15, 0.5, n)
    tint = rng.uniform(0.3, 1.0, (n, 3))
    noise_seed = rng.integers(0, 2**31, n)
    u = (np.arange(resolution) + 0.5) / resolution
    xx, yy = np.meshgrid(u, u, indexing="xy")
    out = np.empty((n, 3, resolution, resolution), np.float32)
    for i in range(n):
        g = np.sin(2 * np.pi * freq[i] * (xx * np.cos(theta[i]) + yy * np.sin(theta[i])) + phase[i])
        img = contrast[i] * g[None] * tint[i][:, None, None]
        # pixel noise: independent per pixel, so a higher resolution averages more of it
        img = img + np.random.default_rng(noise_seed[i]).normal(0, NOISE, img.shape)
        out[i] = img
    return out, y


# ============================================================================ variants


@dataclass(frozen=True)
class Stage:
    name: str
    weight: np.ndarray | None  # conv (O, I, 3, 3) or linear (I, O)
    bias: np.ndarray | None
    kind: str  # conv | pool | fc


def build_stages(width: int, rng: np.random.Generator) -> list[Stage]:
    """Random conv stages (He init, fixed seed); the fc stage is fitted later."""
    stages = []
    c_in = 3
    for k, c_out in enumerate((width, 2 * width, 4 * width), start=1):
        w = rng.normal(0, np.sqrt(2.0 / (c_in * 9)), (c_out, c_in, 3, 3)).astype(np.float32)
        stages.append(Stage(f"s{k}", w, np.zeros(c_out, np.float32), "conv"))
        c_in = c_out
    stages.append(Stage("pool", None, None, "pool"))
    return stages


def run_stages_torch(stages: list[Stage], x: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x)
    with torch.no_grad():
        for s in stages:
            if s.kind == "conv":
                t = F.relu(F.conv2d(t, torch.from_numpy(s.weight), torch.from_numpy(s.bias), stride=2, padding=1))
            elif s.kind == "pool":
                t = t.mean(dim=(2, 3))
            else:
                t = t @ torch.from_numpy(s.weight) + torch.from_numpy(s.bias)
    return t.numpy()


def fit_readout(feats: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> Stage:
    """Ridge regression of one-hot labels on standardised pooled features, folded into one fc."""
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    Z = (feats - mu) / sd
    Y = np.eye(N_CLASSES, dtype=np.float64)[y]
    Zb = np.hstack([Z, np.ones((len(Z), 1))])
    W = np.linalg.solve(Zb.T @ Zb + lam * len(Z) * np.eye(Zb.shape[1]), Zb.T @ Y)
    w = (W[:-1] / sd[:, None]).astype(np.float32)
    b = (W[-1] - (mu / sd) @ W[:-1]).astype(np.float32)
    return Stage("fc", w, b, "fc")


def onnx_part(stages: list[Stage], in_shape: tuple[int, ...], name: str) -> bytes:
    """An ONNX graph (batch 1, opset 17) running ``stages`` on a tensor of ``in_shape``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "input"
    shape = list(in_shape)
    for s in stages:
        out = f"{s.name}_out"
        if s.kind == "conv":
            inits += [numpy_helper.from_array(s.weight, f"{s.name}_w"), numpy_helper.from_array(s.bias, f"{s.name}_b")]
            nodes.append(
                helper.make_node(
                    "Conv", [x, f"{s.name}_w", f"{s.name}_b"], [f"{s.name}_c"], pads=[1, 1, 1, 1], strides=[2, 2]
                )
            )
            nodes.append(helper.make_node("Relu", [f"{s.name}_c"], [out]))
            shape = [1, s.weight.shape[0], (shape[2] + 1) // 2, (shape[3] + 1) // 2]
        elif s.kind == "pool":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{s.name}_g"]))
            nodes.append(helper.make_node("Flatten", [f"{s.name}_g"], [out]))
            shape = [1, shape[1]]
        else:
            inits += [numpy_helper.from_array(s.weight, f"{s.name}_w"), numpy_helper.from_array(s.bias, f"{s.name}_b")]
            nodes.append(helper.make_node("Gemm", [x, f"{s.name}_w", f"{s.name}_b"], [out]))
            shape = [1, s.weight.shape[1]]
        x = out
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _save_artifact(blob: bytes) -> tuple[str, str]:
    from registry.paths import artifacts_dir

    sha = hashlib.sha256(blob).hexdigest()
    p = artifacts_dir() / f"{sha}.onnx"
    if not p.exists():
        p.write_bytes(blob)
    return p.name, sha


def build_zoo(
    store: Any, widths: list[int], resolutions: list[int], split_widths: set[int] | None = None,
    split_resolutions: set[int] | None = None, log=print,
) -> list[str]:  # fmt: skip
    """Build, evaluate and register every (width, resolution) variant.

    Split points (with their codecs) are extracted for the variants whose width is in
    ``split_widths`` and resolution in ``split_resolutions`` (default: all); the others are
    candidates only as all-on-device / all-on-edge, like a zoo entry nobody has cut yet.
    """
    import onnx
    import onnxruntime as ort

    from predictors.features import onnx_features
    from registry.zoo.codecs import encode, roundtrip

    ids = []
    data = {r: (gratings(1200, r, 1), gratings(600, r, 2)) for r in resolutions}
    for width in widths:
        for res in resolutions:
            (xtr, ytr), (xte, yte) = data[res]
            stages = build_stages(width, np.random.default_rng(1000 + width))
            fc = fit_readout(run_stages_torch(stages, xtr), ytr)
            stages = [*stages, fc]
            acts = [xte]  # activations entering each stage on the test set
            for s in stages:
                acts.append(run_stages_torch([s], acts[-1]))
            acc = float((acts[-1].argmax(1) == yte).mean())
            whole = onnx_part(stages, (1, 3, res, res), f"grat-w{width}-r{res}")
            sess = ort.InferenceSession(whole, providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input": xte[:1]})[0]
            assert np.allclose(got, acts[-1][:1], rtol=1e-3, atol=1e-3), "ONNX and torch disagree"
            path, sha = _save_artifact(whole)
            feats = onnx_features(onnx.load_from_string(whole)).to_dict()
            vid = f"grat-w{width}-r{res}"
            params = int(sum(s.weight.size + s.bias.size for s in stages if s.weight is not None))
            store.add_variant(
                vid,
                "gratings-cnn",
                "onnx",
                path,
                params,
                int(feats.get("macs", 0)),
                len(whole),
                (1, 3, res, res),
                "fp32",
                width=float(width),
                resolution=res,
                accuracy=acc,
                accuracy_source=f"measured:{DATASET}",
                features=feats,
                recipe={"builder": "bench/selection_regret.py", "readout": "ridge", "seed": 1000 + width},
            )
            with_splits = (split_widths is None or width in split_widths) and (
                split_resolutions is None or res in split_resolutions
            )
            for cut in CUTS if with_splits else ():
                k = [s.name for s in stages].index(cut) + 1  # stages in the head
                head, tail = stages[:k], stages[k:]
                mid = acts[k]
                hb = onnx_part(head, (1, 3, res, res), f"{vid}-head-{cut}")
                tb = onnx_part(tail, (1, *mid.shape[1:]), f"{vid}-tail-{cut}")
                hp, hs = _save_artifact(hb)
                tp, ts = _save_artifact(tb)
                codecs = {}
                for c in CODECS:
                    dec = np.stack([roundtrip(mid[i : i + 1], c)[0][0] for i in range(len(mid))])
                    acc_c = float((run_stages_torch(tail, dec.astype(np.float32)).argmax(1) == yte).mean())
                    codecs[c] = {
                        "bytes": len(encode(mid[:1], c)),
                        "accuracy_delta": acc_c - acc,
                        "accuracy_source": f"measured:{DATASET}",
                    }
                store.add_split(
                    vid,
                    cut,
                    k,
                    hp,
                    hs,
                    tp,
                    ts,
                    (1, *mid.shape[1:]),
                    "float32",
                    int(mid[:1].nbytes),
                    codecs=codecs,
                )
            ids.append(vid)
            log(f"  built {vid}: accuracy {acc:.3f} ({DATASET} test, 1000 scenes)")
    return ids


# ============================================================================ the fleet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def shipped_fleet(names: list[str], keep: bool = False) -> Iterator[tuple[Any, Path]]:
    """The shipped devices.toml, on free ports, in a fresh EDGEATLAS_HOME; boards ``names`` up."""
    from probes.emulate import fleet_down, fleet_up
    from registry.config import load_devices

    tmp = Path(tempfile.mkdtemp(prefix="edgeatlas-regret-"))
    old = os.environ.get("EDGEATLAS_HOME")
    os.environ["EDGEATLAS_HOME"] = str(tmp / "home")
    text = (REPO / "devices.toml").read_text()
    text = re.sub(r"(?m)^port = \d+", lambda _: f"port = {free_port()}", text)
    text = re.sub(r'(?m)^remote_dir = "[^"]*"', f'remote_dir = "{tmp / "remote"}"', text)
    (tmp / "devices.toml").write_text(text)
    fleet = load_devices(tmp / "devices.toml")
    try:
        fleet_up(fleet, names)
        yield fleet, tmp
    finally:
        fleet_down()
        if old is None:
            os.environ.pop("EDGEATLAS_HOME", None)
        else:
            os.environ["EDGEATLAS_HOME"] = old


def sweep_config(force: bool = False) -> Any:
    from probes.fleet import SweepConfig
    from probes.protocol import MeasureProtocol

    proto = MeasureProtocol(warmup_runs=2, warmup_s=0.1, repeat=5, number=5, min_repeat_ms=25.0)
    return SweepConfig(protocol=proto, codecs=CODECS, force=force, retries=1)


def measure_models(store: Any, fleet: Any, board: str, variant_ids: list[str]) -> Any:
    from probes.fleet import FleetRunner
    from probes.sweep import model_tasks

    runner = FleetRunner(store, fleet, sweep_config(), progress=False)
    try:
        return runner.run([board], model_tasks([store.get_variant(v) for v in variant_ids]))
    finally:
        runner.close()


def measure_splits(
    store: Any, fleet: Any, board: str, edge: str, variant_ids: list[str], codecs: tuple[str, ...] = CODECS
) -> Any:
    from probes.fleet import FleetRunner
    from probes.sweep import split_tasks

    runner = FleetRunner(store, fleet, sweep_config(), progress=False)
    try:
        return runner.run([board], splits=split_tasks(store, [store.get_variant(v) for v in variant_ids], edge, codecs))
    finally:
        runner.close()


# ============================================================================ ground truth


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _codec_accuracy(accuracy: float | None, codec: str, info: dict[str, Any]) -> float:
    """The variant's accuracy plus the codec's measured delta; NaN when either is unknown."""
    delta = (info or {}).get("accuracy_delta", 0.0 if codec == "fp32" else None)
    if codec == "fp32" and delta is None:
        delta = 0.0  # fp32 sends the tensor unchanged
    if accuracy is None or delta is None:
        return float("nan")
    return float(accuracy) + float(delta)


def measured_table(
    store: Any, fleet: Any, board: str, edge: str, codecs: tuple[str, ...] | None = None
) -> tuple[Any, dict[str, float]]:
    """A CandidateTable of *measured* values on ``board`` (the same columns the selector predicts).

    Only ``codecs`` (default: every codec a split declares) are included. Unknown accuracy (a
    variant without one, or a codec whose delta was not measured) stays NaN.
    Returns the table and the mean measured SFTP transfer per split payload (information only).
    """
    from registry.selector.candidates import KIND_DEVICE, KIND_EDGE, KIND_SPLIT, CandidateTable

    dev_cls = fleet.board(board).class_name
    edge_cls = fleet.board(edge).class_name
    power = dict(fleet.classes[dev_cls].power or {})
    active_w = float(power["active_w"])
    whole_dev = {m.variant_id: m for m in store.list_measurements(board=board, status="ok") if m.split_id is None}
    whole_edge = {m.variant_id: m for m in store.list_measurements(board=edge, status="ok") if m.split_id is None}
    split_meas = {
        (m.split_id, (m.config or {}).get("codec")): m
        for m in store.list_measurements(board=board, status="ok")
        if m.split_id is not None
    }
    cols: dict[str, list] = {
        k: []
        for k in (
            "variant_id",
            "family",
            "split",
            "codec",
            "kind",
            "head_ms",
            "tail_ms",
            "encode_ms",
            "decode_ms",
            "payload_bytes",
            "head_energy_mj",
            "accuracy",
            "accuracy_source",
        )
    }
    sftp: list[tuple[float, float]] = []

    def add(**row: Any) -> None:
        for k in cols:
            cols[k].append(row.get(k, 0.0))

    missing = []
    for v in store.list_variants():
        if v.format != "onnx":
            continue
        base = {"variant_id": v.id, "family": v.family, "accuracy_source": v.accuracy_source}
        md = whole_dev.get(v.id)
        if md is None:
            missing.append(f"{v.id}/all-on-device")
        else:
            add(**base, split="all-on-device", codec="none", kind=KIND_DEVICE, head_ms=md.latency_ms,
                head_energy_mj=active_w * md.latency_ms, accuracy=_nan(v.accuracy))  # fmt: skip
        me = whole_edge.get(v.id)
        if me is None:
            missing.append(f"{v.id}/all-on-edge")
        else:
            add(**base, split="all-on-edge", codec="fp32", kind=KIND_EDGE, tail_ms=me.latency_ms,
                payload_bytes=float(np.prod(v.input_shape)) * 4.0, accuracy=_nan(v.accuracy))  # fmt: skip
        for s in store.list_splits(v.id):
            for codec, info in sorted((s.codecs or {}).items()):
                if codecs is not None and codec not in codecs:
                    continue
                m = split_meas.get((s.id, codec))
                if m is None:
                    missing.append(f"{v.id}/{s.cut_name}/{codec}")
                    continue
                st = m.stats
                sftp.append((st["payload_bytes"], st["transfer_ms"]))
                add(**base, split=s.cut_name, codec=codec, kind=KIND_SPLIT, head_ms=st["head_ms"],
                    tail_ms=st["tail_ms"], encode_ms=st["encode_ms"], decode_ms=st["decode_ms"],
                    payload_bytes=float(st["payload_bytes"]),
                    head_energy_mj=active_w * (st["head_ms"] + st["encode_ms"]),
                    accuracy=_codec_accuracy(v.accuracy, codec, info))  # fmt: skip
    if missing:
        raise RuntimeError(f"{len(missing)} candidates were not measured on {board}: {missing[:5]}")
    table = CandidateTable.from_columns(**cols, device=board, edge=edge, predictor_version="measured")
    info = {"sftp_transfer_ms_mean": float(np.mean([t for _, t in sftp])) if sftp else float("nan")}
    info["sftp_bytes_mean"] = float(np.mean([b for b, _ in sftp])) if sftp else float("nan")
    _ = edge_cls
    return table, info


# ============================================================================ main


def _tradeoff_line(name: str, truth: Any, ev: Any, i: int, rec: Any) -> str:
    """The pick against the most accurate candidate: what the pick gave up, and why."""
    acc = np.nan_to_num(np.asarray(truth.accuracy, dtype=float), nan=-1.0)
    e2e = np.asarray(ev.latency_ms, dtype=float)
    j = int(np.argmax(acc))
    keys = truth.keys()
    why = "the same candidate" if j == i else (
        f"most accurate {keys[j]} ({acc[j]:.3f}, {e2e[j]:.1f} ms{'' if ev.feasible[j] else ', infeasible'})"
    )  # fmt: skip
    return (
        f"  {name:18s} pick accuracy {acc[i]:.3f}, e2e {e2e[i]:.1f} ms, binding {rec.binding_constraint or '-'}; {why}"
    )


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _regret_table(picks: dict, prefs_by_name: dict, truth: Any, bw: float, rtt: float, radio: float) -> float:
    """Print each prefs' pick against the best measured candidate; return the worst regret."""
    from registry.selector.candidates import Network, evaluate

    print(f"{'prefs':18s} {'pick':34s} {'pick QoE':>9s} {'best (measured)':34s} {'best QoE':>9s} {'regret':>8s}")
    worst = 0.0
    tradeoffs: list[str] = []
    for name, prefs in prefs_by_name.items():
        ans = picks[name]
        ev = evaluate(truth, Network(bw, rtt), prefs, radio)
        keys = truth.keys()
        score = np.where(ev.feasible, ev.qoe_lower, 0.0)
        best = int(np.argmax(score))
        if not ans.recommendations:
            print(f"{name:18s} infeasible predicted; best measured {keys[best]} QoE {score[best]:.4f}")
            worst = max(worst, 1.0)
            continue
        pick = ans.recommendations[0].key
        i = keys.index(pick)
        note = "" if ev.feasible[i] else "  (pick violates a constraint when measured: QoE counted 0)"
        regret = (score[best] - score[i]) / score[best] if score[best] > 0 else 0.0
        worst = max(worst, regret)
        print(f"{name:18s} {pick:34s} {score[i]:9.4f} {keys[best]:34s} {score[best]:9.4f} {100 * regret:7.2f} %{note}")
        tradeoffs.append(_tradeoff_line(name, truth, ev, i, ans.recommendations[0]))
    print("does anything but accuracy decide? (measured on the unseen board)")
    for line in tradeoffs:
        print(line)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="8,16,24,32,48,64")
    ap.add_argument("--resolutions", default="32,48,64,96,128")
    ap.add_argument("--split-widths", default="16,48", help="variants with split points: these widths ...")
    ap.add_argument("--split-resolutions", default="64,128", help="... at these resolutions")
    ap.add_argument(
        "--kind",
        default="auto,gbm,additive",
        help="predictor kinds, comma-separated (auto: the CLI default); each is trained on the same measurements, "
        "makes its picks blind, and is scored against the same ground truth",
    )
    ap.add_argument("--bandwidth-mbit", type=float, default=None, help="default: mid-1's link")
    ap.add_argument("--rtt-ms", type=float, default=None, help="default: mid-1's link")
    ap.add_argument("--keep", action="store_true", help="print the temp dir and keep the store")
    args = ap.parse_args()
    from predictors.models import KINDS

    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        ap.error(f"--kind: {', '.join(bad) or 'none given'}; choose from {', '.join(KINDS)}")
    t_start = time.monotonic()

    from predictors.training import load_champion, train
    from registry.config import sync_fleet_to_store
    from registry.selector.prefs import load_prefs
    from registry.selector.recommend import recommend
    from registry.store import Store

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {msg}", flush=True)

    with shipped_fleet([*TRAINING_BOARDS, UNSEEN]) as (fleet, tmp):
        store = Store.open(f"sqlite:///{tmp / 'regret.db'}")
        sync_fleet_to_store(fleet, store)
        em = fleet.board(UNSEEN).emulate
        bw = args.bandwidth_mbit or float(em.link_mbit)
        rtt = args.rtt_ms if args.rtt_ms is not None else float(em.rtt_ms)
        log(f"fleet up in {tmp}: {', '.join([*TRAINING_BOARDS, UNSEEN])}; building the zoo")
        ids = build_zoo(
            store,
            _ints(args.widths),
            _ints(args.resolutions),
            set(_ints(args.split_widths)),
            set(_ints(args.split_resolutions)),
            log=lambda m: None,
        )
        accs = [store.get_variant(v).accuracy for v in ids]
        log(f"zoo: {len(ids)} variants, accuracy {min(accs):.3f}..{max(accs):.3f} (measured:{DATASET})")

        for b in TRAINING_BOARDS:
            r = measure_models(store, fleet, b, ids)
            log(f"measured {b}: {r.summary()}")
        prefs_by_name = {name: load_prefs(REPO / "examples" / "prefs" / f"{name}.toml") for name in PREFS}
        picks: dict[str, dict] = {}
        version_id: dict[str, int] = {}
        probe: dict[str, float] = {}
        for kind in kinds:
            rep = train(store, kind=kind, promote="always")
            trained = rep["classes"]
            assert fleet.board(UNSEEN).class_name not in trained, "the unseen class leaked into training"
            log(f"predictors v{rep['version']} ({kind}) trained on classes {trained}; held-out MAPE "
                f"{rep['challenger'].get('mape', float('nan')):.3f}")  # fmt: skip
            rec, pset = load_champion(store)
            version_id[kind] = rec.id
            if not probe:
                r = measure_models(store, fleet, UNSEEN, list(pset.probe_ids))
                probe = {
                    m.variant_id: m.latency_ms
                    for m in store.list_measurements(board=UNSEEN, status="ok")
                    if m.split_id is None and m.variant_id in pset.probe_ids
                }
                log(f"k-shot: measured {len(probe)} probe variants on {UNSEEN} ({r.summary()['wall_s']} s)")
            picks[kind] = {}
            for name, prefs in prefs_by_name.items():
                ans = recommend(store, device=UNSEEN, probe_latencies=probe, edge=EDGE, bandwidth_mbit=bw,
                                rtt_ms=rtt, prefs=prefs, top_k=3)  # fmt: skip
                picks[kind][name] = ans
                top = ans.recommendations[0] if ans.recommendations else None
                log(
                    f"recommend {name} ({kind}): {top.key if top else 'infeasible'} (predictor {ans.predictor_version})"
                )

        log(f"ground truth: every candidate on {UNSEEN} (whole models, then splits with tails on {EDGE})")
        rest = [v for v in ids if v not in probe]
        measure_models(store, fleet, UNSEEN, rest)
        r = measure_splits(store, fleet, UNSEEN, EDGE, [v for v in ids if store.list_splits(v)])
        log(f"measured splits on {UNSEEN}: {r.summary()}")
        truth, info = measured_table(store, fleet, UNSEEN, EDGE)
        radio = float(fleet.classes[fleet.board(UNSEEN).class_name].power["radio_nj_per_byte"])

        # predictor quality on the unseen board (whole models, k-shot), for the record
        from predictors.features import features_from_dict
        from registry.selector.sources import load_candidates, resolve_device

        dev_meas = {
            truth.variant_id[i]: truth.head_ms[i] for i in range(len(truth)) if truth.split[i] == "all-on-device"
        }
        print()
        print(f"unseen board {UNSEEN} (class {fleet.board(UNSEEN).class_name}, never trained on); "
              f"network {bw:g} Mbit/s, RTT {rtt:g} ms; {len(truth)} candidates measured")  # fmt: skip
        print(f"split transfer: model {info['sftp_bytes_mean'] * 8 / (bw * 1e3) + rtt:.1f} ms vs SFTP copy "
              f"{info['sftp_transfer_ms_mean']:.1f} ms (mean payload {info['sftp_bytes_mean']:.0f} B; info only)")  # fmt: skip
        worst_by_kind: dict[str, float] = {}
        spec = resolve_device(store, UNSEEN, probe_latencies=probe)
        spec = type(spec)(spec.name, None, spec.facts, probe)  # predictions only: no measurement lookup
        edge_spec = resolve_device(store, EDGE, role="edge")
        for kind in kinds:
            store.set_predictor_status(version_id[kind], "champion")  # the very model that made the picks
            pred = load_candidates(store, spec, edge_spec, use_measurements=False)
            pm = {pred.variant_id[i]: pred.head_ms[i] for i in range(len(pred)) if pred.split[i] == "all-on-device"}
            vids = [v for v in dev_meas if v not in probe]  # scored on the models that were not shots
            ape = np.array([abs(pm[v] - dev_meas[v]) / dev_meas[v] for v in vids])
            # the same k-shot with every reference column from the class regressors (no measurements)
            _, pset_k = load_champion(store)
            F = np.vstack([features_from_dict(store.get_variant(v).features, v).vector() for v in vids])
            reg = pset_k.predict(F, probe_latencies=probe, measured_refs=False).latency_ms
            ape_reg = np.abs(reg - np.array([dev_meas[v] for v in vids])) / np.array([dev_meas[v] for v in vids])
            print()
            print(f"== kind {kind}: k-shot latency on {UNSEEN} (whole models but the shots, {len(ape)}): MAPE {100 * ape.mean():.1f} %, "
                  f"within +-10 % {100 * (ape <= 0.10).mean():.0f} % (reference columns measured where the "
                  f"classes measured the variant; all from the regressors: MAPE {100 * ape_reg.mean():.1f} %, "
                  f"within +-10 % {100 * (ape_reg <= 0.10).mean():.0f} %)")  # fmt: skip
            worst_by_kind[kind] = _regret_table(picks[kind], prefs_by_name, truth, bw, rtt, radio)
        print()
        print("worst regret (target <= 2 %): " + ", ".join(f"{k} {100 * w:.2f} %" for k, w in worst_by_kind.items())
              + f"; wall {time.monotonic() - t_start:.0f} s")  # fmt: skip
        store.dispose()
    if args.keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
