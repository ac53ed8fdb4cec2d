"""The `tls:` section of node.yaml (PS3.15 B.1) and the SSL contexts it makes: checked at init, not at the first peer.

Keys and certificates are read from files that only their owner may write, and a private key that
others may read is refused. The listener's use of these contexts is storage/dimse/tls.py.
"""

from __future__ import annotations

import functools
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from .values import ConfigError


@dataclass(frozen=True)
class TLSConfig:
    certificate: Path  # PEM: the node's certificate (and chain)
    private_key: Path  # PEM, unencrypted, mode 0600 or stricter
    ca_certificates: Path | None = None  # PEM bundle that client certificates must chain to
    require_client_certificate: bool = False  # mutual TLS: a peer without a certificate from the CA is refused
    listen: bool = True  # False: the files serve only the associations the node opens (AEs with tls: true)


def _file(value, where: str, base: Path, secret: bool) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: a file path")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        st = path.stat()
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: {path} is not a regular file")
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{where}: {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it"
        )
    if secret and st.st_mode & 0o077:
        raise ConfigError(
            f"{where}: {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "a private key must be chmod 600"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{where}: {path} belongs to uid {st.st_uid}, neither root nor the node's user")
    return path


def parse_tls(raw, base: Path) -> TLSConfig | None:
    """The `tls:` section; None when absent. Errors name the field."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("tls: must be a mapping with certificate, private_key (and ca_certificates)")
    known = {"certificate", "private_key", "ca_certificates", "require_client_certificate", "listen"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"tls: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    for key in ("certificate", "private_key"):
        if key not in raw:
            raise ConfigError(f"tls.{key}: required")
    require = raw.get("require_client_certificate", False)
    if not isinstance(require, bool):
        raise ConfigError(f"tls.require_client_certificate: true or false, got {require!r}")
    listen = raw.get("listen", True)
    if not isinstance(listen, bool):
        raise ConfigError(f"tls.listen: true or false, got {listen!r}")
    ca = _file(raw["ca_certificates"], "tls.ca_certificates", base, False) if raw.get("ca_certificates") else None
    if require and ca is None:
        raise ConfigError(
            "tls.ca_certificates: required with require_client_certificate (the CA that signs "
            "the clients' certificates)"
        )
    cfg = TLSConfig(
        certificate=_file(raw["certificate"], "tls.certificate", base, False),
        private_key=_file(raw["private_key"], "tls.private_key", base, True),
        ca_certificates=ca,
        require_client_certificate=require,
        listen=listen,
    )
    server_context(cfg)  # a key that does not match its certificate fails here, at init, not at the first peer
    return cfg


def server_context(cfg: TLSConfig) -> ssl.SSLContext:
    """TLS 1.2 or later (BCP 195), the node's certificate, and client verification when asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cfg.certificate, cfg.private_key)
        if cfg.ca_certificates is not None:
            context.load_verify_locations(cfg.ca_certificates)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"tls: cannot use {cfg.certificate} and {cfg.private_key}: {err}") from None
    context.verify_mode = (
        ssl.CERT_REQUIRED
        if cfg.require_client_certificate
        else ssl.CERT_OPTIONAL
        if cfg.ca_certificates is not None
        else ssl.CERT_NONE
    )
    return context


@functools.lru_cache(maxsize=8)  # one per configuration: loading the key and CAs costs milliseconds per association
def client_context(cfg: TLSConfig | None) -> ssl.SSLContext:
    """For associations the node opens to an AE registered with `tls: true`: the peer's certificate
    must chain to `ca_certificates` (or the system's CAs); the node presents its own certificate,
    for peers that require one. The peer's name is not checked: DICOM peers are configured by
    address, and their certificates seldom name it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if cfg is not None:
        if cfg.ca_certificates is not None:
            context.load_verify_locations(cfg.ca_certificates)
        context.load_cert_chain(cfg.certificate, cfg.private_key)
    return context
