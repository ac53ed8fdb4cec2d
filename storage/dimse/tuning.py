"""The one place pacsdeck adjusts pynetdicom: event-driven wake-ups, and three fixes at the end.

Why: pynetdicom 3.0.4 polls. The association reactor sleeps 1 ms on every pass
(`association.py`, `_run_reactor`) and the DUL reactor sleeps `_run_loop_delay` (1 ms) whenever a
pass finds nothing to do (`dul.py`, `run_reactor`). Every C-STORE crosses both: the decoded request
waits for the association thread to wake, the response for the DUL thread. On one association that
latency, not CPU, bounds the rate (see README, Benchmarks, for the figures).

How: for each accepted connection, and for the association a C-MOVE opens to its destination
(from EVT_CONN_OPEN), the two sleeps become waits that end as soon as there is work. The
association thread waits on an Event set when the DUL queues a DIMSE message or an
A-RELEASE/A-ABORT for it; the DUL thread waits in select() on its socket and on a self-pipe written
when a primitive is queued for sending. The timeouts are pynetdicom's own, so an idle association
wakes exactly as often as before (idle CPU unchanged). Threads we did not prepare keep time.sleep.

Stored files out in whole frames: a C-STORE whose dataset is a file (C-GET, C-MOVE, forwarding)
went out as one P-DATA primitive per 16 KiB fragment, each one queue put, one DUL loop pass, one
PDU object and one send(); now the fragments are framed here and sent in a few socket calls.

At the end: pynetdicom's PDU-formatting log handlers off, and cached UID validation. Association
negotiation has its own module (negotiation.py), and so does a retrieve's use of the socket from
its own thread (inline.py); importing this module applies all three.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import ssl
import struct
import threading
import time
import weakref

import pynetdicom._config
import pynetdicom.association
import pynetdicom.dul
import pynetdicom.fsm
import pynetdicom.dimse
import pynetdicom.dimse_messages
import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.transport
import pynetdicom.utils
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA

from . import guard, inline, message_guard, negotiation  # noqa: F401 - negotiation patches pynetdicom when imported

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


pynetdicom.association.Association.request = _request_promptly

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


pynetdicom.association.Association.kill = _kill_promptly


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


pynetdicom.dul.DULServiceProvider.run_reactor = _run_dul_and_tell

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


pynetdicom.association.Association.run_reactor = _run_reactor_and_free


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


pynetdicom.fsm.StateMachine.do_action = _do_action_unless_ending

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


for _name in ("AA-1", "AA-8", "AE-8"):
    _description, _function, _state = pynetdicom.fsm.ACTIONS[_name]
    pynetdicom.fsm.ACTIONS[_name] = (_description, _closing_soon(_function), _state)

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


pynetdicom.transport.AssociationSocket.ready = property(_socket_ready)

_receive_primitive = pynetdicom.dimse.DIMSEServiceProvider.receive_primitive


def _receive_checked(self, primitive) -> None:
    """DIMSEServiceProvider.receive_primitive behind message_guard's checks (command sets, sizes)."""
    message_guard.receive_primitive(self, primitive, _receive_primitive)


pynetdicom.dimse.DIMSEServiceProvider.receive_primitive = _receive_checked


def on_connection_open(event) -> None:
    """EVT_CONN_OPEN handler for accepted connections: runs before their threads start."""
    prepare(event.assoc)


# --- stored files out in whole frames ------------------------------------------------------------

# Fragments per socket call: bounds the memory a multi-frame file costs while it is sent.
_BATCH_BYTES = 4 * 1024 * 1024
_PDV_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, PDV length, context ID, control


class FramedPData(P_DATA):
    """P-DATA-TF PDUs already framed, for the DUL to send as they are."""

    def __init__(self, frames: bytes | bytearray):
        super().__init__()
        self.frames = frames


def _frame(out: bytearray, context_id: int, control: int, data, fragment: int, last: bool) -> None:
    """Append `data` as P-DATA-TF PDUs of one PDV each (as pynetdicom fragments); bit 1 of the
    control byte marks the message's last fragment."""
    view = memoryview(data)
    starts = range(0, len(view), fragment) if len(view) else (0,)
    for start in starts:
        chunk = view[start:start + fragment]
        end = last and start + fragment >= len(view)
        out += _PDV_HEADER.pack(0x04, 0, len(chunk) + 6, len(chunk) + 2, context_id, control | (0x02 if end else 0))
        out += chunk


def framed(context_id: int, command: bytes, dataset: bytes, max_pdu_length: int) -> FramedPData:
    """A whole DIMSE message (command set, then the dataset if any) as P-DATA-TF PDUs."""
    fragment = max_pdu_length - 6 if max_pdu_length else max(len(command), len(dataset), 1)
    out = bytearray()
    _frame(out, context_id, 0x01, command, fragment, last=True)
    if dataset:
        _frame(out, context_id, 0x00, dataset, fragment, last=True)
    return FramedPData(out)


_encode_msg = C_STORE_RQ.encode_msg


