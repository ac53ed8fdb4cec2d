"""Shared fixtures: real node processes on free loopback ports, and DCMTK tools to talk to them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from .results import check_cli

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# `pacsdeck up` writes the user's fleet file when there is none: the tests' processes get a config home
# of their own, never the real ~/.config, and no fleet file or node.yaml named by the developer's shell.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="pacsdeck-xdg-")
for _name in ("PACSDECK_FLEET", "PACSDECK_CONFIG"):
    os.environ.pop(_name, None)
# DCMTK 3.6.7 leaves Nagle's algorithm on unless told; without this every transfer crawls.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
REPO = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """The tool's path; a missing integration tool fails under CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install dcmtk openssh-server)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading_sleep(interval)


def threading_sleep(seconds: float) -> None:
    """Block without time.sleep: an Event wait, so it is plainly a poll interval."""
    import threading

    threading.Event().wait(seconds)


def pacsdeck(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `pacsdeck` CLI in a subprocess; an agent result it prints must fit the method's schema."""
    done = subprocess.run(
        [sys.executable, "-m", "pacsdeck.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=REPO,
    )
    check_cli(args, done)
    return done


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool(tool), *args], capture_output=True, text=True, timeout=timeout, env=DCMTK_ENV)


@dataclass
class NodeHandle:
    """A real `pacsdeck node run` process on 127.0.0.1."""

    dir: Path
    port: int
    ae_title: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.dir / "node.yaml"

    @property
    def index_path(self) -> Path:
        return self.dir / "index.sqlite"

    def start(self) -> NodeHandle:
        self.log_path = self.dir / "node.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed below, once the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pacsdeck.cli", "node", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
        )
        log.close()
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready"):
            self.proc.wait(timeout=10)
            raise AssertionError(f"node did not start: {line!r}\n{self.log_path.read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL, by PID: only the process we started
        self.proc.wait()
        self.proc = None

    def pool_root(self, name: str) -> Path:
        pools = yaml.safe_load(self.config.read_text())["pools"]
        path = Path(next(p["path"] for p in pools if p["name"] == name))
        return path if path.is_absolute() else self.dir / path

    def file(self, row) -> Path:
        """Where an instances row says its file is."""
        return self.pool_root(row["pool"]) / row["path"]

    def pool_files(self) -> list[Path]:
        pools = yaml.safe_load(self.config.read_text())["pools"]
        return sorted(f for p in pools for f in self.pool_root(p["name"]).rglob("*.dcm"))

    def temp_files(self) -> list[Path]:
        pools = yaml.safe_load(self.config.read_text())["pools"]
        return sorted(f for p in pools for f in self.pool_root(p["name"]).rglob("*.part"))

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def rows(self, sql: str, *params) -> list[sqlite3.Row]:
        with self.db() as conn:
            return conn.execute(sql, params).fetchall()

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def make_node(
    root: Path,
    *,
    ae_title: str = "PACSDECK",
    aets: list[dict] | None = None,
    pools: list[dict] | None = None,
    **settings,
) -> NodeHandle:
    """Write node.yaml (settings override defaults), then `pacsdeck node init` it."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {
        "ae_title": ae_title,
        "port": port,
        "bind": "127.0.0.1",
        "pools": pools
        or [
            {"name": "primary", "path": "pools/primary", "tier": "primary"},
            {"name": "archive", "path": "pools/archive", "tier": "archive"},
        ],
        "aets": aets
        if aets is not None
        else [{"ae_title": "STORESCU", "host": "127.0.0.1"}, {"ae_title": "ECHOSCU", "host": "127.0.0.1"}],
        **settings,
    }
    (root / "node.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = pacsdeck("node", "init", "--dir", str(root))
    assert result.returncode == 0, result.stderr
    return NodeHandle(dir=root, port=port, ae_title=ae_title)


@pytest.fixture
def node_factory(tmp_path):
    started: list[NodeHandle] = []

    def factory(name: str = "node", **kw) -> NodeHandle:
        handle = make_node(tmp_path / name, **kw)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


# --- storescu helpers ----------------------------------------------------------------------------

# storescu proposes only uncompressed syntaxes unless told; one flag per compressed family.
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}

_SENDING = re.compile(r"^I: Sending file: (.+)$")
_RESPONSE = re.compile(r"^I: Received Store Response(?: \((.+)\))?")
_STATUS = re.compile(r"Status\s*:\s*0x([0-9a-fA-F]{4})")


def storescu(
    node, files: list[Path], *extra: str, aet: str = "STORESCU", aec: str | None = None, timeout: float = 300
) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Send files on one association; return {file: 'Success' or the response text} and the process."""
    args = [
        "-v",
        "-nh",
        "-aet",
        aet,
        "-aec",
        aec or node.ae_title,
        *extra,
        "127.0.0.1",
        str(node.port),
        *[str(f) for f in files],
    ]
    proc = dcmtk("storescu", *args, timeout=timeout)
    return parse_storescu(proc.stdout + proc.stderr), proc


def parse_storescu(output: str) -> dict[str, str]:
    results: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        m = _SENDING.match(line)
        if m:
            current = m.group(1).strip()
            results[current] = "not answered"
            continue
        m = _RESPONSE.match(line)
        if m and current is not None:
            results[current] = m.group(1) or "answered"
            current = None
    return results


@dataclass
class StoreSCP:
    """A DCMTK storescp on 127.0.0.1: the reference receiver, writing data bit-preserved (+B)."""

    port: int
    dir: Path
    ae_title: str
    proc: subprocess.Popen

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def storescp_factory(tmp_path):
    started: list[StoreSCP] = []

    def factory(
        name: str = "storescp", ae_title: str = "STORESCP", port: int | None = None, extra: tuple[str, ...] = ()
    ) -> StoreSCP:
        folder = tmp_path / name
        folder.mkdir()
        port = port or free_port()
        proc = start_listener(
            [require_tool("storescp"), "-aet", ae_title, "+B", "+xa", "-od", str(folder), *extra, str(port)], port
        )
        scp = StoreSCP(port=port, dir=folder, ae_title=ae_title, proc=proc)
        started.append(scp)
        return scp

    yield factory
    for scp in started:
        terminate(scp.proc)


def start_listener(argv: list[str], port: int) -> subprocess.Popen:
    """Start a DCMTK server process and return once it accepts connections on `port`."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    wait_for(lambda: port_open(port), what=f"{Path(argv[0]).name} on port {port}")
    return proc


def terminate(proc: subprocess.Popen) -> None:
    """Stop a process this test started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- real filesystems for full-disk and read-only tests -----------------------------------------


@contextmanager
def tmpfs(folder: Path, size: str):
    """A real small filesystem at `folder` (created); skips with the reason where mount is not
    permitted (the tests need root, which CI has)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); needs root and mount permission")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def read_only(folder: Path):
    """Make `folder` read-only in place with a bind mount and a remount; skips where not permitted."""
    result = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if result.returncode == 0:  # a bind mount becomes read-only only by a remount
        result = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset as it was encoded: everything after the File Meta group.

    The meta group starts with its mandatory (0002,0000) group length (explicit VR little endian).
    """
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM", f"{path}: not a Part 10 file"
    assert data[132:136] == b"\x02\x00\x00\x00", f"{path}: meta group length missing"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def pytest_terminal_summary(terminalreporter):
    """Print what tests attached with record_property("summary", text); it survives xdist workers."""
    for key in ("passed", "failed"):
        for report in terminalreporter.stats.get(key, []):
            for name, value in getattr(report, "user_properties", ()):
                if name == "summary" and report.when == "call":
                    terminalreporter.write_sep("-", f"summary: {report.nodeid}")
                    terminalreporter.write_line(str(value))
