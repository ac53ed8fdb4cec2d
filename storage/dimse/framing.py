"""Stored files out in whole frames: a C-STORE whose dataset is a file sent in a few socket calls.

A C-STORE whose dataset is a file (C-GET, C-MOVE, forwarding) went out as one P-DATA primitive per
16 KiB fragment, each one queue put, one DUL loop pass, one PDU object and one send(); now the
fragments are framed here and sent as they are. Applied by install(), never on import.
"""

from __future__ import annotations

import os
import struct

import pynetdicom.fsm
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA

from . import inline
from .commands import encode_command

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
        chunk = view[start : start + fragment]
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
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by batches() or close()
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
        buf[: len(head)] = head
        view, pos = memoryview(buf), len(head)
        for i in range(count):
            length = min(self._fragment, nbytes - i * self._fragment)
            last = self._done + i * self._fragment + length >= self._size
            _PDV_HEADER.pack_into(buf, pos, 0x04, 0, length + 6, length + 2, self.context_id, 0x02 if last else 0x00)
            pos += _PDV_HEADER.size
            _read_exactly(self._f, view[pos : pos + length], self.path)
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
    command = encode_command(self.command_set, True, True)  # always implicit VR little endian
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


_DT_1 = pynetdicom.fsm.DT_1


def install() -> None:
    """Replace C_STORE_RQ.encode_msg (dimse_messages.py) and the DT-1 action (fsm.py, send P-DATA)."""
    C_STORE_RQ.encode_msg = _encode_stored_file
    pynetdicom.fsm.ACTIONS["DT-1"] = (pynetdicom.fsm.ACTIONS["DT-1"][0], _send_framed, "Sta6")
