"""Event-driven wake-ups for pynetdicom's two reactors, and prompt ends of refused or closed connections.

Why: pynetdicom 3.0.4 polls. The association reactor sleeps 1 ms on every pass
(`association.py`, `_run_reactor`) and the DUL reactor sleeps `_run_loop_delay` (1 ms) whenever a
pass finds nothing to do (`dul.py`, `run_reactor`). Every C-STORE crosses both: the decoded request
waits for the association thread to wake, the response for the DUL thread. On one association that
latency, not CPU, bounds the rate (docs/performance.md has the figures).

How: for each accepted connection, and for the association a C-MOVE opens to its destination
(from EVT_CONN_OPEN), the two sleeps become waits that end as soon as there is work. The
association thread waits on an Event set when the DUL queues a DIMSE message or an
A-RELEASE/A-ABORT for it; the DUL thread waits in poll() on its socket and on a self-pipe written
when a primitive is queued for sending. The timeouts are pynetdicom's own, so an idle association
wakes exactly as often as before (idle CPU unchanged). Threads we did not prepare keep time.sleep.
Applied by install() (storage/dimse/__init__.py), never on import.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import threading
import time
import weakref

import pynetdicom.association
import pynetdicom.dimse
import pynetdicom.dul
import pynetdicom.fsm
import pynetdicom.transport

from . import guard, inline, message_guard

log = logging.getLogger(__name__)


def _notify_on_put(q: queue.Queue, notify) -> queue.Queue:
    """Make `q` call `notify` after each put. The queue object stays the same, so a thread already
    blocked in q.get() (a requestor waiting for its A-ASSOCIATE-AC) is not left on a stale queue."""
    put = q.put

    def put_and_notify(item, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        notify()

    q.put = put_and_notify
    return q


class _TimeWithWakeups:
    """Stands in for the `time` module inside pynetdicom's association and dul modules.

    A prepared thread's sleeps become waits that end when there is work. In association.py the
    1 ms sleep is the reactor's pass (the only one of that length there); in dul.py only the DUL's
    own loop sleeps on a DUL thread. Any other sleep (stop_dul's poll run by an association thread,
    a send's 0.1 ms pause) keeps its length."""

    def __init__(self, module: str):
        self._association = module == "association"

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        wait = getattr(thread, "_pacsdeck_wait", None)
        if wait is None:
            time.sleep(seconds)
        elif isinstance(thread, pynetdicom.dul.DULServiceProvider):
            wait(seconds)
        else:
            wait(seconds, self._association and seconds == _REACTOR_DELAY)


# The longest an idle reactor waits when nothing it knows of is due: every change it must see should
# wake it (a queued message or primitive, an event, a pause, a kill, the DUL's end, the socket), and
# its timers (idle, ARTIM) bound the wait. With a 30 s cap, 2 full test runs in 3 saw one C-STORE
# answered only after the sender's 30 s DIMSE timeout: some wake-up is still missed, not yet found.
# 10 s keeps such a miss under the DIMSE timeout; 200 idle associations cost ~1 % of a core (2 s: 3.7 %)
# (bench/listener.py), against whole cores for pynetdicom's 1 ms polls.
IDLE_WAKE = 10.0
_REACTOR_DELAY = 0.001  # what pynetdicom's association reactor sleeps per pass (association.py)


def _remaining(timer) -> float | None:
    """Seconds until a running pynetdicom Timer expires (0 if it has), None if it is not running."""
    if timer.timeout is None or timer._start_time is None or timer._end_time is not None:
        return None
    return max(0.0, timer.remaining)


class _WakingEvent(threading.Event):
    """The association's reactor checkpoint: clearing or setting it (another thread pausing the
    reactor for a send, or killing it) also wakes the reactor from its wait."""

    def __init__(self, wake: threading.Event):
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()

    def clear(self) -> None:
        super().clear()
        self._wake.set()


def _prepare_association(assoc) -> None:
    wake = threading.Event()
    messages = _notify_on_put(assoc.dimse.msg_queue, wake.set)
    to_user = _notify_on_put(assoc.dul.to_user_queue, wake.set)
    checkpoint = _WakingEvent(wake)
    if assoc._reactor_checkpoint.is_set():
        threading.Event.set(checkpoint)
    assoc._reactor_checkpoint = checkpoint

    def wait(seconds: float, reactor_pass: bool = False) -> None:
        if reactor_pass:  # wait for work, a pause, a kill, or the idle timeout
            idle = _remaining(assoc.dul._idle_timer)
            seconds = IDLE_WAKE if idle is None else min(IDLE_WAKE, idle)
        if messages.empty() and to_user.empty() and not (reactor_pass and assoc._kill):
            wake.wait(seconds)
            wake.clear()

    assoc._pacsdeck_wait = wait
    assoc._pacsdeck_wake = wake.set


def _prepare_dul(dul) -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    weakref.finalize(dul, _close_pair, read_fd, write_fd)  # not before the DUL thread is gone

    # Write to the pipe only while the DUL thread is (about to be) in select(): a C-GET or C-MOVE
    # queues one primitive per PDU, and a pipe write for each cost more than the send itself.
    waiting = [False]

    def notify() -> None:
        if waiting[0]:
            try:
                os.write(write_fd, b"\0")
            except BlockingIOError:  # the pipe is full of wake-ups already
                pass

    outgoing = _notify_on_put(dul.to_provider_queue, notify)
    events = _notify_on_put(dul.event_queue, notify)  # Evt17 put by another thread closing the socket
    kill_dul = dul.kill_dul

    def kill() -> None:
        kill_dul()
        notify()

    def wait(seconds: float) -> None:
        # Only the DUL's own loop gets here (the lookup is by thread): wait for the socket, a
        # primitive to send, an event, a kill, or the ARTIM timer, never in 1 ms polls.
        artim = _remaining(dul.artim_timer)
        seconds = IDLE_WAKE if artim is None else min(IDLE_WAKE, artim)
        waiting[0] = True  # before the emptiness checks: a put after them will write to the pipe
        try:
            if not outgoing.empty() or not events.empty() or dul._kill_thread:
                return
            sock = getattr(dul.socket, "socket", None)
            if sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # TLS bytes already decrypted: select() would not see them
            guard.readable([read_fd] if sock is None else [read_fd, sock], seconds)
            os.read(read_fd, 4096)
        except BlockingIOError:
            pass
        except (OSError, ValueError):  # socket closed under us: fall back to pynetdicom's sleep
            time.sleep(_REACTOR_DELAY)
        finally:
            waiting[0] = False

    dul._pacsdeck_wait = wait
    dul.kill_dul = kill
    limits = guard.limits_of(dul.assoc)
    gate = getattr(dul.assoc.ae, "gate", None) if dul.assoc.is_acceptor else None
    opened_at = time.monotonic()
    dul._read_pdu_data = lambda: guard.read_pdu(dul, limits, opened_at, gate)


def _close_pair(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def prepare(assoc) -> None:
    """Give one association event-driven wake-ups, from its EVT_CONN_OPEN (for a requestor that
    fires in the DUL thread while the association thread may already wait: nothing is replaced)."""
    if getattr(assoc, "_pacsdeck_wait", None) is None:
        _prepare_association(assoc)
    if getattr(assoc.dul, "_pacsdeck_wait", None) is None:
        _prepare_dul(assoc.dul)
    if assoc.dul.socket is not None and assoc.dul.socket.socket is not None:
        inline.prepare(assoc.dul)


_request = pynetdicom.association.Association.request


def _request_promptly(self) -> None:
    """Association.request with wake-ups in place before its DUL thread starts.

    The DUL's first job is to connect and send our A-ASSOCIATE-RQ; found by its 1 ms poll, that
    was up to a millisecond on every C-MOVE's store association and every forward. The socket
    parts follow at EVT_CONN_OPEN (see prepare)."""
    prepare(self)
    _request(self)


_kill = pynetdicom.association.Association.kill


def _kill_promptly(self) -> None:
    """Association.kill, without its usual 10 ms wait at the end of an association.

    pynetdicom's kill polls every 10 ms until the DUL has stopped (state Sta1). After a release the
    DUL gets there microseconds after handing over the confirmation that made the caller kill, so
    the first poll nearly always missed: every C-MOVE waited 10 ms after releasing its store
    association before its final response. Poll in 0.2 ms steps for up to 5 ms first."""
    deadline = time.monotonic() + 0.005
    while self.dul.is_alive() and self.dul.state_machine.current_state != "Sta1" and time.monotonic() < deadline:
        time.sleep(0.0002)
    _kill(self)
    wake = getattr(self, "_pacsdeck_wake", None)
    if wake is not None:  # the reactor may be in a long wait: let it see _kill now
        wake()


_run_dul = pynetdicom.dul.DULServiceProvider.run_reactor


def _run_dul_and_tell(self) -> None:
    """DULServiceProvider.run_reactor, then the association's reactor is woken: it checks
    dul.is_alive() and _kill (which the DUL's crash path sets directly) only when it wakes."""
    try:
        _run_dul(self)
    finally:
        wake = getattr(self.assoc, "_pacsdeck_wake", None)
        if wake is not None:
            wake()


_run_reactor = pynetdicom.association.Association.run_reactor


def _run_reactor_and_free(self) -> None:
    """Association.run_reactor, then the connection's place in the node's Gate is freed, whichever
    way the thread ends (guard.py; EVT_CONN_CLOSE does not fire on every path)."""
    try:
        _run_reactor(self)
    finally:
        gate = getattr(self.ae, "gate", None)
        if gate is not None:
            gate.closed(self)


_do_action = pynetdicom.fsm.StateMachine.do_action


def _do_action_unless_ending(self, event: str) -> None:
    """StateMachine.do_action, except that a local primitive arriving after the association already
    ended (Sta1, Sta13: aborted, or released and waiting for the close) is dropped with a log line.
    pynetdicom raised InvalidEventError there, which killed the DUL thread with a traceback: a peer
    that sent A-RELEASE-RQ twice made our A-RELEASE-RP (Evt14) arrive in Sta13 after the abort."""
    if self.current_state in ("Sta1", "Sta13") and (event, self.current_state) not in pynetdicom.fsm.TRANSITION_TABLE:
        log.info("association already ended (%s): %s dropped", self.current_state, event)
        return
    _do_action(self, event)


# After the node sends an A-ABORT (AA-1, AA-8) or an A-ASSOCIATE-RJ (AE-8) it waits in Sta13 for the
# peer to close, for the ARTIM timeout (our request_timeout, 10 s): a hostile peer that never closes
# held its connection and threads that long for each bad PDU. One second lets the PDU reach a peer
# that reads it, then the connection is closed.
_AFTER_REFUSAL = 1.0


def _closing_soon(action):
    def act(dul) -> str:
        next_state = action(dul)
        dul.artim_timer.timeout = min(_AFTER_REFUSAL, dul.artim_timer.timeout or _AFTER_REFUSAL)
        dul.artim_timer.start()
        return next_state

    return act


def _socket_ready(self) -> bool:
    """AssociationSocket.ready with poll() instead of select(): past descriptor 1024 select() raises
    ValueError, which pynetdicom takes for a closed connection (Evt17). With a few hundred
    connections open (3 descriptors each: the socket and a wake-up pipe) every new association was
    dropped at once (bench/listener.py: 0 echoes in 6 while 250 idle connections were held)."""
    sock = self.socket
    if sock is None or self._is_connected is False:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        return bool(guard.readable([sock], 0))
    except (OSError, ValueError):
        self.event_queue.put("Evt17")
        return False


_receive_primitive = pynetdicom.dimse.DIMSEServiceProvider.receive_primitive


def _receive_checked(self, primitive) -> None:
    """DIMSEServiceProvider.receive_primitive behind message_guard's checks (command sets, sizes)."""
    message_guard.receive_primitive(self, primitive, _receive_primitive)


def on_connection_open(event) -> None:
    """EVT_CONN_OPEN handler for accepted connections: runs before their threads start."""
    prepare(event.assoc)


def install() -> None:
    """Replace, in pynetdicom 3.0.4: Association.request, .kill, .run_reactor (association.py),
    DULServiceProvider.run_reactor (dul.py), StateMachine.do_action and the AA-1/AA-8/AE-8 actions
    (fsm.py), AssociationSocket.ready (transport.py), DIMSEServiceProvider.receive_primitive
    (dimse.py), and the `time` module those two reactors sleep with. Each replacement's comment above
    says what it fixes and what it measured."""
    pynetdicom.association.Association.request = _request_promptly
    pynetdicom.association.Association.kill = _kill_promptly
    pynetdicom.dul.DULServiceProvider.run_reactor = _run_dul_and_tell
    pynetdicom.association.Association.run_reactor = _run_reactor_and_free
    pynetdicom.fsm.StateMachine.do_action = _do_action_unless_ending
    for _name in ("AA-1", "AA-8", "AE-8"):
        _description, _function, _state = pynetdicom.fsm.ACTIONS[_name]
        pynetdicom.fsm.ACTIONS[_name] = (_description, _closing_soon(_function), _state)
    pynetdicom.transport.AssociationSocket.ready = property(_socket_ready)
    pynetdicom.dimse.DIMSEServiceProvider.receive_primitive = _receive_checked
    pynetdicom.association.time = _TimeWithWakeups("association")
    pynetdicom.dul.time = _TimeWithWakeups("dul")
