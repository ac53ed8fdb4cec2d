"""Fixtures for console tests: a real fleet of two local nodes and one node behind a real loopback sshd.

`fleet_files` (function scope) gives a `FleetFiles`:

- `.path`        fleet.yaml (written; three nodes: `alpha` and `beta` are `local`, `gamma` is `ssh`)
- `.fleet`       the loaded `console.inventory.Fleet`
- `.nodes`       name -> `NodeHandle` (tests/conftest.py) of that node's folder; all three run
                 (`node run`, workers: 1); stop one with `.nodes["beta"].stop()`. None for an entry
                 without a node folder.
- `.sshd`        the `SSHD` (tests/agent_support.py) serving `gamma`; its authorized_keys holds one key
                 whose forced command runs `gamma`'s agent as user `console` with the operator role
- `.known_hosts` pacsdeck's known_hosts for this fleet, with the sshd's host key already pinned
- `.key`         the SSH private key the fleet uses for `gamma`
- `.dir`         the folder holding all of it
- `.write(entries, known_hosts=None)` rewrites fleet.yaml with other node entries and reloads `.fleet`
- `.transports()` name -> open_transport(...) for the current fleet (close them with `close_all`)

Other helpers: `restart_sshd_with_new_key(server)` (same port, new host key: what a changed key looks like),
`ssh_entry(...)` (a fleet entry for an sshd), `unreachable_entry(name)` (ssh to a closed loopback port).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import psutil
import pytest
import yaml

from console.hostkeys import KnownHosts
from console.inventory import Fleet, load_fleet
from console.transport import Transport, open_transport

from .agent_support import SSHD, agent_env, os_user, ssh_keygen, sshd_binary, start_sshd, stop_sshd
from .conftest import REPO, NodeHandle, free_port, make_node, port_open, wait_for
from .results import check_cli


@dataclass
class FleetFiles:
    dir: Path
    path: Path
    known_hosts: Path
    key: Path | None
    nodes: dict[str, NodeHandle | None]
    sshd: SSHD | None
    fleet: Fleet | None = None
    opened: list = field(default_factory=list)

    def write(self, entries: list[dict], known_hosts: Path | None = None) -> Fleet:
        """Write fleet.yaml with these node entries and load it."""
        doc = {"known_hosts": str(known_hosts or self.known_hosts), "nodes": entries}
        self.path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.fleet = load_fleet(self.path)
        return self.fleet

    def transports(self, **kw) -> dict[str, Transport]:
        known = KnownHosts(self.fleet.known_hosts)
        out = {e.name: open_transport(e, known, **kw) for e in self.fleet.nodes}
        self.opened.extend(out.values())
        return out

    def close_all(self) -> None:
        for t in self.opened:
            t.close()
        self.opened.clear()


async def until(pilot, predicate, what: str, timeout: float = 30.0):
    """Let the app run until predicate() is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def host_key(server: SSHD) -> paramiko.PKey:
    key_type, b64 = server.host_key_line.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(b64))


def ssh_entry(name: str, server: SSHD, key: Path, config: Path | None = None, **extra) -> dict:
    entry = {
        "name": name,
        "transport": "ssh",
        "host": "127.0.0.1",
        "port": server.port,
        "user": os_user(),
        "key": str(key),
        "connect_timeout": 10,
        "call_timeout": 20,
    }
    if config is not None:
        entry["config"] = str(config)
    entry.update(extra)
    return entry


def unreachable_entry(name: str, key: Path | None = None) -> dict:
    """An ssh node on a loopback port nobody listens on: connection refused at once."""
    entry = {
        "name": name,
        "site": "nowhere",
        "transport": "ssh",
        "host": "127.0.0.1",
        "port": free_port(),
        "connect_timeout": 3,
        "call_timeout": 5,
    }
    if key is not None:
        entry["key"] = str(key)
    return entry


