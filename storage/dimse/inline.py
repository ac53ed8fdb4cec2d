"""Retrieve traffic written and read by the thread that runs the retrieve, not through the DUL thread.

Why: in pynetdicom every PDU crosses threads. A C-GET sub-operation did so three times: the C-STORE
request went to the DUL thread to be sent, its response came back from it through the DIMSE
queue, and the pending C-GET response went to it again. Each crossing is a wake-up and a wait for
the GIL, ~0.6 ms per instance in all, where Orthanc's whole sub-operation costs less.

How: `claim(assoc)` gives the calling thread the association's socket until `release(assoc)`.
While it holds it, that thread's P-DATA goes straight to the socket (`dul.send_pdu` is routed),
and `receive(assoc)` reads the peer's next DIMSE message itself, decoding it with pynetdicom's own
PDU and DIMSE code. The DUL thread is kept off the socket by a lock around its read
(`_is_transport_event`); anything that is not P-DATA (a release, an abort, a closed connection) is
handed to the DUL's state machine as if it had read it, and the claim ends, so pynetdicom's own
handling of association endings is unchanged. An A-RELEASE or A-ABORT sent by the holder also ends
the claim first. Only associations given event-driven wake-ups by reactors.prepare() can be claimed;
for others `claim` returns None and the caller uses pynetdicom's queues.
"""

from __future__ import annotations

import ssl
import struct
import threading
from typing import NamedTuple

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import commands, guard

_HEADER = struct.Struct(">BBL")


class LinkLost(ConnectionError):
    """The connection failed or the peer ended the association while we held the socket."""


class _Claim:
    """One thread's hold on one association's socket."""

    def __init__(self, assoc, lock: threading.RLock):
        self.assoc = assoc
        self.dul = assoc.dul
        self.lock = lock
        self.thread = threading.current_thread()
        self.sock = assoc.dul.socket.socket
        # A peer that stops reading must not hold this thread in sendall() for ever: writes time
        # out after the DIMSE timeout (reads wait in select() with it). pynetdicom's own setting
        # comes back with the socket.
        self._timeout = self.sock.gettimeout()
        self.sock.settimeout(assoc.dimse_timeout)

    def restore(self) -> None:
        try:
            self.sock.settimeout(self._timeout)
        except OSError:  # closed meanwhile
            pass

    def send(self, primitive) -> None:
        frames = getattr(primitive, "frames", None)  # framing.FramedPData: already P-DATA-TF PDUs
        if frames is None:
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            frames = pdu.encode()
        try:
            self.sock.sendall(frames)
        except OSError as err:
            self.hand_back(event="Evt17")
            raise LinkLost(f"connection lost while sending: {err}") from err

    def read_pdu(self, timeout: float | None) -> bytearray | None:
        """The next whole PDU, or None when nothing arrived within `timeout`."""
        header = self._read(6, timeout)
        if header is None:
            return None
        pdu_type, _, length = _HEADER.unpack(header)
        try:  # the peer's declared length is checked before anything is allocated, as the DUL does
            guard.check_length(self.assoc, pdu_type, length, self.dul.state_machine.current_state)
        except guard.Refused as err:
            self.hand_back()
            guard.abort_and_close(self.dul, err)
            raise LinkLost(f"the peer sent {err.detail}") from None
        body = self._read(length, timeout) if length else bytearray()
        if body is None:  # a header, then silence
            self.hand_back(event="Evt17")
            raise LinkLost(f"the peer stopped after the header of a PDU (type 0x{pdu_type:02X})")
        self.dul._idle_timer.restart()  # as the DUL does for every PDU it reads (network_timeout)
        return header + body

    def _read(self, count: int, timeout: float | None) -> bytearray | None:
        buf = bytearray(count)
        view = memoryview(buf)
        got = 0
        try:
            while got < count:
                buffered = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()  # select() cannot see it
                ready = True if buffered else guard.readable([self.sock], timeout)
                if not ready:
                    if got:  # part of a PDU, then silence: the stream cannot be trusted any more
                        self.hand_back(event="Evt17")
                        raise LinkLost(f"the peer stopped in the middle of a PDU ({got} of {count} bytes)")
                    return None
                n = self.sock.recv_into(view[got:], count - got)
                if n == 0:
                    self.hand_back(event="Evt17")
                    raise LinkLost("the peer closed the connection")
                got += n
        except OSError as err:
            self.hand_back(event="Evt17")
            raise LinkLost(f"connection lost while reading: {err}") from err
        finally:
            view.release()
        return buf

    def hand_back(self, pdu_bytes: bytes | None = None, event: str | None = None) -> None:
        """Give the DUL what only it should act on (a PDU that is not P-DATA, or Evt17), end the claim."""
        if pdu_bytes is not None:
            try:
                pdu, event = self.dul._decode_pdu(bytearray(pdu_bytes))
            except Exception:  # noqa: BLE001 - as the DUL does: an undecodable PDU is Evt19
                pdu, event = None, "Evt19"
            if pdu is not None:
                self.dul._recv_pdu.put(pdu)  # before its event, which the DUL thread may take at once
        if event is not None:
            self.dul.event_queue.put(event)
        _end(self.dul)


