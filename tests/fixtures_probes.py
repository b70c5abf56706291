"""Shared fixtures for the probe tests (a pytest plugin: ``pytest_plugins = ["tests.fixtures_probes"]``).

Models are built with onnx.helper (real ONNX graphs run by real onnxruntime); sshd boards are real
OpenSSH servers on loopback ports, each in its own tmp dir, stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SSHD = "/usr/sbin/sshd"


def make_onnx(path: Path, part: str = "full", channels: int = 8, size: int = 32, depth: int = 1) -> Path:
    """A small CNN: head = depth x (Conv3x3 + Relu); tail = GlobalAveragePool + Flatten + Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    c_in = 3
    if part in ("full", "head"):
        x_name = "input"
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])]
        for i in range(depth):
            w = rng.standard_normal((channels, c_in, 3, 3)).astype(np.float32) * 0.2
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("Conv", [x_name, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            x_name, c_in = f"r{i}", channels
        feat = x_name
    else:
        inputs = [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, channels, size, size])]
        feat = "feat"
    if part == "head":
        nodes.append(helper.make_node("Identity", [feat], ["output"]))
        outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, channels, size, size])]
    else:
        g = rng.standard_normal((channels, 10)).astype(np.float32)
        inits.append(numpy_helper.from_array(g, "g"))
        nodes += [
            helper.make_node("GlobalAveragePool", [feat], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"]),
            helper.make_node("MatMul", ["flat", "g"], ["output"]),
        ]
        outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])]
    graph = helper.make_graph(nodes, f"tiny_{part}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshdBoard:
    """A real sshd on loopback (test fixture). ``stop()``/``start()`` inject the 'board died' fault."""

    name: str
    port: int
    directory: Path
    config: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        log = open(self.directory / "sshd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} did not start: {(self.directory / 'sshd.log').read_text()}")

    def die(self) -> None:
        """The board dies: sshd and every session it started are SIGKILLed."""
        if self.proc:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def make_sshd_board(root: Path, name: str, client_pub: Path, python: str | None = None) -> SshdBoard:
    """One sshd with its own host key and config; ``python`` is the board's interpreter."""
    d = root / "sshd" / name.replace("/", "_")
    d.mkdir(parents=True, exist_ok=True)
    hostkey = d / "ssh_host_ed25519_key"
    if not hostkey.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
    shutil.copy(client_pub, d / "authorized_keys")
    port = free_port()
    python = python or sys.executable
    cfg = d / "sshd_config"
    cfg.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f'HostKey "{hostkey}"',
                f'PidFile "{d / "sshd.pid"}"',
                f'AuthorizedKeysFile "{d / "authorized_keys"}"',
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                f"SetEnv EDGEATLAS_PYTHON={python}",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return SshdBoard(name=name, port=port, directory=d, config=cfg)


def host_key_line(board: SshdBoard) -> str:
    pub = (board.directory / "ssh_host_ed25519_key.pub").read_text().split()
    return f"[127.0.0.1]:{board.port} {pub[0]} {pub[1]}\n"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "full": make_onnx(d / "tiny full.onnx"),
        "head": make_onnx(d / "tiny_head.onnx", part="head"),
        "tail": make_onnx(d / "tiny_tail.onnx", part="tail"),
    }


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("client")
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


needs_sshd = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0),
    reason="needs openssh-server and root (sshd must read its host key and switch to the login user)",
)


@pytest.fixture(scope="session")
def sshd_boards(tmp_path_factory: pytest.TempPathFactory, client_key: Path):
    """Three real sshd boards: two healthy (names with a space and shell metacharacters) and one
    whose sessions see only the system python (no onnxruntime: the 'runtime missing' board)."""
    if not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0):
        pytest.skip("needs openssh-server and root")
    root = tmp_path_factory.mktemp("boards")
    boards = {
        "a": make_sshd_board(root, "board a;$(x)", client_key.with_suffix(".pub")),
        "b": make_sshd_board(root, "board-b", client_key.with_suffix(".pub")),
        "noruntime": make_sshd_board(root, "noruntime", client_key.with_suffix(".pub"), python="/usr/bin/python3"),
    }
    known = root / "known_hosts"
    for b in boards.values():
        b.start()
    known.write_text("".join(host_key_line(b) for b in boards.values()))
    yield {"boards": boards, "known_hosts": known, "root": root}
    for b in boards.values():
        b.stop()


