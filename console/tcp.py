"""TCP connections to nodes whose host name lookup is bounded by the same timeout as the connect."""

from __future__ import annotations

import socket
import threading


class LookupFailed(OSError):
    """The node's host name could not be resolved (no such name, or no answer in time)."""


def resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo for a stream socket, giving up after `timeout` seconds.

    socket.getaddrinfo has no timeout: with a DNS server that does not answer, glibc waits
    5 s per server and attempt, far past a node's connect_timeout, and the console's poll of that
    node with it. The lookup runs on a daemon thread; a late answer is dropped.
    """
    found: dict = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            found["error"] = err
        done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(timeout):
        raise LookupFailed(f"cannot resolve {host}: no answer from DNS within {timeout:g} s")
    if "error" in found:
        err = found["error"]
        raise LookupFailed(f"cannot resolve {host}: {getattr(err, 'strerror', None) or err}")
    return found["addresses"]


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket (timeout set) to the first address of `host` that accepts, like
    socket.create_connection, with the lookup bounded too."""
    last: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port, timeout):
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as err:
            sock.close()
            last = err
    raise last if last is not None else LookupFailed(f"cannot resolve {host}: no address")