class FramedStore:
    """One C-STORE-RQ, its command set then a stored file's bytes from `offset`, as P-DATA-TF PDUs
    read straight into place between the PDU headers (one copy, from the page cache).

    The first batch (up to _BATCH_BYTES) is read when the object is made, so a retrieve can make
    the next instance's while the peer is still answering the current one; `batches()` yields it
    and then reads the rest. `close()` when it is not sent after all."""

    def __init__(self, context_id: int, command: bytes, path, offset: int, max_pdu_length: int):
        self.context_id = context_id
        self.path = path
        self._f = open(path, "rb", buffering=0)
        try:
            self._size = os.fstat(self._f.fileno()).st_size - offset
            self._f.seek(offset)
            self._fragment = max_pdu_length - 6 if max_pdu_length else max(self._size, 1)
            self._per_batch = max(1, _BATCH_BYTES // self._fragment)
            head = bytearray()
            _frame(head, context_id, 0x01, command, self._fragment, last=True)
            self._done = 0
            self._first: FramedPData | None = self._batch(head)
        except BaseException:
            self._f.close()
            raise

    def _batch(self, head: bytearray) -> FramedPData:
        nbytes = min(self._per_batch * self._fragment, self._size - self._done)
        count = max(1, -(-nbytes // self._fragment))
        buf = bytearray(len(head) + nbytes + _PDV_HEADER.size * count)
        buf[:len(head)] = head
        view, pos = memoryview(buf), len(head)
        for i in range(count):
            length = min(self._fragment, nbytes - i * self._fragment)
            last = self._done + i * self._fragment + length >= self._size
            _PDV_HEADER.pack_into(buf, pos, 0x04, 0, length + 6, length + 2, self.context_id, 0x02 if last else 0x00)
            pos += _PDV_HEADER.size
            _read_exactly(self._f, view[pos:pos + length], self.path)
            pos += length
        view.release()
        self._done += nbytes
        return FramedPData(buf)

    def batches(self):
        try:
            first, self._first = self._first, None
            if first is None:
                return
            yield first
            while self._done < self._size:
                yield self._batch(bytearray())
        finally:
            self._f.close()

    def close(self) -> None:
        self._first = None
        self._f.close()


def _read_exactly(f, into: memoryview, path) -> None:
    got = 0
    while got < len(into):
        n = f.readinto(into[got:])
        if not n:
            raise OSError(f"{path}: the file ended {len(into) - got} bytes early (changed while being sent?)")
        got += n


def _encode_stored_file(self, context_id: int, max_pdu_length: int):
    """C_STORE_RQ.encode_msg for a dataset sent from a file: a few FramedPData instead of one
    P_DATA per fragment. Same fragments, same bytes on the wire. Other messages are unchanged."""
    if self._data_set_path is None:
        yield from _encode_msg(self, context_id, max_pdu_length)
        return
    self.context_id = context_id
    command = _encode_command(self.command_set, True, True)  # always implicit VR little endian
    path, offset = self._data_set_path
    yield from FramedStore(context_id, command, path, offset, max_pdu_length).batches()


def send_stored_file(assoc, message: FramedStore, while_waiting=None):
    """Send one C-STORE-RQ whose dataset is a stored file's bytes, and wait for its response: what
    Association.send_c_store(path) does, without re-reading the File Meta with pydicom or building
    the command through pydicom datasets (~0.5 ms per instance). The caller owns the association's
    reactor (a C-GET handler runs in it; a C-MOVE holds its store association's paused), so no
    other thread takes the response. `while_waiting` runs once the request is out, before the
    response is read (a retrieve prepares its next instance there). Returns the response status
    (.Status None: no response).

    The calling thread claims the association's socket (inline.py) and keeps it until the retrieve
    releases it: request and response then never cross to the DUL thread."""
    held = inline.claim(assoc)
    queued = False
    try:
        for primitive in message.batches():
            assoc.dul.send_pdu(primitive)  # straight to the socket while held
            queued = True
    except inline.LinkLost:
        raise
    except OSError:
        if queued:  # half a message is on its way: the association cannot carry another one
            assoc.abort()
        raise
    if while_waiting is not None:
        while_waiting()
    if held is not None:
        response = inline.store_response(held, assoc.dimse.dimse_timeout)
    else:
        _, rsp = assoc.dimse.get_msg(block=True)
        response = None if rsp is None else assoc._check_received_status(rsp)
    if response is None:  # DIMSE timeout: pynetdicom aborts the association
        assoc._handle_no_response()
        return inline.StoreStatus(None)
    return response


def _send_framed(dul) -> str:
    """DT-1 (Sta6 + Evt9, send P-DATA) that sends a FramedPData's frames as they are."""
    primitive = dul.to_provider_queue.queue[0]
    if not isinstance(primitive, FramedPData):
        return _DT_1(dul)
    dul.to_provider_queue.get(False)
    if dul.socket is not None:
        dul.socket.send(primitive.frames)  # a failed send becomes Evt17 there, as for any PDU
    return "Sta6"


# --- DIMSE command sets ---------------------------------------------------------------------------

_encode_dataset = pynetdicom.dimse_messages.encode
_ELEMENT_HEADER = struct.Struct("<HHI")
_NUMBERS = {"US": struct.Struct("<H"), "UL": struct.Struct("<I")}
_TEXT_PAD = {"UI": b"\0", "AE": b" ", "CS": b" ", "SH": b" ", "LO": b" ", "ST": b" "}


def _encode_command(ds, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False):
    """pynetdicom's dsutils.encode for the one thing dimse_messages encodes: Command Sets.

    pynetdicom encodes each command set twice (once for its group length) through pydicom's
    general writer; a C-GET of 10 instances writes ~40 of them, ~0.2 ms each. A command set is a
    flat group 0000 of a few numbers and strings in implicit VR little endian: written directly
    here, byte for byte what pydicom writes (tests/test_tuning.py compares them). Anything else
    (another encoding, a VR not listed, a multi-valued number) goes to pynetdicom's encoder.
    """
    if not is_implicit_vr or not is_little_endian or deflated:
        return _encode_dataset(ds, is_implicit_vr, is_little_endian, deflated)
    out = bytearray()
    for elem in ds:
        value, vr = elem.value, elem.VR
        if value is None or value == "":
            data = b""
        elif vr in _NUMBERS and isinstance(value, int):
            data = _NUMBERS[vr].pack(value)
        elif vr in _TEXT_PAD and isinstance(value, str) and value.isascii():
            data = value.encode("ascii")
            if len(data) % 2:
                data += _TEXT_PAD[vr]
        else:
            return _encode_dataset(ds, is_implicit_vr, is_little_endian, deflated)
        out += _ELEMENT_HEADER.pack(elem.tag.group, elem.tag.element, len(data))
        out += data
    return bytes(out)


pynetdicom.dimse_messages.encode = _encode_command
_DT_1 = pynetdicom.fsm.DT_1
C_STORE_RQ.encode_msg = _encode_stored_file
pynetdicom.fsm.ACTIONS["DT-1"] = (pynetdicom.fsm.ACTIONS["DT-1"][0], _send_framed, "Sta6")


# pynetdicom's "standard" event handlers format every PDU into debug text, whatever the log level:
# for getscu's A-ASSOCIATE-RQ (120 contexts with role items) that was ~8 ms of CPU per association,
# and every P-DATA PDU of every C-STORE paid its share. We log at WARNING; the text was never shown.
pynetdicom._config.LOG_HANDLER_LEVEL = "none"



class _ReportedByTheCaller(logging.Filter):
    """pynetdicom logs two ERROR lines for every connection it cannot open ("Association request
    failed: unable to connect to remote", "TCP Initialisation Error: [Errno 111] ..."), at every
    retry of a forward to a destination that is down. Each of our callers reports that failure
    itself, with the destination and why (the forwarder's job error and warning, a C-MOVE's 0xA801
    and its comment, aets.echo's answer), so pynetdicom's lines are kept for DEBUG logging only."""

    _MESSAGES = ("Association request failed: unable to connect", "TCP Initialisation Error")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._MESSAGES):
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("pynetdicom.transport").addFilter(_ReportedByTheCaller())


class _OneLine(logging.Filter):
    """pynetdicom logs a traceback (LOGGER.exception) for every undecodable PDU or DIMSE message a
    peer sends: a hostile peer filled the node's log with hundreds. Such input is answered and
    counted by guard.py; pynetdicom's record keeps its message and the exception's one line, and the
    traceback is kept for DEBUG logging only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            exc = record.exc_info[1]
            text = record.getMessage()
            summary = f"{type(exc).__name__}: {exc}" if exc is not None else ""
            record.msg = text if summary in text else f"{text} ({summary})" if summary else text
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


for _name in [n for n in logging.Logger.manager.loggerDict if n == "pynetdicom" or n.startswith("pynetdicom.")]:
    logging.getLogger(_name).addFilter(_OneLine())

# pynetdicom checks every UID of every A-ASSOCIATE-RQ with a regular expression, through its
# documented VALIDATORS hook; a viewer's C-GET proposes the same ~120 SOP classes every time.
# The check depends only on the value (and a setting we never change), so remember the answers.
pynetdicom._config.VALIDATORS["UI"] = functools.lru_cache(maxsize=4096)(pynetdicom._config.VALIDATORS["UI"])
# The same for its conversion of each of those UIDs into a pydicom UID, which also runs pydicom's
# conformance regex (is_valid): 1,500 regex matches per getscu association, half its decoding time.
# A pure function of its arguments; only a "non-conformant UID" warning is now logged once per value.
_set_uid = functools.lru_cache(maxsize=4096)(pynetdicom.utils.set_uid)
for _module in (pynetdicom.pdu_items, pynetdicom.pdu_primitives, pynetdicom.presentation, pynetdicom.dimse_primitives):
    _module.set_uid = _set_uid


pynetdicom.association.time = _TimeWithWakeups("association")
pynetdicom.dul.time = _TimeWithWakeups("dul")