def write_devices(path: Path, boards: list[dict], key_file: Path, known_hosts: Path, remote_dir: str) -> Path:
    """A devices.toml for test boards (real sshd on loopback); values are TOML-escaped via json."""
    import json as _json

    lines = [
        "[defaults]",
        'user = "root"',
        f"key_file = {_json.dumps(str(key_file))}",
        f"known_hosts = {_json.dumps(str(known_hosts))}",
        f"remote_dir = {_json.dumps(remote_dir)}",
        "",
        "[classes.test-cpu]",
        'arch = "x86_64"',
        "cores = 1",
        "memory_mb = 1024",
        'runtimes = ["onnxruntime"]',
        "power = { idle_w = 2.0, active_w = 5.0, radio_nj_per_byte = 100.0 }",
        "",
    ]
    for b in boards:
        lines += ["[[boards]]", f"name = {_json.dumps(b['name'])}", 'class = "test-cpu"', 'host = "127.0.0.1"']
        lines += [f"port = {b['port']}", f'role = "{b.get("role", "device")}"']
        if b.get("key_file"):
            lines.append(f"key_file = {_json.dumps(str(b['key_file']))}")
        if b.get("emulate"):
            lines.append("emulate = " + b["emulate"])
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (fault injection: the board dies)."""
    import signal as _signal

    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    todo, seen = [pid], []
    while todo:
        cur = todo.pop()
        seen.append(cur)
        todo += children.get(cur, [])
    for p in seen:
        try:
            os.kill(p, _signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def queue_boards(tmp_path_factory: pytest.TempPathFactory, client_key: Path):
    """Three real sshd boards for the queue tests: two device boards (one name with a space) and
    one edge board; yields boards, known_hosts, and a writer of a devices.toml naming them."""
    if not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0):
        pytest.skip("needs openssh-server and root")
    root = tmp_path_factory.mktemp("qboards")
    boards = {
        "d1": make_sshd_board(root, "q-dev-1", client_key.with_suffix(".pub")),
        "d2": make_sshd_board(root, "q dev 2", client_key.with_suffix(".pub")),
        "edge": make_sshd_board(root, "q-edge", client_key.with_suffix(".pub")),
    }
    known = root / "known_hosts"
    for b in boards.values():
        b.start()
    known.write_text("".join(host_key_line(b) for b in boards.values()))

    def devices(path: Path, remote_dir: str) -> Path:
        spec = [
            {"name": boards["d1"].name, "port": boards["d1"].port},
            {"name": boards["d2"].name, "port": boards["d2"].port},
            {"name": boards["edge"].name, "port": boards["edge"].port, "role": "edge"},
        ]
        return write_devices(path, spec, client_key, known, remote_dir)

    yield {"boards": boards, "known_hosts": known, "devices": devices}
    for b in boards.values():
        b.stop()


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny torch CNN converted to .tflite by litert-torch (no TensorFlow), and the same model
    exported to ONNX: real files for the litert and onnxruntime paths of the agent."""
    litert_torch = pytest.importorskip("litert_torch")
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    d = tmp_path_factory.mktemp("tflite")
    litert_torch.convert(model, (x,)).export(str(d / "tiny.tflite"))
    torch.onnx.export(model, (x,), str(d / "tiny.onnx"), dynamo=False, input_names=["input"])
    return {"tflite": d / "tiny.tflite", "onnx": d / "tiny.onnx"}