def add_ssh_user(server: SSHD, node: NodeHandle, name: str, role: str, key: Path) -> None:
    """users.add through the node's own agent: writes the forced-command line into the sshd's authorized_keys."""
    params = json.dumps({"name": name, "role": role, "ssh_keys": [ssh_keygen(key)]})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pacsdeck.cli",
            "agent",
            "call",
            "users.add",
            "--params",
            params,
            "--config",
            str(node.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=agent_env(server.authorized_keys),
    )
    assert result.returncode == 0, result.stderr
    check_cli(["agent", "call", "users.add"], result)


def restart_sshd_with_new_key(server: SSHD) -> None:
    """Stop the sshd, give it a new host key, start it again on the same port (same config file)."""
    restart_sshd(server, new_key=True)


def restart_sshd(server: SSHD, new_key: bool = False) -> None:
    """Stop the sshd and start it again on the same port with the same config (and a new host key if asked)."""
    # A restarted server (a reboot, a reinstall) has no sessions left: end its session processes too, by PID.
    sessions = session_processes(server)
    stop_sshd(server)
    for child in sessions:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    server.clients.clear()
    if new_key:
        key_path = server.dir / "ssh_host_ed25519_key"
        key_path.unlink()
        Path(f"{key_path}.pub").unlink()
        server.host_key_line = ssh_keygen(key_path)
    start_again(server)


def session_processes(server: SSHD) -> list[psutil.Process]:
    """The sshd's per-connection children (they outlive the listener unless ended)."""
    if server.proc.poll() is not None:
        return []
    try:
        return psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def start_again(server: SSHD) -> None:
    """Start a stopped sshd fixture again, same port and config."""
    with open(server.log_path, "ab") as log:
        server.proc = subprocess.Popen(
            [sshd_binary(), "-D", "-e", "-f", str(server.dir / "sshd_config")],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )

    def up() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"sshd exited with {server.proc.returncode}:\n{server.log()}")
        return port_open(server.port)

    wait_for(up, what=f"sshd again on port {server.port}")


def build_fleet_files(root: Path, *, run: tuple[str, ...] = ("alpha", "beta", "gamma")) -> FleetFiles:
    """The three-node fleet under `root`; nodes named in `run` are started."""
    root.mkdir(parents=True, exist_ok=True)
    # alpha's pools have a logical capacity: how full they are is then the node's figure, not the disk's.
    pools = {
        "alpha": [
            {"name": "primary", "path": "pools/primary", "tier": "primary", "capacity": "1GB"},
            {"name": "archive", "path": "pools/archive", "tier": "archive", "capacity": "4GB"},
        ]
    }
    nodes = {
        name: make_node(root / name, ae_title=name.upper(), workers=1, pools=pools.get(name))
        for name in ("alpha", "beta", "gamma")
    }
    server = start_sshd(root / "sshd")
    key = root / "console_ed25519"
    add_ssh_user(server, nodes["gamma"], "console", "operator", key)
    known_hosts = root / "known_hosts"
    KnownHosts(known_hosts).trust("127.0.0.1", server.port, host_key(server))
    files = FleetFiles(dir=root, path=root / "fleet.yaml", known_hosts=known_hosts, key=key, nodes=nodes, sshd=server)
    files.write(
        [
            {
                "name": "alpha",
                "site": "Clinic A",
                "tags": ["local", "primary"],
                "transport": "local",
                "config": str(nodes["alpha"].config),
                "poll_interval": 1,
                "call_timeout": 20,
            },
            {
                "name": "beta",
                "site": "Clinic B",
                "tags": ["local"],
                "transport": "local",
                "config": str(nodes["beta"].config),
                "poll_interval": 1,
                "call_timeout": 20,
            },
            ssh_entry("gamma", server, key, nodes["gamma"].config, site="Hospital C", tags=["ssh"], poll_interval=1),
        ]
    )
    for name in run:
        nodes[name].start()
    return files


def teardown_fleet_files(files: FleetFiles) -> None:
    files.close_all()
    for handle in files.nodes.values():
        if handle is not None:
            handle.stop()
    if files.sshd is not None:
        stop_sshd(files.sshd)


@pytest.fixture
def fleet_files(tmp_path):
    files = build_fleet_files(tmp_path / "fleet")
    yield files
    teardown_fleet_files(files)
