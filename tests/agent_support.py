"""Test helpers for the agent: a real `pacsdeck agent stdio` process, a real sshd, keys, a paramiko client.

Every successful response these helpers see is checked against its method's declared result schema
(tests/results.py): a result that does not match fails the test with the path of each mismatch.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.protocol import RPCError, decode_line, encode, unwrap

from .conftest import IN_CI, REPO, free_port, make_node, port_open, require_tool, start_listener, terminate, wait_for
from .results import check_cli, check_result


def _request_key(req_id) -> str:
    return json.dumps(req_id, sort_keys=True)


def agent_env(authorized_keys: Path, **extra: str) -> dict:
    """The environment for agent processes: authorized_keys always in tmp, never the real ~/.ssh."""
    return {**os.environ, "PACSDECK_AUTHORIZED_KEYS": str(authorized_keys), "PACSDECK_LOG_LEVEL": "INFO", **extra}


class Agent:
    """A real `pacsdeck agent stdio` process; requests go in as lines, responses come out as lines."""

    def __init__(
        self, config: Path, *, as_user: str | None = None, env: dict | None = None, stderr_path: Path | None = None
    ):
        args = [sys.executable, "-m", "pacsdeck.cli", "agent", "stdio", "--config", str(config)]
        if as_user is not None:
            args += ["--as", as_user]
        self.stderr_path = stderr_path or Path(config).parent / f"agent-{as_user or 'local'}.log"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=env
            )
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._id = 0
        self._methods: dict[str, str] = {}  # request id -> method, to check each result read

    def _remember(self, data: bytes) -> None:
        """Note the method of every request in `data` (lines, batches) so read() can check its result."""
        for line in data.splitlines():
            try:
                message = decode_line(line)
            except Exception:  # noqa: BLE001 - hostile lines are the point of some tests
                continue
            for m in message if isinstance(message, list) else [message]:
                if isinstance(m, dict) and isinstance(m.get("method"), str) and "id" in m:
                    self._methods[_request_key(m["id"])] = m["method"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send_raw(self, data: bytes) -> None:
        self._remember(data)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, timeout: float = 60):
        """The next response line, parsed; None at EOF. Each result in it must match its method's schema."""
        line = self._lines.get(timeout=timeout)
        if line is None:
            return None
        response = json.loads(line)
        for r in response if isinstance(response, list) else [response]:
            if isinstance(r, dict) and "result" in r:
                method = self._methods.get(_request_key(r.get("id")))
                if method is not None:
                    check_result(method, r["result"])
        return response

    def request(self, method: str, params: dict | None = None) -> dict:
        self._id += 1
        self.send_raw(encode({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or {}}))
        response = self.read()
        assert response is not None, f"agent closed its output; stderr:\n{self.stderr()}"
        assert response.get("id") == self._id, response
        return response

    def call(self, method: str, params: dict | None = None):
        """The result, or the call's RPCError raised."""
        return unwrap(self.request(method, params))

    def error(self, method: str, params: dict | None = None) -> RPCError:
        """The RPCError a call must fail with."""
        try:
            result = self.call(method, params)
        except RPCError as err:
            return err
        raise AssertionError(f"{method} succeeded, expected an error: {result}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self, timeout: float = 20) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by PID: only the process we started
            return self.proc.wait()


@pytest.fixture
def agents():
    """Start agents with agents(config, as_user=..., env=...); all are closed at the end of the test."""
    started: list[Agent] = []

    def start(config: Path, **kw) -> Agent:
        agent = Agent(config, **kw)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


@pytest.fixture
def node(tmp_path):
    """A node folder (initialised, not running) for agent tests."""
    return make_node(tmp_path / "node")


@pytest.fixture
def env(tmp_path):
    """The agent's environment, with its authorized_keys file in the test's folder."""
    return agent_env(tmp_path / "authorized_keys")


def agent_call(
    config: Path,
    method: str,
    params: str | None = None,
    *,
    as_user: str | None = None,
    env: dict | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """`pacsdeck agent call` as a subprocess; a success's printed result must match the method's schema."""
    args = ["agent", "call", method, "--config", str(config)]
    if params is not None:
        args += ["--params", params]
    if as_user is not None:
        args += ["--as", as_user]
    done = subprocess.run(
        [sys.executable, "-m", "pacsdeck.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    check_cli(args, done)
    return done


# --- keys and sshd ---------------------------------------------------------------------------------


def ssh_keygen(path: Path, key_type: str = "ed25519") -> str:
    """A new key pair without passphrase; returns the public key line."""
    require_tool("ssh-keygen")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "test@pacsdeck", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Path(f"{path}.pub").read_text().strip()


def os_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class SSHD:
    """A real OpenSSH sshd on 127.0.0.1 with its own host key and a tmp authorized_keys file."""

    port: int
    dir: Path
    authorized_keys: Path
    host_key_line: str
    proc: subprocess.Popen
    log_path: Path
    clients: list = field(default_factory=list)

    def connect(self, private_key: Path, timeout: float = 15):
        """A paramiko client that trusts only this server's generated host key (no AutoAddPolicy)."""
        import paramiko

        key_type, b64 = self.host_key_line.split()[:2]
        client = paramiko.SSHClient()
        client.get_host_keys().add(
            f"[127.0.0.1]:{self.port}", key_type, paramiko.Ed25519Key(data=base64.b64decode(b64))
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.clients.append(client)
        client.connect(
            "127.0.0.1",
            port=self.port,
            username=os_user(),
            pkey=paramiko.Ed25519Key.from_private_key_file(str(private_key)),
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def sshd_binary() -> str:
    if Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd"
    return require_tool("sshd")


def start_sshd(folder: Path) -> SSHD:
    binary = sshd_binary()
    if os.geteuid() != 0:  # privilege separation needs root; CI runs as root
        message = "sshd fixture needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
    host_key = folder / "ssh_host_ed25519_key"
    host_key_line = ssh_keygen(host_key)
    authorized_keys = folder / "authorized_keys"
    port = free_port()
    config = folder / "sshd_config"
    # What a site server would plausibly allow: forwarding, PTYs and sftp are on here, so the
    # tests prove that `restrict,command=` in the key line is what takes them away.
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowAgentForwarding yes
PermitTTY yes
X11Forwarding no
MaxStartups 50
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    log_path = folder / "sshd.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    server = SSHD(
        port=port,
        dir=folder,
        authorized_keys=authorized_keys,
        host_key_line=host_key_line,
        proc=proc,
        log_path=log_path,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}:\n{server.log()}")
        return port_open(port)

    wait_for(up, what=f"sshd on port {port}")
    return server


def stop_sshd(server: SSHD) -> None:
    for client in server.clients:
        client.close()
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def sshd(tmp_path):
    server = start_sshd(tmp_path / "sshd")
    yield server
    stop_sshd(server)


# --- an SCP that rejects an unknown called AE title --------------------------------------------


@dataclass
class QRSCP:
    port: int
    ae_title: str
    proc: subprocess.Popen


@pytest.fixture
def dcmqrscp_factory(tmp_path):
    """DCMTK dcmqrscp: unlike storescp (which accepts any called AE title), it rejects titles not in its
    AETable with 'Called AE Title Not Recognized'."""
    started: list[QRSCP] = []

    def factory(ae_title: str = "QRSCP") -> QRSCP:
        binary = require_tool("dcmqrscp")
        folder = tmp_path / f"dcmqrscp-{ae_title}"
        (folder / "db").mkdir(parents=True)
        port = free_port()
        cfg = folder / "dcmqrscp.cfg"
        cfg.write_text(
            f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{ae_title} {folder / 'db'} RW (10, 64mb) ANY\nAETable END\n"
        )
        scp = QRSCP(port=port, ae_title=ae_title, proc=start_listener([binary, "-s", "-c", str(cfg), str(port)], port))
        started.append(scp)
        return scp

    yield factory
    for scp in started:
        terminate(scp.proc)
