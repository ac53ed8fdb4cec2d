"""Checks on each DIMSE message as its P-DATA arrives, before pynetdicom decodes it.

Why: pynetdicom turns a command set into a primitive through setters that raise on a bad UID,
and a command without CommandField raises inside its state machine: the peer got no answer, the
association hung until the idle timeout, and each case left a traceback in the node's log. A
dataset was also collected in memory to whatever size the peer sent.

Here (installed on DIMSEServiceProvider.receive_primitive by reactors.install()):
- a command set must be well-formed implicit VR group 0000 of at most 64 KiB with a
  CommandField and a MessageID, else the association is aborted at once with the reason;
- a C-STORE-RQ whose Affected SOP Class or Instance UID is not a valid UID (PS3.5 9.1, checked on
  the bytes: no trailing space or newline, one NUL pad at most) is answered 0xA900 with the reason
  as soon as its dataset has been read (and dropped), and the association goes on;
- a dataset larger than limits.max_instance_size aborts the association.
"""

from __future__ import annotations

import struct

from pynetdicom.pdu_primitives import P_DATA

from storage import status
from storage.uids import InvalidUID, check_raw_uid

from . import commands, guard

MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes; C-FIND identifiers travel as datasets
_PDV_PDU = struct.Struct(">BBLLBB")  # PDU type, reserved, PDU length, PDV length, context ID, control


class _Refusal:
    """A C-STORE-RQ being refused: its dataset is read and dropped, then the status is sent."""

    __slots__ = ("context_id", "message_id", "comment")

    def __init__(self, context_id: int, message_id: int, comment: str):
        self.context_id = context_id
        self.message_id = message_id
        self.comment = comment


def check_command(raw: bytes) -> tuple[int | None, str | None, bool]:
    """(message id, why the request is refused or None, whether a dataset follows). Raises
    guard.Refused for a command set the association cannot survive."""
    fields = commands.raw_elements(raw)
    if fields is None:
        raise guard.Refused(
            "bad-command", "the command set is not well-formed (implicit VR group 0000)", guard.INVALID_PARAMETER
        )
    numbers = {}
    for element, name in ((0x0100, "CommandField"), (0x0110, "MessageID"), (0x0800, "CommandDataSetType")):
        value = fields.get(element)
        if value is None or len(value) != 2:
            if element == 0x0110 and fields.get(0x0120) is not None:  # a response: MessageIDBeingRespondedTo
                continue
            raise guard.Refused("bad-command", f"the command set has no usable {name}", guard.INVALID_PARAMETER)
        numbers[element] = struct.unpack("<H", value)[0]
    has_dataset = numbers[0x0800] != commands.NO_DATASET
    if numbers[0x0100] != commands.C_STORE_RQ:
        return numbers.get(0x0110), None, has_dataset
    try:
        check_raw_uid(fields.get(0x0002, b""), "AffectedSOPClassUID")
        check_raw_uid(fields.get(0x1000, b""), "AffectedSOPInstanceUID")
    except InvalidUID as err:
        return numbers[0x0110], str(err), has_dataset
    return numbers[0x0110], None, has_dataset


def receive_primitive(provider, primitive, original) -> None:
    """DIMSEServiceProvider.receive_primitive with the checks above; `original` is pynetdicom's."""
    pdvs = getattr(primitive, "presentation_data_value_list", None)
    if not isinstance(primitive, P_DATA) or not pdvs:
        original(provider, primitive)
        return
    if len(pdvs) == 1:
        _one(provider, primitive, pdvs[0], original)
        return
    for pdv in pdvs:  # rare: several fragments in one PDU; each is checked and passed on alone
        single = P_DATA()
        single.presentation_data_value_list = [[pdv[0], pdv[1]]]  # pynetdicom checks for [ID, data] lists
        if not _one(provider, single, pdv, original):
            return


def _one(provider, primitive, pdv, original) -> bool:
    """Check one fragment and hand it to pynetdicom; False once the association was aborted."""
    context_id, data = pdv
    control = data[0] if data else 0
    refusal = getattr(provider, "_pacsdeck_refusal", None)
    try:
        if not data:
            raise guard.Refused("bad-pdv", "a PDV without its message control header", guard.INVALID_PARAMETER)
        if refusal is not None:
            if control & 0x01:
                raise guard.Refused(
                    "bad-command", "a command began before the refused request's dataset ended", guard.UNEXPECTED_PDU
                )
            if control & 0x02:
                provider._pacsdeck_refusal = None
                _answer(provider, refusal)
            return True
        message = provider.message
        if control & 0x01:
            held = message.encoded_command_set.tell() if message is not None else 0
            if held + len(data) - 1 > MAX_COMMAND:
                raise guard.Refused("bad-command", f"a command set over {MAX_COMMAND} bytes", guard.INVALID_PARAMETER)
            if control & 0x02:
                raw = (message.encoded_command_set.getvalue() if message is not None else b"") + bytes(data[1:])
                message_id, why, has_dataset = check_command(raw)
                if why is not None:
                    guard.rejected("bad-command-uid", guard.peer_of(provider.assoc), why)
                    provider.message = None  # drop the command fragments pynetdicom holds
                    refusal = _Refusal(context_id, message_id, why)
                    if has_dataset:
                        provider._pacsdeck_refusal = refusal
                    else:
                        _answer(provider, refusal)
                    return True
        elif message is not None:
            limit = guard.limits_of(provider.assoc).max_instance_size
            dataset = message.data_set
            if dataset is not None and dataset.tell() + len(data) - 1 > limit:
                raise guard.Refused(
                    "instance-too-large",
                    f"a dataset over limits.max_instance_size ({limit} bytes)",
                    guard.REASON_NOT_SPECIFIED,
                )
    except guard.Refused as err:
        provider.message = None
        provider._pacsdeck_refusal = None
        guard.abort_and_close(provider.dul, err)
        return False
    original(provider, primitive)
    return True


def _answer(provider, refusal: _Refusal) -> None:
    """Send the C-STORE-RSP of a refused request, straight to the socket (the DUL's own thread)."""
    command = commands.store_response(refusal.message_id or 0, status.DATASET_DOES_NOT_MATCH_SOP_CLASS, refusal.comment)
    frame = _PDV_PDU.pack(0x04, 0, len(command) + 6, len(command) + 2, refusal.context_id, 0x03) + command
    provider.dul.socket.send(frame)
