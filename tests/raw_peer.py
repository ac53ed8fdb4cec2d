"""A DICOM peer built from raw bytes, for tests that must send what no well-behaved library would."""

from __future__ import annotations

import select
import socket
import struct
import time

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def associate_rq(called: str, calling: str, contexts: list[tuple[int, str, list[str]]], max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU: contexts as (id, abstract syntax, [transfer syntaxes])."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body += _item(0x10, APP_CONTEXT.encode())
    for cx_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, bytes((cx_id, 0, 0, 0)) + sub)
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)))
    return pdu(0x01, body)


def pdata(context_id: int, data: bytes, command: bool, last: bool = True) -> bytes:
    """One P-DATA-TF PDU holding one PDV."""
    control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return pdu(0x04, pdv)


def element(group: int, elem: int, value: bytes) -> bytes:
    """An implicit VR little endian element."""
    return struct.pack("<HHL", group, elem, len(value)) + value


def command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def c_store_rq(sop_class: bytes, sop_instance: bytes, msg_id: int = 1, command_field: bool = True) -> bytes:
    """A C-STORE-RQ command set with the UIDs exactly as given (padding and all)."""
    parts = [element(0x0000, 0x0002, sop_class)]
    if command_field:
        parts.append(element(0x0000, 0x0100, struct.pack("<H", 0x0001)))
    parts += [
        element(0x0000, 0x0110, struct.pack("<H", msg_id)),
        element(0x0000, 0x0700, struct.pack("<H", 0)),
        element(0x0000, 0x0800, struct.pack("<H", 0x0001)),
        element(0x0000, 0x1000, sop_instance),
    ]
    return command_set(*parts)


def c_echo_rq(msg_id: int = 1) -> bytes:
    return command_set(
        element(0x0000, 0x0002, b"1.2.840.10008.1.1\0"),
        element(0x0000, 0x0100, struct.pack("<H", 0x0030)),
        element(0x0000, 0x0110, struct.pack("<H", msg_id)),
        element(0x0000, 0x0800, struct.pack("<H", 0x0101)),
    )


def read_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements of an implicit VR LE command set: element number -> raw value."""
    out, pos = {}, 0
    while pos + 8 <= len(data):
        _, elem, length = struct.unpack_from("<HHL", data, pos)
        out[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


class RawPeer:
    """One TCP connection to the node; every read has a deadline."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exactly(self, count: int, deadline: float) -> bytes | None:
        buf = b""
        while len(buf) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                raise TimeoutError(f"no answer within the deadline ({len(buf)} of {count} bytes)")
            try:
                chunk = self.sock.recv(count - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            buf += chunk
        return buf

    def read_pdu(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """(type, body) of the next PDU, None if the node closed the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        header = self.read_exactly(6, deadline)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self.read_exactly(length, deadline) if length else b""
        return pdu_type, body or b""

    def closed_within(self, timeout: float) -> bool:
        """True once the node has closed the connection (reading and discarding what it sends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return False
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
        return False

    def associate(self, called: str, calling: str, contexts, max_pdu: int = 16384) -> tuple[int, bytes]:
        self.send(associate_rq(called, calling, contexts, max_pdu))
        answer = self.read_pdu()
        assert answer is not None, "the node closed the connection instead of answering the A-ASSOCIATE-RQ"
        return answer

    def dimse_response(self, timeout: float | None = None) -> dict[int, bytes] | tuple[int, bytes] | None:
        """The next command set the node sends, or the (type, body) of a non-P-DATA PDU, or None if closed."""
        answer = self.read_pdu(timeout)
        if answer is None or answer[0] != 0x04:
            return answer
        body = answer[1]
        return read_command(body[6:])

    def close(self) -> None:
        self.sock.close()


def abort_reason(answer) -> int | None:
    """The reason of an A-ABORT (type 7) answer, else None."""
    if isinstance(answer, tuple) and answer[0] == 0x07 and len(answer[1]) == 4:
        return answer[1][3]
    return None
