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

At the end: unrestricted storage negotiation that no longer takes worklist FIND for storage,
pynetdicom's PDU-formatting log handlers off, and cached UID validation.
"""

from __future__ import annotations

import functools
import os
import queue
import select
import struct
import threading
import time
import weakref

import pynetdicom._config
import pynetdicom.acse
import pynetdicom.association
import pynetdicom.dul
import pynetdicom.fsm
import pynetdicom.dimse_messages
import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import _STORAGE_CLASSES, negotiate_as_acceptor


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
    _prepare_association(assoc)
    _prepare_dul(assoc.dul)
    if assoc.dul.socket is not None and assoc.dul.socket.socket is not None:
        _prepare_socket(assoc.dul.socket)


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


_encode_msg = C_STORE_RQ.encode_msg


def _framed_batches(context_id: int, command: bytes, path, offset: int, max_pdu_length: int):
    """FramedPData for one C-STORE-RQ: its command set, then the file's bytes from `offset`, read
    straight into place between the PDU headers (one copy, from the page cache)."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size - offset
        f.seek(offset)
        fragment = max_pdu_length - 6 if max_pdu_length else max(size, 1)
        per_batch = max(1, _BATCH_BYTES // fragment)
        head = bytearray()
        _frame(head, context_id, 0x01, command, fragment, last=True)
        done = 0
        while True:
            nbytes = min(per_batch * fragment, size - done)
            count = max(1, -(-nbytes // fragment))
            buf = bytearray(len(head) + nbytes + _PDV_HEADER.size * count)
            buf[:len(head)] = head
            view, pos = memoryview(buf), len(head)
            for i in range(count):
                length = min(fragment, nbytes - i * fragment)
                last = done + i * fragment + length >= size
                _PDV_HEADER.pack_into(buf, pos, 0x04, 0, length + 6, length + 2, context_id, 0x02 if last else 0x00)
                pos += _PDV_HEADER.size
                _read_exactly(f, view[pos:pos + length], path)
                pos += length
            view.release()
            done += nbytes
            yield FramedPData(buf)
            if done >= size:
                return
            head = bytearray()


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
    yield from _framed_batches(context_id, command, path, offset, max_pdu_length)


def _command_element(element: int, vr: str, value) -> bytes:
    data = _NUMBERS[vr].pack(value) if vr in _NUMBERS else value.encode("ascii")
    if len(data) % 2:
        data += _TEXT_PAD[vr]
    return _ELEMENT_HEADER.pack(0x0000, element, len(data)) + data


def c_store_request(msg_id: int, priority: int, sop_class: str, sop_uid: str,
                    originator_aet: str | None = None, originator_id: int | None = None) -> bytes:
    """The Command Set of a C-STORE-RQ with a dataset, encoded (tests/test_tuning.py checks it
    against pynetdicom's)."""
    body = b"".join((
        _command_element(0x0002, "UI", sop_class),
        _command_element(0x0100, "US", 0x0001),  # Command Field: C-STORE-RQ
        _command_element(0x0110, "US", msg_id),
        _command_element(0x0700, "US", priority),
        _command_element(0x0800, "US", 0x0001),  # Command Data Set Type: a dataset follows
        _command_element(0x1000, "UI", sop_uid),
        _command_element(0x1030, "AE", originator_aet) if originator_aet else b"",
        _command_element(0x1031, "US", originator_id) if originator_aet and originator_id is not None else b"",
    ))
    return _command_element(0x0000, "UL", len(body)) + body


def send_stored_file(assoc, context_id: int, command: bytes, path, offset: int):
    """Send one C-STORE-RQ whose dataset is the file's bytes from `offset`, and wait for its
    response: what Association.send_c_store(path) does, without re-reading the File Meta with
    pydicom or building the command through pydicom datasets (~0.5 ms per instance). The caller
    owns the association's reactor (a C-GET handler runs in it; a C-MOVE holds its store
    association's paused), so no other thread takes the response. Returns the status Dataset."""
    queued = False
    try:
        for primitive in _framed_batches(context_id, command, path, offset, assoc.dimse.maximum_pdu_size):
            assoc.dul.send_pdu(primitive)
            queued = True
    except OSError:
        if queued:  # half a message is on its way: the association cannot carry another one
            assoc.abort()
        raise
    _, rsp = assoc.dimse.get_msg(block=True)
    if rsp is None:  # DIMSE timeout: pynetdicom aborts the association
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)


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


# --- presentation context negotiation ------------------------------------------------------------

_STORAGE_UIDS = frozenset(_STORAGE_CLASSES.values())
_negotiate_unrestricted = pynetdicom.acse.negotiate_unrestricted


@functools.lru_cache(maxsize=4096)  # a pure function of the UID; getscu proposes the same 120 each time
def _known_non_storage(uid: str) -> bool:
    """A public SOP class pydicom knows by name that is not a storage class (worklist, query, print…).

    Storage classes newer than pynetdicom's list still count as storage by their keyword."""
    uid = UID(uid)
    if uid.is_private or uid.type != "SOP Class" or not uid.keyword or uid in _STORAGE_UIDS:
        return False
    return "Storage" not in uid.keyword or uid.keyword.startswith("StorageCommitment")


def negotiate_storage_unrestricted(rq_contexts, ac_contexts, roles=None):
    """pynetdicom's unrestricted negotiation, minus its guess that every UID missing from its own
    sop_class module is storage: that accepted e.g. Modality Worklist FIND (keyword
    ModalityWorklistInformationModelFind, which pynetdicom spells differently) as a storage context.
    Contexts whose abstract syntax pydicom names as a non-storage SOP class get normal negotiation."""
    other = [cx for cx in rq_contexts if _known_non_storage(cx.abstract_syntax)]
    storage = [cx for cx in rq_contexts if not _known_non_storage(cx.abstract_syntax)]
    result_a, roles_a = negotiate_as_acceptor(other, ac_contexts, roles)
    result_b, roles_b = _negotiate_unrestricted(storage, ac_contexts, roles)
    return sorted(result_a + result_b, key=lambda cx: cx.context_id), roles_a + roles_b


pynetdicom.acse.negotiate_unrestricted = negotiate_storage_unrestricted

# pynetdicom's "standard" event handlers format every PDU into debug text, whatever the log level:
# for getscu's A-ASSOCIATE-RQ (120 contexts with role items) that was ~8 ms of CPU per association,
# and every P-DATA PDU of every C-STORE paid its share. We log at WARNING; the text was never shown.
pynetdicom._config.LOG_HANDLER_LEVEL = "none"

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
