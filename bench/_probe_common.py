"""Shared helpers of the probe benchmarks: a real ONNX CNN and a temporary emulated fleet."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def make_cnn(path: Path, channels: int = 24, size: int = 56, depth: int = 4) -> Path:
    """A plain conv stack (Conv3x3+Relu x depth, GAP, MatMul); a few ms on one core."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x, c_in = [], [], "input", 3
    for i in range(depth):
        inits.append(
            numpy_helper.from_array(rng.standard_normal((channels, c_in, 3, 3)).astype(np.float32) * 0.1, f"w{i}")
        )
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x, c_in = f"r{i}", channels
    inits.append(numpy_helper.from_array(rng.standard_normal((channels, 10)).astype(np.float32), "g"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "g"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def host_load() -> float:
    """The host's 1-minute load average: the benchmarks share 2 cores with other work; print it
    next to every figure so a ratio measured under contention reads as such."""
    return round(os.getloadavg()[0], 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulated_fleet(boards: list[dict]) -> Iterator[tuple[object, Path]]:
    """Bring up emulated boards in a fresh EDGEATLAS_HOME; yields (Fleet, tmp dir); always brings them down
    and removes the tmp dir.

    ``boards``: dicts with name, emulate (TOML inline table) and optional role.
    """
    from probes.emulate import fleet_down, fleet_up
    from registry.config import load_devices

    tmp = Path(tempfile.mkdtemp(prefix="edgeatlas-bench-"))
    old = os.environ.get("EDGEATLAS_HOME")
    os.environ["EDGEATLAS_HOME"] = str(tmp / "home")
    lines = [
        "[defaults]",
        'key_file = "{data_dir}/fleet/id_ed25519"',
        'known_hosts = "{data_dir}/fleet/known_hosts"',
        f'remote_dir = "{tmp / "remote"}"',
        "[classes.bench]",
        'arch = "x86_64"',
        "cores = 1",
        "memory_mb = 1024",
        "power = { idle_w = 2.2, active_w = 5.4 }",
    ]
    for b in boards:
        lines += ["[[boards]]", f'name = "{b["name"]}"', 'class = "bench"', 'host = "127.0.0.1"']
        lines += [f"port = {free_port()}", f'role = "{b.get("role", "device")}"', f"emulate = {b['emulate']}"]
    (tmp / "devices.toml").write_text("\n".join(lines) + "\n")
    fleet = load_devices(tmp / "devices.toml")
    try:
        fleet_up(fleet)
        yield fleet, tmp
    finally:
        fleet_down()
        if old is None:
            os.environ.pop("EDGEATLAS_HOME", None)
        else:
            os.environ["EDGEATLAS_HOME"] = old
        shutil.rmtree(tmp, ignore_errors=True)  # the boards' homes, keys, store and uploads
