"""storage/dimse/commands.py writes the C-GET/C-MOVE responses pynetdicom writes, and reads what it writes."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom import dimse
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)

from storage.dimse import commands


def _encoded(primitive) -> bytes:
    """The command set pynetdicom builds for `primitive`, written by pydicom's own writer."""
    table = dimse._RQ_TO_MESSAGE if primitive.MessageIDBeingRespondedTo is None else dimse._RSP_TO_MESSAGE
    msg = table[primitive.__class__]()
    msg.primitive_to_message(primitive)
    return commands._encode_dataset(msg.command_set, True, True)


def _response(kind, responding_to, sop_class, status, counts, comment="", identifier=False):
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = responding_to
    primitive.AffectedSOPClassUID = sop_class
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment
    if counts is not None:
        remaining, completed, failed, warning = counts
        if remaining is not None:
            primitive.NumberOfRemainingSuboperations = remaining
        primitive.NumberOfCompletedSuboperations = completed
        primitive.NumberOfFailedSuboperations = failed
        primitive.NumberOfWarningSuboperations = warning
    if identifier:
        primitive.Identifier = BytesIO(b"\x08\x00\x58\x00\x00\x00\x00\x00")  # Failed SOP Instance UID List
    return primitive


ODD_UID = "1.2.826.0.1.3680043.8.498.1"  # odd length: padded with a NUL
EVEN_UID = "1.2.826.0.1.3680043.8.498.12"

CASES = {
    "pending C-GET, four counts": (
        C_GET,
        commands.C_GET_RSP,
        3,
        str(StudyRootQueryRetrieveInformationModelGet),
        0xFF00,
        (7, 2, 1, 1),
        "",
        False,
    ),
    "final C-MOVE success": (
        C_MOVE,
        commands.C_MOVE_RSP,
        65535,
        str(PatientRootQueryRetrieveInformationModelMove),
        0x0000,
        (None, 10, 0, 0),
        "",
        False,
    ),
    "cancel with identifier": (
        C_GET,
        commands.C_GET_RSP,
        9,
        str(StudyRootQueryRetrieveInformationModelGet),
        0xFE00,
        (None, 4, 0, 0),
        "",
        True,
    ),
    "refusal with comment": (
        C_MOVE,
        commands.C_MOVE_RSP,
        12,
        str(PatientRootQueryRetrieveInformationModelMove),
        0x0124,
        None,
        "no such move destination",
        False,
    ),
    "odd comment, warning": (
        C_MOVE,
        commands.C_MOVE_RSP,
        4,
        str(PatientRootQueryRetrieveInformationModelMove),
        0xB000,
        (None, 3, 1, 0),
        "one failed",
        True,
    ),
    "odd-length SOP class": (C_GET, commands.C_GET_RSP, 1, ODD_UID, 0xFF00, (1, 0, 0, 0), "", False),
    "even-length SOP class": (C_MOVE, commands.C_MOVE_RSP, 2, EVEN_UID, 0xA702, (None, 0, 5, 0), "", False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_retrieve_response_is_the_command_set_pynetdicom_writes(case):
    kind, field, responding_to, sop_class, status, counts, comment, identifier = case
    expected = _encoded(_response(kind, responding_to, sop_class, status, counts, comment, identifier))
    built = commands.retrieve_response(field, responding_to, sop_class, status, counts, comment, identifier)
    assert built == expected


def test_the_cases_cover_what_they_claim():
    assert len(ODD_UID) % 2 == 1 and len(EVEN_UID) % 2 == 0
    assert len(str(StudyRootQueryRetrieveInformationModelGet)) % 2 == 1
    # pynetdicom marks an Identifier as present: the cancel case is not the no-dataset default.
    cancel = commands.read(_encoded(_response(*[CASES["cancel with identifier"][i] for i in (0, 2, 3, 4, 5, 6, 7)])))
    assert cancel[0x0800] == commands.DATASET != commands.NO_DATASET


def _store_response(status: int, comment: str, responding_to: int):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = responding_to, status
    rsp.AffectedSOPClassUID = str(CTImageStorage)
    rsp.AffectedSOPInstanceUID = ODD_UID
    if comment:
        rsp.ErrorComment = comment
    return rsp


@pytest.mark.parametrize(
    "status, comment, responding_to",
    [(0x0000, "", 1), (0xB000, "coerced", 65535), (0xA700, "out of resources: disk full", 300)],
)
def test_read_returns_what_pynetdicom_wrote_in_a_c_store_response(status, comment, responding_to):
    primitive = _store_response(status, comment, responding_to)
    data = _encoded(primitive)
    found = commands.read(data)
    assert found is not None
    assert found[0x0900] == primitive.Status
    assert found[0x0120] == primitive.MessageIDBeingRespondedTo
    assert found[0x0100] == commands.C_STORE_RSP
    assert found[0x0002] == primitive.AffectedSOPClassUID
    assert found[0x1000] == primitive.AffectedSOPInstanceUID  # odd length: its NUL pad is not part of it
    if comment:
        assert found[0x0902] == primitive.ErrorComment
    else:
        assert 0x0902 not in found
    assert commands.read(memoryview(data)) == found  # a view of a received PDV reads the same


def test_read_of_pynetdicoms_retrieve_response_gives_its_command_field_and_status():
    primitive = _response(
        C_MOVE, 77, str(PatientRootQueryRetrieveInformationModelMove), 0xA801, None, "unknown destination"
    )
    found = commands.read(_encoded(primitive))
    assert found[0x0100] == commands.C_MOVE_RSP
    assert (found[0x0120], found[0x0900], found[0x0902]) == (77, 0xA801, primitive.ErrorComment)


def test_read_refuses_truncated_bytes():
    data = _encoded(_store_response(0, "", 5))
    assert commands.read(data) is not None
    assert commands.read(data[:-1]) is None  # the last element's value is cut short
    assert commands.read(data[:5]) is None  # not even an element header
    assert commands.read(data + data[:4]) is None  # a trailing partial header


def test_read_refuses_an_element_outside_group_0000():
    data = _encoded(_store_response(0, "", 5))
    stray = struct.pack("<HHI", 0x0008, 0x0018, 2) + b"1\0"
    assert commands.read(data + stray) is None
    assert commands.read(stray + data) is None


def test_read_refuses_a_us_element_of_the_wrong_length():
    data = _encoded(_store_response(0, "", 5))
    for element in (0x0900, 0x0120, 0x0100):
        wrong = struct.pack("<HHI", 0x0000, element, 4) + struct.pack("<I", 0)
        assert commands.read(data + wrong) is None
    right = struct.pack("<HHI", 0x0000, 0x0900, 2) + struct.pack("<H", 0xC000)
    assert commands.read(data + right)[0x0900] == 0xC000  # the same element at its right length is read
