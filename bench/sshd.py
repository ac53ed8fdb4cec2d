"""Loopback OpenSSH sshd processes for benches: own host key, own authorized_keys, stopped by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ssh_keygen(path: Path, key_type: str = "ed25519") -> str:
    """A new key pair without passphrase; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "bench@pacsdeck", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class BenchSSHD:
    port: int
    dir: Path
    host_key: Path
    authorized_keys: Path
    log_path: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sshd_binary() -> str:
    path = "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else shutil.which("sshd")
    if not path:
        raise SystemExit("sshd is not installed (Debian: apt-get install openssh-server)")
    return path


def start_sshd(folder: Path, max_startups: int = 200) -> BenchSSHD:
    """sshd -D on 127.0.0.1:<free port>; needs root (privilege separation), like the tests' fixture."""
    if os.geteuid() != 0:
        raise SystemExit("the fleet bench starts sshd, which needs root for privilege separation")
    binary = sshd_binary()
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
    host_key = folder / "ssh_host_ed25519_key"
    ssh_keygen(host_key)
    authorized_keys = folder / "authorized_keys"
    authorized_keys.touch(mode=0o600)
    port = free_port()
    config = folder / "sshd_config"
    # MaxStartups: a console connects to every node at once; sshd's default (10:30:100) would drop
    # the 11th unauthenticated connection at random and the bench would measure retries.
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
MaxStartups {max_startups}
MaxSessions 10
LogLevel ERROR
""")
    log_path = folder / "sshd.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    server = BenchSSHD(
        port=port, dir=folder, host_key=host_key, authorized_keys=authorized_keys, log_path=log_path, proc=proc
    )
    deadline = time.monotonic() + 20
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sshd did not listen on {port} within 20 s")
        threading.Event().wait(0.05)
    return server