def _end(dul) -> None:
    claim = getattr(dul, "_pacsdeck_claim", None)
    if claim is not None and claim.thread is threading.current_thread():
        dul._pacsdeck_claim = None
        claim.restore()
        claim.lock.release()


def prepare(dul) -> None:
    """Make `dul` claimable: its socket read takes a lock, and send_pdu serves a claim's holder."""
    lock = threading.RLock()
    dul._pacsdeck_lock = lock
    dul._pacsdeck_claim = None
    read = dul._is_transport_event
    send_pdu = dul.send_pdu

    def is_transport_event() -> bool:
        # Blocks while a claim holds the socket (bounded, so the DUL loop still sees _kill_thread).
        if not lock.acquire(timeout=0.05):
            return False
        try:
            return read()
        finally:
            lock.release()

    def send(primitive) -> None:
        claim = dul._pacsdeck_claim
        if claim is not None and claim.thread is threading.current_thread():
            if isinstance(primitive, P_DATA):
                claim.send(primitive)
                return
            _end(dul)  # A-RELEASE / A-ABORT: the DUL sends it and reads what follows
        send_pdu(primitive)

    socket_send = dul.socket.send

    def locked_socket_send(data) -> None:
        with lock:  # a PDU the DUL thread is writing ends before a claim's first byte goes out
            socket_send(data)

    dul._is_transport_event = is_transport_event
    dul.send_pdu = send
    dul.socket.send = locked_socket_send


def claim(assoc) -> _Claim | None:
    """The calling thread's hold on `assoc`'s socket (taken now if needed), or None when the
    association cannot be claimed (not prepared, or no socket)."""
    dul = assoc.dul
    lock = getattr(dul, "_pacsdeck_lock", None)
    if lock is None:
        return None
    held = dul._pacsdeck_claim
    if held is not None and held.thread is threading.current_thread():
        return held
    sock = getattr(dul.socket, "socket", None)
    if sock is None:
        return None
    lock.acquire()
    if not dul.to_provider_queue.empty():  # something queued before the claim goes first
        lock.release()
        return None
    dul._pacsdeck_claim = _Claim(assoc, lock)
    return dul._pacsdeck_claim


def release(assoc) -> None:
    """End the calling thread's claim on `assoc`, if it has one: the DUL thread reads again."""
    _end(assoc.dul)


class StoreStatus(NamedTuple):
    """A C-STORE response as the sender needs it (the attribute names of pynetdicom's status Dataset)."""

    Status: int | None
    ErrorComment: str | None = None


_PDV = struct.Struct(">LBB")  # item length, presentation context ID, message control header


def store_response(held: _Claim, timeout: float | None) -> StoreStatus | None:
    """The peer's response to the C-STORE just sent, or None when none came within `timeout`.

    A response in one PDU (as every SCP we know sends it) is read straight from its bytes;
    anything else goes through pynetdicom's decoding, C-CANCELs included. Raises LinkLost when the
    association ended instead."""
    dimse = held.assoc.dimse
    while dimse.msg_queue.empty():
        data = held.read_pdu(timeout)
        if data is None:
            return None
        if data[0] != 0x04:
            held.hand_back(pdu_bytes=data)
            raise LinkLost(f"the peer sent PDU type 0x{data[0]:02X} instead of a response")
        if dimse.message is None and len(data) >= 12:
            length, _, control = _PDV.unpack_from(data, 6)
            if control == 0x03 and 10 + length == len(data):  # one PDV: a whole command set
                fields = commands.read(memoryview(data)[12:])
                if fields is not None and fields.get(0x0100) == commands.C_STORE_RSP and 0x0900 in fields:
                    return StoreStatus(fields[0x0900], fields.get(0x0902))
        pdu = P_DATA_TF()
        pdu.decode(bytes(data))
        dimse.receive_primitive(pdu.to_primitive())
    _, primitive = dimse.msg_queue.get(False)
    if isinstance(primitive, C_STORE) and primitive.Status is not None:
        return StoreStatus(primitive.Status, primitive.ErrorComment)
    return StoreStatus(
        None, f"the peer sent {getattr(primitive, 'msg_type', 'a message')} instead of a C-STORE response"
    )


def poll(held: _Claim) -> None:
    """Take in what the peer sent meanwhile without waiting for more: a C-CANCEL is recorded as the
    DUL would record it. Raises LinkLost when the peer ended the association instead."""
    while (isinstance(held.sock, ssl.SSLSocket) and held.sock.pending()) or guard.readable([held.sock], 0):
        data = held.read_pdu(held.assoc.dimse.dimse_timeout)  # the rest of a PDU that has begun
        if data is None:
            return
        if data[0] != 0x04:
            held.hand_back(pdu_bytes=data)
            raise LinkLost(f"the peer sent PDU type 0x{data[0]:02X} during the operation")
        pdu = P_DATA_TF()
        pdu.decode(bytes(data))
        held.assoc.dimse.receive_primitive(pdu.to_primitive())
