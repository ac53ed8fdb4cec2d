"""One agent session per node: `open_transport` picks the local pipe or the SSH channel for a fleet entry.

base.py holds what both share (call, timeouts, backoff), local.py the child process, ssh.py paramiko.
"""

from __future__ import annotations

from ..hostkeys import KnownHosts
from ..inventory import LOCAL, NodeEntry
from .base import BACKOFF_INITIAL, BACKOFF_MAX, MAX_ANSWER_BYTES, Refused, Transport, TransportError
from .local import LocalTransport, local_command
from .ssh import HostKeyChanged, HostKeyUnknown, SSHTransport

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "MAX_ANSWER_BYTES",
    "HostKeyChanged",
    "HostKeyUnknown",
    "LocalTransport",
    "Refused",
    "SSHTransport",
    "Transport",
    "TransportError",
    "local_command",
    "open_transport",
]


def open_transport(entry: NodeEntry, known_hosts: KnownHosts, **kw) -> Transport:
    """The transport for one fleet entry; nothing is started or connected until the first call."""
    if entry.transport == LOCAL:
        return LocalTransport(entry, **kw)
    return SSHTransport(entry, known_hosts, **kw)
