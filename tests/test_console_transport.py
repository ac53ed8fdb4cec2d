"""The console's transports against real agents: a local pipe, and one SSH channel through a real sshd with
pinned host keys (unknown refused with nothing sent, the trust step, a changed key refused)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import psutil
import pytest
import yaml

from agent.protocol import RPCError
from console.hostkeys import KnownHosts, fingerprint, scan_host_key
from console.inventory import parse_fleet
from console.transport import HostKeyChanged, HostKeyUnknown, LocalTransport, TransportError, open_transport

from .conftest import REPO, make_node, require_tool, wait_for
from .console_support import build_fleet_files, host_key, restart_sshd, restart_sshd_with_new_key, teardown_fleet_files


def entry(**fields):
    return parse_fleet({"nodes": [{"name": "n", "transport": "local", **fields}]}).nodes[0]


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node", workers=1)


@pytest.fixture
def sshd_fleet(tmp_path):
    """The console_support fleet with no node process running: these tests are about the transport."""
    files = build_fleet_files(tmp_path / "fleet", run=())
    yield files
    teardown_fleet_files(files)


def ssh_keygen_fingerprint(server) -> str:
    """The host key's fingerprint as OpenSSH itself prints it."""
    out = subprocess.run(
        [require_tool("ssh-keygen"), "-lf", str(server.dir / "ssh_host_ed25519_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def pacsdeck(*args: str, input_text: str = "") -> subprocess.CompletedProcess:
    """The real CLI, with an answer on stdin for its confirmation question."""
    return subprocess.run(
        [sys.executable, "-m", "pacsdeck.cli", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def log_since_start(server) -> str:
    """The sshd log since its last start (a restarted fixture appends to the same file)."""
    return server.log().rsplit("Server listening on", 1)[-1]


# --- local ----------------------------------------------------------------------------------------


def test_local_one_process_errors_and_restart(node):
    t = LocalTransport(entry(config=str(node.config)), backoff_initial=0.1)
    try:
        first = t.call("node.status")
        assert first["node"]["ae_title"] == node.ae_title and first["listening"] is False
        assert t.call("node.status")["agent"]["pid"] == first["agent"]["pid"] == t.pid  # one persistent process
        err = pytest.raises(RPCError, t.call, "no.such.method").value
        assert err.kind == "not_found"
        assert pytest.raises(RPCError, t.call, "studies.find", {"limit": "many"}).value.kind == "invalid_params"
        old = t.pid
        os.kill(old, signal.SIGKILL)  # the agent this transport started
        with pytest.raises(TransportError) as info:
            t.call("node.status")
        assert "killed by signal 9" in info.value.reason
        again = t.call("node.status")  # a new agent on the next call
        assert again["agent"]["pid"] == t.pid != old
    finally:
        t.close()
    assert t.pid is None
    assert pytest.raises(TransportError, t.call, "node.status").value.reason == "transport closed"


def test_local_timeout_drops_the_session(tmp_path):
    t = LocalTransport(entry(agent_command=["sleep", "30"]))
    try:
        with pytest.raises(TransportError, match=r"node.status: no answer within 0.5 s"):
            t.call("node.status", timeout=0.5)
        assert t.pid is None  # a late answer must never be read as the next call's
    finally:
        t.close()


def test_local_bad_commands_are_reasons_with_backoff(tmp_path):
    missing = LocalTransport(entry(agent_command=[str(tmp_path / "no-pacsdeck"), "agent", "stdio"]), backoff_initial=30)
    first = pytest.raises(TransportError, missing.call, "node.status").value
    assert "cannot start" in first.reason and "no such file" in first.reason
    second = pytest.raises(TransportError, missing.call, "node.status").value
    assert "next attempt in" in second.reason  # no respawn storm against a broken command
    # A login script that prints a banner before (instead of) the agent.
    chatty = LocalTransport(entry(agent_command=["sh", "-c", "echo Welcome to the server; sleep 30"]))
    try:
        assert "not JSON-RPC" in pytest.raises(TransportError, chatty.call, "node.status").value.reason
    finally:
        chatty.close()
    quitter = LocalTransport(entry(agent_command=["sh", "-c", "echo 'no such config' >&2; exit 2"]))
    ended = pytest.raises(TransportError, quitter.call, "node.status").value.reason
    assert "exited with code 2: no such config" in ended


# --- ssh ------------------------------------------------------------------------------------------


def test_ssh_calls_share_one_connection_and_channel(sshd_fleet):
    g = sshd_fleet.transports()["gamma"]
    assert g.call("rpc.whoami")["user"] == "console"  # the forced command's identity
    status = g.call("node.status")
    assert status["node"]["ae_title"] == "GAMMA"
    assert g.call("node.status")["agent"]["pid"] == status["agent"]["pid"]
    log = sshd_fleet.sshd.log()
    assert log.count("Accepted publickey") == 1
    assert log.count("Starting session") == 1


def test_unknown_host_refused_with_nothing_sent_then_trusted(sshd_fleet, tmp_path):
    server = sshd_fleet.sshd
    empty = tmp_path / "empty_known_hosts"
    gamma = [n for n in yaml.safe_load(sshd_fleet.path.read_text())["nodes"] if n["name"] == "gamma"]
    fleet = sshd_fleet.write(gamma, known_hosts=empty)
    g = sshd_fleet.transports()["gamma"]
    err = pytest.raises(HostKeyUnknown, g.call, "node.status").value
    assert err.fingerprint == ssh_keygen_fingerprint(server) and err.key_type == "ssh-ed25519"
    assert (err.host, err.port) == ("127.0.0.1", server.port)
    assert isinstance(pytest.raises(TransportError, g.call, "node.status").value, HostKeyUnknown)
    log = server.log()
    assert "Accepted publickey" not in log and "Starting session" not in log  # no login, no command
    assert fingerprint(scan_host_key("127.0.0.1", server.port, 5)) == err.fingerprint

    # The trust step: shows the fingerprint, pins only after "yes".
    refused = pacsdeck("fleet", "trust", "gamma", "--fleet", str(sshd_fleet.path), input_text="no\n")
    assert refused.returncode == 1 and "not confirmed" in refused.stdout and not empty.exists()
    assert err.fingerprint in refused.stdout and f"port         {server.port}" in refused.stdout
    trusted = pacsdeck("fleet", "trust", "gamma", "--fleet", str(sshd_fleet.path), input_text="yes\n")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert stat.S_IMODE(empty.stat().st_mode) == 0o600
    assert empty.read_text().startswith("|1|")  # hashed host name
    assert KnownHosts(fleet.known_hosts).lookup("127.0.0.1", server.port) == host_key(server)
    # The transport sees the new pin at once (no backoff wait) and works.
    assert g.call("rpc.whoami")["user"] == "console"
    again = pacsdeck("fleet", "trust", "gamma", "--fleet", str(sshd_fleet.path), "--yes")
    assert again.returncode == 0 and "already trusted" in again.stdout


def test_changed_host_key_is_refused_loudly(sshd_fleet):
    server = sshd_fleet.sshd
    g = sshd_fleet.transports()["gamma"]
    old = ssh_keygen_fingerprint(server)
    assert g.call("node.status")["node"]["ae_title"] == "GAMMA"
    restart_sshd_with_new_key(server)  # same port, new key
    new = ssh_keygen_fingerprint(server)
    assert new != old

    def refused():
        try:
            g.call("node.status")
        except HostKeyChanged as err:
            return err
        except TransportError:  # the old connection's end comes first
            return None
        raise AssertionError("a changed host key was accepted")

    err = wait_for(refused, what="HostKeyChanged")
    assert (err.fingerprint, err.expected_fingerprint) == (new, old)
    assert "HOST KEY CHANGED" in err.reason
    assert "Accepted publickey" not in log_since_start(server)

    kept = pacsdeck("fleet", "trust", "gamma", "--fleet", str(sshd_fleet.path), "--yes")
    assert kept.returncode == 1 and "HAS CHANGED" in kept.stdout and "--replace" in kept.stdout
    assert fingerprint(KnownHosts(sshd_fleet.known_hosts).lookup("127.0.0.1", server.port)) == old
    replaced = pacsdeck("fleet", "trust", "gamma", "--fleet", str(sshd_fleet.path), "--yes", "--replace")
    assert replaced.returncode == 0, replaced.stdout
    assert fingerprint(KnownHosts(sshd_fleet.known_hosts).lookup("127.0.0.1", server.port)) == new
    assert g.call("rpc.whoami")["user"] == "console"


def test_killed_agent_and_dead_sshd_then_reconnect(sshd_fleet):
    server = sshd_fleet.sshd
    g = open_transport(
        sshd_fleet.fleet.node("gamma"), KnownHosts(sshd_fleet.known_hosts), backoff_initial=2, backoff_max=2
    )
    sshd_fleet.opened.append(g)
    pid = g.call("node.status")["agent"]["pid"]
    os.kill(pid, signal.SIGKILL)  # the agent our connection started, by PID
    with pytest.raises(TransportError) as info:
        g.call("node.status")
    assert "ended" in info.value.reason or "exited" in info.value.reason
    assert g.call("node.status")["agent"]["pid"] != pid  # a new channel on the same connection
    assert server.log().count("Accepted publickey") == 1 and server.log().count("Starting session") == 2

    # The site server goes away: our sshd and its session processes, by PID.
    sessions = psutil.Process(server.proc.pid).children(recursive=True)
    server.proc.terminate()
    server.proc.wait(timeout=10)
    for child in sessions:
        try:
            child.kill()
        except psutil.NoSuchProcess:  # it ended with its parent
            pass
    reasons = []
    for _ in range(3):
        try:
            g.call("node.status")
        except TransportError as err:
            reasons.append(err.reason)
    assert any("connection refused" in r for r in reasons), reasons
    assert any("next attempt in" in r for r in reasons), reasons
    restart_sshd(server)

    def works():
        try:
            return g.call("rpc.whoami")
        except TransportError:
            return None

    assert wait_for(works, what="reconnect after backoff")["user"] == "console"


def test_ssh_authentication_failures_say_what_to_do(sshd_fleet, tmp_path):
    stranger = tmp_path / "stranger_ed25519"
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    locked = tmp_path / "locked_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True)
    gamma = next(n for n in yaml.safe_load(sshd_fleet.path.read_text())["nodes"] if n["name"] == "gamma")
    fleet = sshd_fleet.write(
        [
            {**gamma, "name": "stranger", "key": str(stranger)},
            {**gamma, "name": "locked", "key": str(locked)},
            {**gamma, "name": "nokey", "key": str(tmp_path / "missing")},
        ]
    )
    known = KnownHosts(sshd_fleet.known_hosts)
    reasons = {}
    for e in fleet.nodes:
        t = open_transport(e, known)
        reasons[e.name] = pytest.raises(TransportError, t.call, "node.status").value.reason
        t.close()
    assert "authentication failed" in reasons["stranger"] and "authorized_keys" in reasons["stranger"]
    assert "passphrase" in reasons["locked"] and "ssh-agent" in reasons["locked"]
    assert "missing" in reasons["nokey"]
    assert "Starting session" not in sshd_fleet.sshd.log()


def test_ssh_host_names_that_do_not_resolve_are_a_reason(sshd_fleet, monkeypatch):
    """A name the resolver does not know, and a resolver that never answers (the OS lookup, made to
    hang here): each a reason within the node's connect_timeout, never a console stuck on DNS."""
    gamma = next(n for n in yaml.safe_load(sshd_fleet.path.read_text())["nodes"] if n["name"] == "gamma")
    fleet = sshd_fleet.write([{**gamma, "name": "nowhere", "host": "nowhere.invalid", "connect_timeout": 2}])
    known = KnownHosts(sshd_fleet.known_hosts)
    t = open_transport(fleet.nodes[0], known)
    reason = pytest.raises(TransportError, t.call, "node.status").value.reason
    t.close()
    assert "cannot resolve nowhere.invalid" in reason, reason

    released = threading.Event()

    def hanging_lookup(*args, **kwargs):
        released.wait(30)  # a DNS server that does not answer
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    try:
        fleet = sshd_fleet.write([{**gamma, "name": "slowdns", "host": "slowdns.example", "connect_timeout": 1}])
        t = open_transport(fleet.nodes[0], known)
        reason = pytest.raises(TransportError, t.call, "node.status").value.reason
        t.close()
        assert reason == "cannot resolve slowdns.example: no answer from DNS within 1 s", reason
        with pytest.raises(OSError, match="no answer from DNS within 1 s"):  # `fleet trust` looks it up the same way
            scan_host_key("slowdns.example", 22, 1)
    finally:
        released.set()
