"""pacsdeck's own pinned SSH host keys (OpenSSH known_hosts format), fingerprints, and the key scan for trusting."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry

from . import tcp

# An `ssh-rsa` key is negotiated under these signature algorithm names.
_RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def host_pattern(host: str, port: int) -> str:
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key) -> str:
    """SHA256:… of the public key blob, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class KnownHosts:
    """One known_hosts file, read on every lookup (another console may have trusted a node meanwhile)."""

    def __init__(self, path: Path, hashed: bool = True):
        self.path = Path(path)
        # Hashed names by default (OpenSSH's HashKnownHosts): a copied file does not list the fleet's hosts.
        self.hashed = hashed

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        try:
            keys.load(str(self.path))
        except FileNotFoundError:
            pass
        return keys

    def lookup_all(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """key type -> pinned key for host:port (plain or hashed entries)."""
        found = self._load().lookup(host_pattern(host, port))
        return dict(found) if found else {}

    def lookup(self, host: str, port: int) -> paramiko.PKey | None:
        keys = self.lookup_all(host, port)
        return next(iter(keys.values()), None)

    def trust(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Pin `key` for host:port, replacing what was pinned for that host and port before.

        Callers decide whether a replacement is allowed (`fleet trust --replace`); this only writes.
        """
        pattern = host_pattern(host, port)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # two consoles trusting at once must not lose a line
            kept = [line for line in self._lines() if not _names_host(line, pattern)]
            name = paramiko.HostKeys.hash_host(pattern) if self.hashed else pattern
            kept.append(f"{name} {key.get_name()} {key.get_base64()}")
            self._write(kept)
        finally:
            os.close(lock_fd)

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def _write(self, lines: list[str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=self.path.parent)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("".join(f"{line}\n" for line in lines))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _names_host(line: str, pattern: str) -> bool:
    """Does this known_hosts line pin a key for exactly `pattern` (plain, comma list or hashed)?"""
    if not line.strip() or line.lstrip().startswith("#"):
        return False
    try:
        entry = HostKeyEntry.from_line(line)
    except Exception:  # noqa: BLE001 - a line paramiko cannot read is kept as it was
        return False
    if entry is None:
        return False
    for name in entry.hostnames:
        if name.startswith("|1|"):
            if paramiko.HostKeys.hash_host(pattern, name) == name:
                return True
        elif name == pattern:
            return True
    return False


def scan_host_key(host: str, port: int, timeout: float = 5.0, prefer: tuple[str, ...] = ()) -> paramiko.PKey:
    """The host key the server offers: key exchange only, then close. No authentication, no command.

    `prefer`: key types to ask for first, e.g. the types already pinned for this host, so a server with
    several host keys is compared on the one pacsdeck knows (as the SSH transport does when it connects).
    """
    sock = tcp.connect(host, port, timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        if prefer:
            options = transport.get_security_options()
            wanted = [a for t in prefer for a in (_RSA_SIGNATURES if t == "ssh-rsa" else (t,))]
            first = [t for t in wanted if t in options.key_types]
            options.key_types = first + [t for t in options.key_types if t not in first]
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()
        sock.close()
