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
import select
import struct
import threading
import time
import weakref

import pynetdicom._config
import pynetdicom.association
import pynetdicom.dul
import pynetdicom.fsm
import pynetdicom.dimse_messages
import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA

from . import inline, negotiation  # noqa: F401 - negotiation patches pynetdicom when imported


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
    """Stands in for the `time` module inside pynetdicom's association and dul modules."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait = getattr(threading.current_thread(), "_pacsdeck_wait", None)
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


def _prepare_association(assoc) -> None:
    wake = threading.Event()
    messages = _notify_on_put(assoc.dimse.msg_queue, wake.set)
    to_user = _notify_on_put(assoc.dul.to_user_queue, wake.set)

    def wait(seconds: float) -> None:
        if messages.empty() and to_user.empty():
            wake.wait(seconds)
            wake.clear()

    assoc._pacsdeck_wait = wait


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

    def wait(seconds: float) -> None:
        waiting[0] = True  # before the emptiness check: a put after it will write to the pipe
        try:
            if not outgoing.empty():
                return
            sock = getattr(dul.socket, "socket", None)
            select.select([read_fd] if sock is None else [read_fd, sock], [], [], seconds)
            os.read(read_fd, 4096)
        except BlockingIOError:
            pass
        except (OSError, ValueError):  # socket closed under us: fall back to pynetdicom's sleep
            time.sleep(seconds)
        finally:
            waiting[0] = False

    dul._pacsdeck_wait = wait


def _close_pair(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _prepare_socket(assoc_socket) -> None:
    """Read whole PDUs with recv_into instead of pynetdicom's loop of 4 KiB recv() calls.

    pynetdicom's AssociationSocket.recv grows a bytearray 4 KiB at a time: a 0.5 MB instance took
    ~136 recv calls and as many Python-level appends. Same contract: return the bytes read, fewer
    only if the peer closed the connection; socket errors propagate.
    """
    sock = assoc_socket.socket

    def recv(nr_bytes: int) -> bytearray:
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if n == 0:
                view.release()
                del buf[got:]
                return buf
            got += n
        view.release()
        return buf

    assoc_socket.recv = recv


def prepare(assoc) -> None:
    """Give one association event-driven wake-ups, from its EVT_CONN_OPEN (for a requestor that
    fires in the DUL thread while the association thread may already wait: nothing is replaced)."""
    if getattr(assoc, "_pacsdeck_wait", None) is None:
        _prepare_association(assoc)
    if getattr(assoc.dul, "_pacsdeck_wait", None) is None:
        _prepare_dul(assoc.dul)
    if assoc.dul.socket is not None and assoc.dul.socket.socket is not None:
        _prepare_socket(assoc.dul.socket)
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


pynetdicom.association.Association.kill = _kill_promptly


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


pynetdicom.association.time = _TimeWithWakeups()
pynetdicom.dul.time = _TimeWithWakeups()
