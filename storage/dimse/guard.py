"""The listener's limits: what a peer may make the node allocate, and how long it may keep it waiting.

Why: the DICOM port answers every device on the network before any AE title is checked.
pynetdicom 3.0.4 trusts the peer: it reads a PDU by allocating its declared length (up to 4 GiB),
reads with no deadline once a PDU has begun, counts half-open connections against the
association limit, and after aborting a bad request keeps the connection's thread for its ACSE
timeout. Here each PDU is read by `read_pdu` (installed on every accepted connection's DUL by
reactors.prepare, in place of `DULServiceProvider._read_pdu_data`):

- its length is checked against what that PDU type may be (the negotiated maximum for P-DATA,
  1 MiB for an A-ASSOCIATE-RQ as in DCMTK, 4 bytes for the fixed-size ones) before anything is
  allocated, and the buffer grows as bytes arrive, never to a declared length;
- it must arrive whole within `pdu_timeout`, and the A-ASSOCIATE-RQ within `request_timeout` of
  the connection; the deadlines come from the socket, not pynetdicom's timers;
- anything malformed, unexpected, oversized or late gets an A-ABORT with its reason at once, one
  log line, a count in `pacsdeck_rejected_total{reason}`, and the connection is closed.

`Gate` counts connections per worker: those still negotiating (capped at `max_pending`; the oldest
is closed to make room, so idle connections cannot lock real peers out) apart from associations
(`max_associations`, per calling AE title and per peer address, answered with A-ASSOCIATE-RJ
"local limit exceeded"); a connection's place is freed the moment it closes.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import ssl
import struct
import threading
import time

from storage import metrics
from storage.config.limits import LimitsConfig

from . import tls

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">BBL")
ASSOCIATE_RQ_MAX = 1024 * 1024  # DCMTK's cap on an A-ASSOCIATE-RQ/AC; a viewer's 120 contexts take ~10 KB
_FIXED_LENGTH = {0x03: 4, 0x05: 4, 0x06: 4, 0x07: 4}  # A-ASSOCIATE-RJ, A-RELEASE-RQ/RP, A-ABORT (PS3.8 9.3)
# A peer may count the 6-byte PDU header or the PDV item header into the negotiated maximum; allow both.
_PDATA_SLACK = 16
_CHUNK = 256 * 1024  # a buffer starts at most this big and doubles as the bytes actually arrive

# A-ABORT reasons (PS3.8 table 9-26), source 2: the service provider.
REASON_NOT_SPECIFIED = 0x00
UNRECOGNIZED_PDU = 0x01
UNEXPECTED_PDU = 0x02
INVALID_PARAMETER = 0x06


class Refused(Exception):
    """A peer's input is refused: `reason` is the metric label, `abort` the A-ABORT reason to send."""

    def __init__(self, reason: str, detail: str, abort: int = REASON_NOT_SPECIFIED):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.abort = abort


_LOG_EVERY = 5.0  # seconds: under attack, one line per reason this often, saying how many were not logged
_last_logged: dict[str, list] = {}  # reason -> [monotonic time of its last line, refusals not logged since]
_log_lock = threading.Lock()


def rejected(reason: str, peer: str, detail: str) -> None:
    """Count a refused input, and log it in one line (no traceback), at most one per reason every 5 s."""
    metrics.rejected(reason)
    now = time.monotonic()
    with _log_lock:
        last = _last_logged.setdefault(reason, [-_LOG_EVERY, 0])
        if now - last[0] < _LOG_EVERY:
            last[1] += 1
            return
        quiet, last[0], last[1] = last[1], now, 0
    more = f" ({quiet} more refused for {reason} since the last line)" if quiet else ""
    log.warning("refused %s from %s: %s%s", reason, peer, detail, more)


def peer_of(assoc) -> str:
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    return f"{remote.address}:{remote.port}"


def _peer(dul) -> str:
    return peer_of(dul.assoc)


_DEFAULT_LIMITS = LimitsConfig()


def limits_of(assoc) -> LimitsConfig:
    """The node's limits for an association it accepted; the defaults for one it opened."""
    return getattr(assoc.ae, "limits", None) or _DEFAULT_LIMITS


