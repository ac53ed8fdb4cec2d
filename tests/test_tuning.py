"""storage/dimse/framing.py's replacements write exactly what pynetdicom and pydicom would have written."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import dimse
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu import P_DATA_TF

from storage.dimse import commands, framing


def _primitives():
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, "1.2.840.10008.1.1"
    echo_rsp = C_ECHO()
    echo_rsp.MessageIDBeingRespondedTo, echo_rsp.AffectedSOPClassUID, echo_rsp.Status = 1, "1.2.840.10008.1.1", 0
    store = C_STORE()
    store.MessageID, store.Priority = 7, 2
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567890123"  # odd length: padded
    store.MoveOriginatorApplicationEntityTitle = "MOVESCU"
    store.MoveOriginatorMessageID = 3
    store_rsp = C_STORE()
    store_rsp.MessageIDBeingRespondedTo, store_rsp.Status = 7, 0xB000
    store_rsp.AffectedSOPClassUID = store.AffectedSOPClassUID
    store_rsp.AffectedSOPInstanceUID = store.AffectedSOPInstanceUID
    get_rsp = C_GET()
    get_rsp.MessageIDBeingRespondedTo, get_rsp.Status = 5, 0xFF00
    get_rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"
    get_rsp.NumberOfRemainingSuboperations, get_rsp.NumberOfCompletedSuboperations = 9, 1
    get_rsp.NumberOfFailedSuboperations = get_rsp.NumberOfWarningSuboperations = 0
    move = C_MOVE()
    move.MessageID, move.Priority, move.MoveDestination = 11, 0, "STORESCP"
    move.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    move.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    find_rsp = C_FIND()
    find_rsp.MessageIDBeingRespondedTo, find_rsp.Status = 2, 0xC000
    find_rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find_rsp.ErrorComment = "more than 100 matches"
    return [echo, echo_rsp, store, store_rsp, get_rsp, move, find_rsp]


def _message(primitive):
    table = dimse._RQ_TO_MESSAGE if primitive.MessageIDBeingRespondedTo is None else dimse._RSP_TO_MESSAGE
    msg = table[primitive.__class__]()
    msg.primitive_to_message(primitive)
    return msg


@pytest.mark.parametrize("primitive", _primitives(), ids=lambda p: type(p).__name__)
def test_command_sets_are_written_as_pydicom_writes_them(primitive):
    command_set = _message(primitive).command_set
    expected = commands._encode_dataset(command_set, True, True)
    assert commands.encode_command(command_set, True, True) == expected
    assert len(command_set) >= 4  # a real command set, not an empty one that trivially matches


@pytest.mark.parametrize("originator", [None, "MOVESCU", "ODD"])
def test_c_store_request_is_pynetdicoms_command_set(originator):
    store = C_STORE()
    store.MessageID, store.Priority = 65535, 1
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567890123"
    if originator:
        store.MoveOriginatorApplicationEntityTitle, store.MoveOriginatorMessageID = originator, 42
    store.DataSet = BytesIO(b"\x08\x00\x60\x00\x02\x00\x00\x00CT")  # present: Command Data Set Type says so
    expected = commands._encode_dataset(_message(store).command_set, True, True)
    built = commands.c_store_request(
        65535, 1, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID, originator, 42 if originator else None
    )
    assert built == expected


def test_other_encodings_and_values_go_to_pydicom():
    ds = Dataset()
    ds.PatientName = "Müller^Jörg"  # not ASCII, and not a command set
    assert commands.encode_command(ds, True, True) == commands._encode_dataset(ds, True, True)
    assert commands.encode_command(ds, False, True) == commands._encode_dataset(ds, False, True)


def _pdus_from_pynetdicom(msg, context_id: int, max_pdu: int) -> bytes:
    return b"".join(P_DATA_TF(p).encode() for p in framing._encode_msg(msg, context_id, max_pdu))


@pytest.mark.parametrize("max_pdu", [16384, 4096, 0, 1_000_000])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
def test_framed_c_store_is_the_bytes_pynetdicom_sends(name, max_pdu, tmp_path):
    path = Path(get_testdata_file(name))
    offset = len(path.read_bytes()) - len(_dataset_bytes(path))
    primitive = _primitives()[2]
    msg = _message(primitive)
    msg._data_set_path = (path, offset)
    framed = list(framing._encode_stored_file(msg, 3, max_pdu))
    assert all(isinstance(p, framing.FramedPData) for p in framed)
    assert b"".join(bytes(p.frames) for p in framed) == _pdus_from_pynetdicom(msg, 3, max_pdu)


def test_framed_c_store_of_a_file_larger_than_one_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(framing, "_BATCH_BYTES", 100_000)  # several batches, the last one partial
    path = Path(get_testdata_file("examples_overlay.dcm"))
    offset = len(path.read_bytes()) - len(_dataset_bytes(path))
    msg = _message(_primitives()[2])
    msg._data_set_path = (path, offset)
    framed = list(framing._encode_stored_file(msg, 1, 4096))
    assert len(framed) > 2
    assert b"".join(bytes(p.frames) for p in framed) == _pdus_from_pynetdicom(msg, 1, 4096)


def _dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta, as pynetdicom's split_dataset finds them."""
    from pynetdicom.dsutils import split_dataset

    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def test_dataset_offset_matches_pydicom_reading_of_the_file_meta(tmp_path):
    from pynetdicom.dsutils import split_dataset

    from storage.dimse import part10
    from storage.pools.pool import dataset_offset

    ours = tmp_path / "ours.dcm"
    ours.write_bytes(
        part10.file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.1", "CT1")
        + b"\x08\x00\x60\x00CS\x02\x00CT"
    )
    for path in (ours, Path(get_testdata_file("CT_small.dcm"))):
        assert dataset_offset(path) == split_dataset(path)[1]
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(b"\x08\x00\x60\x00CS\x02\x00CT")  # no preamble: pynetdicom's own reader decides
    assert dataset_offset(bare) is None
