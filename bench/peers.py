"""DICOM servers for the ingest bench: pacsdeck, DCMTK storescp and Orthanc, each a child process on a free port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

LOOPBACK = "127.0.0.1"
SENDER_AET = "STORESCU"  # storescu's default calling AE title
START_TIMEOUT = 60.0  # seconds a server may take to answer
STOP_TIMEOUT = 30.0  # seconds a server may take to exit after SIGTERM


class BenchError(RuntimeError):
    """The bench cannot go on (a tool is missing, a server did not start)."""


# --- tools ------------------------------------------------------------------------------------


def dcmtk_env() -> dict[str, str]:
    """Environment for every DCMTK process: DCMTK 3.6.7 leaves Nagle on unless TCP_NODELAY is set."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def _search_path() -> list[str]:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return [d for d in dirs if d] + ["/usr/local/sbin", "/usr/sbin", "/usr/local/bin", "/usr/bin"]


def find_dcmtk(name: str) -> str:
    """The DCMTK binary `name`, skipping pynetdicom's same-named apps (e.g. in the venv's bin)."""
    seen = set()
    for folder in _search_path():
        path = shutil.which(name, path=folder)
        if path is None or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return path
    raise BenchError(f"DCMTK {name} not found on PATH (apt-get install dcmtk)")


def find_orthanc() -> str | None:
    """The Orthanc binary, or None when it is not installed."""
    for folder in _search_path():
        path = shutil.which("Orthanc", path=folder)
        if path:
            return path
    return None


