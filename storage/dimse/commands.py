"""DIMSE command sets as bytes: the few a retrieve writes and reads, without pydicom datasets.

A command set is group 0000 in implicit VR little endian, elements in tag order, led by its group
length (PS3.7 6.3.1, 9.3). Going through pydicom datasets and pynetdicom primitives cost ~0.3 ms per
C-GET sub-operation, more than Orthanc's whole sub-operation; tests/test_tuning.py checks these
bytes against pynetdicom's.
"""

from __future__ import annotations

import struct

import pynetdicom.dimse_messages

_ELEMENT_HEADER = struct.Struct("<HHI")
_NUMBERS = {"US": struct.Struct("<H"), "UL": struct.Struct("<I")}
_TEXT_PAD = {"UI": b"\0", "AE": b" ", "LO": b" "}

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RSP = 0x8010
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101
DATASET = 0x0001

# The elements this module reads, with their VRs (the rest are skipped).
_READ = {0x0002: "UI", 0x0100: "US", 0x0110: "US", 0x0120: "US", 0x0800: "US", 0x0900: "US", 0x0902: "LO", 0x1000: "UI"}


def _element(element: int, vr: str, value) -> bytes:
    data = _NUMBERS[vr].pack(value) if vr in _NUMBERS else value.encode("ascii", "replace")
    if len(data) % 2:
        data += _TEXT_PAD[vr]
    return _ELEMENT_HEADER.pack(0x0000, element, len(data)) + data


def _command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, "UL", len(body)) + body


def c_store_request(
    msg_id: int,
    priority: int,
    sop_class: str,
    sop_uid: str,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> bytes:
    """A C-STORE-RQ whose dataset follows."""
    return _command_set(
        _element(0x0002, "UI", sop_class),
        _element(0x0100, "US", C_STORE_RQ),
        _element(0x0110, "US", msg_id),
        _element(0x0700, "US", priority),
        _element(0x0800, "US", DATASET),
        _element(0x1000, "UI", sop_uid),
        _element(0x1030, "AE", originator_aet) if originator_aet else b"",
        _element(0x1031, "US", originator_id) if originator_aet and originator_id is not None else b"",
    )


def retrieve_response(
    command_field: int,
    responding_to: int,
    sop_class: str,
    status: int,
    counts: tuple[int | None, int, int, int] | None,
    comment: str = "",
    identifier: bool = False,
) -> bytes:
    """A C-GET-RSP or C-MOVE-RSP. `counts` is (remaining, completed, failed, warning); remaining is
    None in a final response (PS3.4 C.4.2.3.1), and `counts` None leaves all four out (a refusal)."""
    numbers = b""
    if counts is not None:
        remaining, completed, failed, warning = counts
        numbers = b"".join(
            (
                _element(0x1020, "US", remaining) if remaining is not None else b"",
                _element(0x1021, "US", completed),
                _element(0x1022, "US", failed),
                _element(0x1023, "US", warning),
            )
        )
    return _command_set(
        _element(0x0002, "UI", sop_class),
        _element(0x0100, "US", command_field),
        _element(0x0120, "US", responding_to),
        _element(0x0800, "US", DATASET if identifier else NO_DATASET),
        _element(0x0900, "US", status),
        _element(0x0902, "LO", comment[:64]) if comment else b"",
        numbers,
    )


def store_response(responding_to: int, status: int, comment: str) -> bytes:
    """A C-STORE-RSP that refuses a request whose command named no usable SOP Class or Instance
    (the optional UIDs are left out rather than echoed back)."""
    return _command_set(
        _element(0x0100, "US", C_STORE_RSP),
        _element(0x0120, "US", responding_to),
        _element(0x0800, "US", NO_DATASET),
        _element(0x0900, "US", status),
        _element(0x0902, "LO", comment[:64]),
    )


def _walk(data) -> list[tuple[int, int, int]] | None:
    """(element number, value offset, value length) of each element of an encoded command set, or
    None when the bytes are not a well-formed implicit VR group 0000."""
    out = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(data, pos)
        pos += 8
        if group != 0x0000 or length > end - pos:
            return None
        out.append((element, pos, length))
        pos += length
    return out


def raw_elements(data) -> dict[int, bytes] | None:
    """Every element of an encoded command set as raw bytes (element number -> value), or None
    when the bytes are not a well-formed implicit VR group 0000."""
    walked = _walk(data)
    if walked is None:
        return None
    return {element: bytes(data[pos : pos + length]) for element, pos, length in walked}


def read(data) -> dict[int, int | str] | None:
    """The elements of `_READ` found in an encoded command set (element number -> value), or None
    when the bytes are not a well-formed implicit VR command set."""
    walked = _walk(data)
    if walked is None:
        return None
    found: dict[int, int | str] = {}
    for element, pos, length in walked:
        vr = _READ.get(element)
        if vr in _NUMBERS:
            if length != _NUMBERS[vr].size:
                return None
            found[element] = _NUMBERS[vr].unpack_from(data, pos)[0]
        elif vr is not None:
            found[element] = bytes(data[pos : pos + length]).decode("ascii", "replace").rstrip("\0 ")
    return found


# --- pynetdicom's command set encoder -------------------------------------------------------------

_encode_dataset = pynetdicom.dimse_messages.encode
_ELEMENT_HEADER = struct.Struct("<HHI")
_NUMBERS = {"US": struct.Struct("<H"), "UL": struct.Struct("<I")}
_TEXT_PAD = {"UI": b"\0", "AE": b" ", "CS": b" ", "SH": b" ", "LO": b" ", "ST": b" "}


def encode_command(ds, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False):
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


def install() -> None:
    """Replace dimse_messages.encode (pynetdicom's dsutils.encode as dimse_messages uses it)."""
    pynetdicom.dimse_messages.encode = encode_command
