"""DICOM TLS on the listener: each accepted socket wrapped without a handshake, which runs off the accept path.

With `tls:` set the whole listener speaks TLS (unless `listen: false`), and the same certificate
identifies the node to AEs registered with `tls: true` when it opens associations to them
(storage/config/tls.py parses the section and makes the contexts). Each accepted socket is wrapped
without a handshake (pynetdicom would do it in the accept loop, where one stalled client blocks
every other); the handshake runs in the connection's own DUL thread when its first bytes arrive,
bounded by limits.request_timeout (storage/dimse/guard.py).
"""

from __future__ import annotations

import socket
import ssl
import time


def wrap_accepted(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """The accepted socket as TLS, handshake not yet done (see handshake)."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


# What support staff should read next to OpenSSL's reason codes.
_HINTS = {
    "WRONG_VERSION_NUMBER": " (the peer does not speak TLS: a plain DICOM association on the TLS port?)",
    "HTTP_REQUEST": " (the peer does not speak TLS: a plain DICOM association on the TLS port?)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": " (the peer offered no client certificate; require_client_certificate is on)",
    "TLSV1_ALERT_UNKNOWN_CA": " (the peer does not trust the node's certificate: give it the CA that signed it)",
    "CERTIFICATE_VERIFY_FAILED": " (the peer's certificate does not chain to tls.ca_certificates)",
}


class HandshakeFailed(Exception):
    """The peer did not complete a TLS handshake in time, or offered no acceptable certificate."""


def handshake(sock: ssl.SSLSocket, deadline: float) -> None:
    """Complete the server side of the handshake by `deadline` (time.monotonic())."""
    previous = sock.gettimeout()
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HandshakeFailed("no time left for the TLS handshake")
        sock.settimeout(remaining)
        sock.do_handshake()
    except TimeoutError:
        raise HandshakeFailed("the TLS handshake did not complete in time") from None
    except ssl.SSLError as err:
        reason = err.reason or str(err)
        raise HandshakeFailed(f"TLS handshake failed: {reason}{_HINTS.get(reason, '')}") from None
    except OSError as err:
        raise HandshakeFailed(f"TLS handshake failed: {err.strerror or err}") from None
    except (AttributeError, ValueError):  # closed under us (node shutting down)
        raise HandshakeFailed("the connection was closed during the TLS handshake") from None
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