def tool_version(argv: list[str]) -> str:
    """First non-empty line of `argv --version`."""
    try:
        out = subprocess.run(argv + ["--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [line.strip(" $") for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --- processes --------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process and its children by PID; SIGKILL whatever is left after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    proc.terminate()
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def echo_ok(echoscu: str, port: int, called_aet: str, *extra: str) -> bool:
    """Does a C-ECHO to 127.0.0.1:port succeed?"""
    argv = [echoscu, "-aet", SENDER_AET, "-aec", called_aet, "-to", "2", "-ta", "5", *extra, LOOPBACK, str(port)]
    try:
        result = subprocess.run(argv, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


# --- servers ----------------------------------------------------------------------------------


class Server:
    """One DICOM server under test, in its own folder, stopped by PID when the `with` block ends."""

    name = "server"
    ae_title = "ANY-SCP"

    def __init__(self, workdir: Path, echoscu: str):
        self.workdir = Path(workdir).resolve()
        self.echoscu = echoscu
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._files: list = []  # our copies of the child's stdout/stderr, closed on stop

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dcmtk_env()

    def prepare(self) -> None:
        """Create storage and configuration in the work folder."""

    def is_ready(self) -> bool:
        return echo_ok(self.echoscu, self.port, self.ae_title, *self.sender_args())

    def sender_args(self) -> list[str]:
        """Extra DCMTK options a sender needs for this server (TLS)."""
        return []

    def stored_count(self) -> int | None:
        """How many instances the server holds now, by its own account (None if unknown)."""
        return None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        log = self._open(self.log_path)
        stdout = self._open(self.stdout_path) if self.stdout_path else log
        self.proc = subprocess.Popen(
            self.argv(), cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL, stdout=stdout, stderr=log
        )
        self._wait_ready()

    @property
    def stdout_path(self) -> Path | None:
        """Where the child's stdout goes when it is not the log."""
        return None

    def _open(self, path: Path):
        handle = open(path, "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(handle)
        return handle

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} at start; see {self.log_path}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name} not ready after {START_TIMEOUT:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        for handle in self._files:
            handle.close()
        self._files.clear()

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PacsdeckServer(Server):
    """`pacsdeck node run` with a node.yaml written here; the sender's AE title is registered.

    `source`: run the pacsdeck of another checkout (a git worktree of an earlier commit) instead of
    this one, with the same Python and libraries. `tls`: the `tls:` section to listen with, and the
    DCMTK options a sender then needs."""

    name = "pacsdeck"
    ae_title = "PACSDECK"

    def __init__(
        self, workdir: Path, echoscu: str, source: Path | None = None, tls: tuple[dict, list[str]] | None = None
    ):
        super().__init__(workdir, echoscu)
        self.source = source
        self.tls = tls

    def sender_args(self) -> list[str]:
        return list(self.tls[1]) if self.tls else []

    @property
    def config_path(self) -> Path:
        return self.workdir / "node.yaml"

    def _pacsdeck(self) -> list[str]:
        if self.source is not None:  # the editable install's import hook would load this checkout: drop it
            launcher = (
                f"import sys; sys.path.insert(0, {str(self.source)!r}); "
                "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
                "from pacsdeck.cli import main; sys.exit(main())"
            )
            return [sys.executable, "-c", launcher]
        script = Path(sys.executable).parent / "pacsdeck"
        return [str(script)] if script.exists() else [sys.executable, "-m", "pacsdeck.cli"]

    def node_yaml(self) -> dict:
        return {
            "ae_title": self.ae_title,
            "port": self.port,
            "bind": LOOPBACK,
            "open_mode": False,
            "require_called_aet": True,
            "duplicates": "keep",
            "max_pdu": 131072,
            "max_associations": 32,
            "index": "index.sqlite",
            "pools": [{"name": "primary", "path": "pools/primary", "tier": "primary"}],
            "aets": [{"ae_title": SENDER_AET, "host": LOOPBACK}],
            **({"tls": self.tls[0]} if self.tls else {}),
        }

    def prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.node_yaml(), sort_keys=False), encoding="utf-8")
        argv = self._pacsdeck() + ["node", "init", "--dir", str(self.workdir)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
        if result.returncode != 0:
            raise BenchError(f"pacsdeck node init failed ({result.returncode}): {result.stderr.strip()}")

    def argv(self) -> list[str]:
        return self._pacsdeck() + ["node", "run", "--config", str(self.config_path)]

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "pacsdeck.stdout"

    def is_ready(self) -> bool:
        """The node prints `ready AE@host:port` once it listens."""
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace").startswith("ready ")
        except FileNotFoundError:
            return False

    def stored_count(self) -> int | None:
        try:
            uri = f"file:{self.workdir / 'index.sqlite'}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=10) as conn:
                return conn.execute("SELECT count(*) FROM instances").fetchone()[0]
        except sqlite3.Error:
            return None


def test_pki(folder: Path) -> tuple[dict, list[str]]:
    """A throwaway CA and node certificate in `folder`: the node's `tls:` section, and the storescu
    options that verify the node (TLS with a server certificate, BCP 195 profile)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(key, cn, issuer_key, issuer_cn, ca):
        name = lambda text: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])  # noqa: E731
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(issuer_cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )

    ca_key, node_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (folder / "ca.pem").write_bytes(
        certificate(ca_key, "bench CA", ca_key, "bench CA", True).public_bytes(serialization.Encoding.PEM)
    )
    (folder / "node.pem").write_bytes(
        certificate(node_key, "node", ca_key, "bench CA", False).public_bytes(serialization.Encoding.PEM)
    )
    key_path = folder / "node.key"
    key_path.write_bytes(
        node_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    section = {"certificate": str(folder / "node.pem"), "private_key": str(key_path)}
    return section, ["+tla", "+cf", str(folder / "ca.pem")]


class StorescpServer(Server):
    """DCMTK storescp, one process per association (--fork), accepting all syntaxes; it does not fsync."""

    name = "storescp"
    ae_title = "STORESCP"

    def __init__(self, workdir: Path, echoscu: str, storescp: str):
        super().__init__(workdir, echoscu)
        self.storescp = storescp

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def prepare(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        # storescp 3.6.7 has no bind-address option: it listens on every interface; we only send on loopback.
        return [self.storescp, "--fork", "+xa", "-aet", self.ae_title, "-od", str(self.storage), str(self.port)]

    def stored_count(self) -> int | None:
        return sum(1 for entry in os.scandir(self.storage) if entry.is_file())


class OrthancServer(Server):
    """Orthanc with its own JSON config: storage and index here, no plugins, fsync (SyncStorageArea) on."""

    name = "orthanc"
    ae_title = "ORTHANC"

    def __init__(self, workdir: Path, echoscu: str, orthanc: str):
        super().__init__(workdir, echoscu)
        self.orthanc = orthanc
        self.http_port = free_port()

    @property
    def config_path(self) -> Path:
        return self.workdir / "orthanc.json"

    def config(self) -> dict:
        return {
            "Name": "pacsdeck-bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,  # Orthanc's default, stated: fsync each stored file
            "Plugins": [],
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomModalities": {},
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
        }

    def prepare(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")

    def argv(self) -> list[str]:
        # DICOM listens on every interface (Orthanc has no DICOM bind option); we only send on loopback.
        return [self.orthanc, str(self.config_path)]

    def stored_count(self) -> int | None:
        url = f"http://{LOOPBACK}:{self.http_port}/statistics"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return int(json.load(response)["CountInstances"])
        except (OSError, ValueError, KeyError):
            return None