def pdu_limit(assoc, pdu_type: int, state: str) -> int:
    """The largest PDU length this association accepts for `pdu_type` now; raises Refused when
    that type is unknown or unexpected in `state` (PS3.8 9.2: the state machine would abort too)."""
    if pdu_type == 0x04:
        if state in ("Sta1", "Sta2", "Sta5"):  # before the association exists
            raise Refused("unexpected-pdu", "P-DATA before the association was accepted", UNEXPECTED_PDU)
        ours = (assoc.acceptor if assoc.is_acceptor else assoc.requestor).maximum_length
        return ours + _PDATA_SLACK if ours else 0xFFFFFFFF
    if pdu_type in (0x01, 0x02):
        # Sta1: the request can be read before the DUL has handled the connection's own Evt5.
        if state not in (("Sta1", "Sta2") if assoc.is_acceptor else ("Sta5",)) and state != "Sta13":
            raise Refused("unexpected-pdu", f"PDU type 0x{pdu_type:02X} in an established association", UNEXPECTED_PDU)
        return ASSOCIATE_RQ_MAX
    fixed = _FIXED_LENGTH.get(pdu_type)
    if fixed is None:
        raise Refused("unknown-pdu-type", f"unknown PDU type 0x{pdu_type:02X}", UNRECOGNIZED_PDU)
    if state in ("Sta1", "Sta2") and assoc.is_acceptor:
        raise Refused("unexpected-pdu", f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE-RQ", UNEXPECTED_PDU)
    return fixed


def check_length(assoc, pdu_type: int, length: int, state: str) -> None:
    limit = pdu_limit(assoc, pdu_type, state)
    if length > limit:
        raise Refused(
            "pdu-too-long",
            f"PDU type 0x{pdu_type:02X} declares {length} bytes, at most {limit} allowed",
            INVALID_PARAMETER,
        )
    if pdu_type in _FIXED_LENGTH and length != limit:
        raise Refused(
            "bad-pdu-length", f"PDU type 0x{pdu_type:02X} declares {length} bytes, not {limit}", INVALID_PARAMETER
        )


class _Stalled(Exception):
    def __init__(self, got: int, count: int):
        super().__init__(f"{got} of {count} bytes")
        self.got = got


class _Closed(Exception):
    def __init__(self, got: int):
        super().__init__(f"closed after {got} bytes")
        self.got = got


def readable(fds, timeout: float | None) -> list:
    """Those of `fds` (sockets or descriptors) readable within `timeout` seconds (None: no limit).
    poll(), not select(): a worker with many connections has descriptors past select's 1024."""
    poller = select.poll()
    by_fd = {}
    for item in fds:
        fd = item if isinstance(item, int) else item.fileno()
        if fd >= 0:
            by_fd[fd] = item
            poller.register(fd, select.POLLIN | select.POLLPRI)
    events = poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
    return [by_fd[fd] for fd, _ in events if fd in by_fd]


def read_exactly(sock, count: int, deadline: float) -> bytearray:
    """`count` bytes from `sock` by `deadline` (time.monotonic()); the buffer grows with what
    arrives. Raises _Stalled at the deadline, _Closed when the peer closes, OSError as the socket does."""
    buf = bytearray(min(count, _CHUNK))
    got = 0
    tls = isinstance(sock, ssl.SSLSocket)
    while got < count:
        if got == len(buf):
            buf += bytes(min(count - got, len(buf)))
        try:
            with memoryview(buf) as view:
                if tls:
                    n = _recv_tls(sock, view[got:], deadline)
                else:
                    n = sock.recv_into(view[got:], len(buf) - got, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not readable([sock], remaining):
                raise _Stalled(got, count) from None
            continue
        if n == 0:
            raise _Closed(got)
        got += n
    return buf


def _recv_tls(sock: ssl.SSLSocket, view: memoryview, deadline: float) -> int:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Stalled(0, len(view))
    previous = sock.gettimeout()
    sock.settimeout(remaining)
    try:
        return sock.recv_into(view, len(view))
    except (TimeoutError, ssl.SSLWantReadError):
        raise _Stalled(0, len(view)) from None
    finally:
        sock.settimeout(previous)


def abort_and_close(dul, err: Refused) -> None:
    """Send an A-ABORT with `err`'s reason, close the connection (Evt17 follows) and count it."""
    rejected(err.reason, _peer(dul), err.detail)
    conn = dul.socket
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.sendall(_HEADER.pack(0x07, 0, 4) + bytes((0, 0, 0x02, err.abort)))
            sock.shutdown(socket.SHUT_WR)  # the abort goes out before the FIN; then drain what is in flight
            sock.setblocking(False)
            for _ in range(16):
                if not sock.recv(65536):
                    break
        except OSError:
            pass
    if conn is not None:
        conn.close()  # puts Evt17: the state machine ends the association and frees its place


def read_pdu(dul, limits: LimitsConfig, opened_at: float, gate: Gate | None) -> None:
    """DULServiceProvider._read_pdu_data with limits: one whole PDU, checked before it is read."""
    conn = dul.socket
    sock = getattr(conn, "socket", None)
    if sock is None:
        dul.event_queue.put("Evt17")
        return
    assoc = dul.assoc
    state = dul.state_machine.current_state
    deadline = time.monotonic() + limits.pdu_timeout
    awaiting_request = assoc.is_acceptor and state in ("Sta1", "Sta2")
    if awaiting_request:
        deadline = min(deadline, opened_at + limits.request_timeout)
    if isinstance(sock, ssl.SSLSocket) and not getattr(conn, "_pacsdeck_tls_done", False) and assoc.is_acceptor:
        try:
            tls.handshake(sock, deadline)
        except tls.HandshakeFailed as err:
            rejected("tls-handshake", _peer(dul), str(err))
            conn.close()
            return
        conn._pacsdeck_tls_done = True
        return  # the request follows; the DUL reads it when it is there (or buffered: socket.ready says so)
    try:
        header = read_exactly(sock, 6, deadline)
        pdu_type, _, length = _HEADER.unpack(header)
        check_length(assoc, pdu_type, length, state)
        body = read_exactly(sock, length, deadline) if length else b""
    except Refused as err:
        abort_and_close(dul, err)
        return
    except _Stalled as err:
        what = "the A-ASSOCIATE-RQ" if awaiting_request else "a PDU"
        limit = limits.request_timeout if awaiting_request else limits.pdu_timeout
        abort_and_close(dul, Refused("timeout", f"{what} did not arrive whole within {limit:g} s ({err})"))
        return
    except _Closed:
        dul.event_queue.put("Evt17")  # the peer closed, perhaps mid-PDU: nothing more will come
        return
    except OSError as err:
        log.info("connection from %s failed: %s", _peer(dul), err)
        dul.event_queue.put("Evt17")
        return
    header += body
    if awaiting_request and gate is not None:
        gate.request_arrived(assoc)
    try:
        pdu, event = dul._decode_pdu(header)
    except Exception as err:  # noqa: BLE001 - pynetdicom raises many types for bad PDU items
        abort_and_close(
            dul,
            Refused(
                "undecodable-pdu",
                f"PDU type 0x{pdu_type:02X} does not decode: {type(err).__name__}: {str(err)[:200]}",
                INVALID_PARAMETER,
            ),
        )
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)


class _Connection:
    __slots__ = ("assoc", "opened_at", "calling", "host", "admitted")

    def __init__(self, assoc, host: str):
        self.assoc = assoc
        self.opened_at = time.monotonic()
        self.calling = ""
        self.host = host
        self.admitted = False


class Gate:
    """This worker's connections: still negotiating (pending) or admitted as associations."""

    def __init__(self, limits: LimitsConfig, max_associations: int):
        self.limits = limits
        self.max_associations = max_associations
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._admitted: dict[int, _Connection] = {}

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._pending), len(self._admitted)

    def opened(self, assoc, host: str) -> float:
        """A connection was accepted: it waits for its A-ASSOCIATE-RQ. Returns its opening time.
        Past `max_pending`, the connection that has waited longest without bytes waiting to be read
        is closed to make room: a real peer sends its request at once, and under a flood of new
        connections its thread may not have read it yet; a silent or drip-feeding one has nothing
        waiting (or is being read, byte by byte, by its own thread)."""
        conn = _Connection(assoc, host)
        evicted = []
        with self._lock:
            self._pending[id(assoc)] = conn
            excess = len(self._pending) - self.limits.max_pending
            if excess > 0:
                for key in _idle_first(self._pending, excess):
                    evicted.append(self._pending.pop(key))
        for old in evicted:
            rejected(
                "pending-limit",
                f"{old.host}",
                f"closed after {time.monotonic() - old.opened_at:.1f} s without "
                f"an association request: {self.limits.max_pending} connections were waiting",
            )
            _shutdown(old.assoc)
        return conn.opened_at

    def request_arrived(self, assoc) -> None:
        with self._lock:
            conn = self._pending.pop(id(assoc), None)
            if conn is not None:
                self._admitted.setdefault(id(assoc), conn)

    def admit(self, assoc, calling: str, host: str) -> str | None:
        """At EVT_REQUESTED: None when the association may go on, else why not (local limit)."""
        with self._lock:
            conn = self._admitted.get(id(assoc)) or self._pending.pop(id(assoc), None) or _Connection(assoc, host)
            self._admitted.pop(id(assoc), None)
            live = [c for c in self._admitted.values() if c.admitted]
            reason = None
            if len(live) >= self.max_associations:
                reason = f"{len(live)} associations open (max_associations)"
            elif (
                self.limits.max_associations_per_ae
                and sum(c.calling == calling for c in live) >= self.limits.max_associations_per_ae
            ):
                reason = (
                    f"{calling} has {self.limits.max_associations_per_ae} associations open "
                    "(limits.max_associations_per_ae)"
                )
            elif (
                self.limits.max_associations_per_host
                and sum(c.host == host for c in live) >= self.limits.max_associations_per_host
            ):
                reason = (
                    f"{host} has {self.limits.max_associations_per_host} associations open "
                    "(limits.max_associations_per_host)"
                )
            if reason is None:
                conn.calling, conn.host, conn.admitted = calling, host, True
                self._admitted[id(assoc)] = conn
        return reason

    def close_all(self) -> None:
        """At shutdown: close every connection, negotiating or associated. pynetdicom's threads are
        not daemons, so an idle association kept a stopping node up for its idle_timeout (60 s), a
        stalled PDU or TLS handshake for its deadline. An instance whose commit is under way is
        still committed; its sender gets no answer and sends it again (a duplicate, kept once)."""
        with self._lock:
            connections = [*self._pending.values(), *self._admitted.values()]
        for conn in connections:
            _shutdown(conn.assoc)

    def closed(self, assoc) -> None:
        """The connection closed or its thread ended: free its place, and wake an acceptor thread
        still waiting for a request that can no longer come (pynetdicom would wait its ACSE timeout)."""
        with self._lock:
            self._pending.pop(id(assoc), None)
            self._admitted.pop(id(assoc), None)
        if assoc.is_acceptor and not assoc.is_established and assoc.requestor.primitive is None:
            q = assoc.dul.to_user_queue
            with q.mutex:
                if not q.queue:
                    q.queue.append(None)  # receive_pdu returns None: "no request", the thread ends at once
                    q.not_empty.notify()


def _idle_first(pending: collections.OrderedDict[int, _Connection], count: int) -> list[int]:
    """The keys of the `count` oldest pending connections with no bytes waiting; the oldest of the
    others if there are not enough of those."""
    socks = {}
    for key, conn in pending.items():
        sock = getattr(conn.assoc.dul.socket, "socket", None)
        if sock is not None and sock.fileno() >= 0:
            socks[key] = sock
    try:
        waiting = set(readable(list(socks.values()), 0)) if socks else set()
    except (OSError, ValueError):  # a socket closed meanwhile: treat every one as idle
        waiting = set()
    idle = [key for key in pending if socks.get(key) not in waiting]
    busy = [key for key in pending if key not in idle]
    return (idle + busy)[:count]


def _shutdown(assoc) -> None:
    """Close a connection from another thread: its DUL wakes, reads the end and cleans up."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its SSL
            # object under the thread that is using it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass
