"""storage/dimse/negotiation.py's remembered A-ASSOCIATE decoding, negotiation and AC encoding give exactly
what pynetdicom gives without them."""

from __future__ import annotations

import copy

import pynetdicom.pdu
import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit
from pynetdicom import AE, StoragePresentationContexts, build_context
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from storage import dimse
from storage.dimse import negotiation, qr_scp

# These tests exercise pynetdicom as the node adjusts it, in this process.
dimse.install()

SYNTAXES = (
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    [JPEG2000Lossless, ImplicitVRLittleEndian],
)
STORAGE = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:40]]


@pytest.fixture(autouse=True)
def fresh_memos(monkeypatch):
    """Each test starts with nothing remembered (other tests in this process decode requests too)."""
    monkeypatch.setattr(negotiation._RememberedRQ, "_memo", {})
    monkeypatch.setattr(negotiation._RememberedAC, "_memo", {})
    monkeypatch.setattr(negotiation, "_negotiated", {})
    monkeypatch.setattr(negotiation, "_negotiated_objects", set())


def _request_bytes(calling: str = "VIEWER", async_ops: bool = False) -> bytes:
    """A viewer's C-GET association request: storage classes it takes as SCP, plus Q/R classes."""
    contexts = []
    abstract = STORAGE + [
        str(StudyRootQueryRetrieveInformationModelGet),
        str(PatientRootQueryRetrieveInformationModelGet),
        str(ModalityWorklistInformationFind),
    ]
    for n, uid in enumerate(abstract):
        cx = build_context(uid, SYNTAXES[n % len(SYNTAXES)])
        cx.context_id = 2 * n + 1
        contexts.append(cx)
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = calling
    primitive.called_ae_title = "PACSDECK"
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 16382
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "VIEWER_304"
    info = [length, impl, version]
    for uid in STORAGE:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = uid
        role.scu_role, role.scp_role = False, True
        info.append(role)
    if async_ops:
        ops = AsynchronousOperationsWindowNegotiation()
        ops.maximum_number_operations_invoked = ops.maximum_number_operations_performed = 1
        info.append(ops)
    primitive.user_information = info
    return pynetdicom.pdu.A_ASSOCIATE_RQ(primitive).encode()


def _decode(cls, data: bytes):
    pdu = cls()
    pdu.decode(data)
    return pdu.to_primitive()


def _supported_contexts():
    """The node's contexts, added as storage/dimse/scp.py build_ae adds them."""
    ae = AE()
    ae.add_supported_context(Verification)
    for sop_class in qr_scp.FIND_CONTEXTS + qr_scp.RETRIEVE_CONTEXTS:
        ae.add_supported_context(sop_class)
    return ae.supported_contexts


def _roles(primitive) -> dict:
    """{uid: (scu_role, scp_role)}, as pynetdicom's acse derives them from the request."""
    return {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }


def _context_view(cx) -> tuple:
    return cx.as_tuple, cx.result, cx._as_scu, cx._as_scp


def _role_view(item) -> tuple:
    return item.sop_class_uid, item.scu_role, item.scp_role


def _assert_same_negotiation(got, expected) -> None:
    (got_cx, got_roles), (exp_cx, exp_roles) = got, expected
    assert [_context_view(cx) for cx in got_cx] == [_context_view(cx) for cx in exp_cx]
    assert [_role_view(r) for r in got_roles] == [_role_view(r) for r in exp_roles]


# --- A-ASSOCIATE-RQ --------------------------------------------------------------------------------


def test_a_remembered_request_reencodes_to_the_bytes_received():
    data = _request_bytes()
    first = _decode(negotiation._RememberedRQ, data)
    assert len(negotiation._RememberedRQ._memo) == 1
    second = _decode(negotiation._RememberedRQ, data)
    assert len(negotiation._RememberedRQ._memo) == 1  # the second was a hit, not a second entry
    assert first is not second
    plain = _decode(pynetdicom.pdu.A_ASSOCIATE_RQ, data)
    for primitive in (first, second):
        assert pynetdicom.pdu.A_ASSOCIATE_RQ(primitive).encode() == data
        assert (primitive.calling_ae_title, primitive.called_ae_title, primitive.application_context_name) == (
            plain.calling_ae_title,
            plain.called_ae_title,
            plain.application_context_name,
        )
        assert [cx.as_tuple for cx in primitive.presentation_context_definition_list] == [
            cx.as_tuple for cx in plain.presentation_context_definition_list
        ]
        assert [type(i) for i in primitive.user_information] == [type(i) for i in plain.user_information]
        assert _roles(primitive) == _roles(plain)
    assert len(plain.presentation_context_definition_list) == len(STORAGE) + 3
    # A primitive's own attributes are its own: a handler changing one does not change the other.
    first.calling_ae_title = "CHANGED"
    assert second.calling_ae_title == plain.calling_ae_title
    assert _decode(negotiation._RememberedRQ, data).calling_ae_title == plain.calling_ae_title


def test_requests_differing_only_in_calling_ae_are_not_confused():
    one, other = _request_bytes("VIEWER"), _request_bytes("OTHERVIEW")
    assert len(one) == len(other) and one != other
    _decode(negotiation._RememberedRQ, one)
    got = _decode(negotiation._RememberedRQ, other)
    assert got.calling_ae_title == _decode(pynetdicom.pdu.A_ASSOCIATE_RQ, other).calling_ae_title
    assert pynetdicom.pdu.A_ASSOCIATE_RQ(got).encode() == other
    assert _decode(negotiation._RememberedRQ, one).calling_ae_title == "VIEWER"
    assert len(negotiation._RememberedRQ._memo) == 2


# --- negotiation -----------------------------------------------------------------------------------


def test_remembered_negotiation_is_the_same_negotiation_and_a_hit_the_second_time():
    data = _request_bytes()
    supported = _supported_contexts()
    first = _decode(negotiation._RememberedRQ, data)
    second = _decode(negotiation._RememberedRQ, data)
    assert second.presentation_context_definition_list is first.presentation_context_definition_list
    plain = _decode(pynetdicom.pdu.A_ASSOCIATE_RQ, data)
    roles = _roles(plain)
    expected = negotiation._negotiate_storage_unrestricted(plain.presentation_context_definition_list, supported, roles)
    assert any(cx.result != 0 for cx in expected[0])  # the worklist FIND is rejected: both outcomes covered
    assert len(expected[1]) == len(STORAGE)

    got1 = negotiation.negotiate_storage_unrestricted(
        first.presentation_context_definition_list, supported, _roles(first)
    )
    _assert_same_negotiation(got1, expected)
    got2 = negotiation.negotiate_storage_unrestricted(
        second.presentation_context_definition_list, _supported_contexts(), _roles(second)
    )
    _assert_same_negotiation(got2, expected)
    assert got2[0] is not got1[0] and got2[1] is not got1[1]  # new lists, the caller may change them
    assert all(a is b for a, b in zip(got2[0], got1[0], strict=False)) and len(got2[0]) == len(got1[0])
    assert all(a is b for a, b in zip(got2[1], got1[1], strict=False)) and len(got2[1]) == len(got1[1])


def test_negotiation_with_other_roles_or_contexts_is_not_a_hit():
    data = _request_bytes()
    primitive = _decode(negotiation._RememberedRQ, data)
    contexts = primitive.presentation_context_definition_list
    supported = _supported_contexts()
    got1 = negotiation.negotiate_storage_unrestricted(contexts, supported, _roles(primitive))
    other_roles = {uid: (True, True) for uid in _roles(primitive)}
    got2 = negotiation.negotiate_storage_unrestricted(contexts, supported, other_roles)
    _assert_same_negotiation(got2, negotiation._negotiate_storage_unrestricted(contexts, supported, other_roles))
    assert got2[0][0] is not got1[0][0]
    fewer = supported[:1]  # only Verification: the Q/R GET contexts are rejected now
    got3 = negotiation.negotiate_storage_unrestricted(contexts, fewer, _roles(primitive))
    _assert_same_negotiation(got3, negotiation._negotiate_storage_unrestricted(contexts, fewer, _roles(primitive)))
    assert [cx.result for cx in got3[0]] != [cx.result for cx in got1[0]]


def test_a_plain_list_is_negotiated_every_time():
    plain = _decode(pynetdicom.pdu.A_ASSOCIATE_RQ, _request_bytes())
    supported = _supported_contexts()
    got1 = negotiation.negotiate_storage_unrestricted(
        plain.presentation_context_definition_list, supported, _roles(plain)
    )
    got2 = negotiation.negotiate_storage_unrestricted(
        plain.presentation_context_definition_list, supported, _roles(plain)
    )
    _assert_same_negotiation(got2, got1)
    assert not any(a is b for a, b in zip(got1[0], got2[0], strict=False))
    assert not negotiation._negotiated


# --- A-ASSOCIATE-AC --------------------------------------------------------------------------------


def _accept(request, result, reply_roles, max_length: int = 16382, extra=()):
    """The A-ASSOCIATE (accept) primitive pynetdicom's acse.send_accept builds."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = [cx for cx in result if cx.result == 0x00] + [
        cx for cx in result if cx.result != 0x00
    ]
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_304"
    primitive.user_information = [length, impl, version, *extra, *reply_roles]
    return primitive


def _negotiated(data: bytes):
    request = _decode(negotiation._RememberedRQ, data)
    result, reply_roles = negotiation.negotiate_storage_unrestricted(
        request.presentation_context_definition_list, _supported_contexts(), _roles(request)
    )
    return request, result, reply_roles


def test_a_remembered_ac_is_the_bytes_pynetdicom_encodes_first_and_second_time():
    data = _request_bytes()
    request, result, reply_roles = _negotiated(data)
    first = _accept(request, result, reply_roles)
    expected = pynetdicom.pdu.A_ASSOCIATE_AC(first).encode()
    ac1 = negotiation._RememberedAC(first)  # a miss: encoded as usual, then remembered
    assert ac1.encode() == expected
    assert len(negotiation._RememberedAC._memo) == 1
    remembered = next(iter(negotiation._RememberedAC._memo.values()))

    request2, result2, reply_roles2 = _negotiated(data)
    assert all(a is b for a, b in zip(result2, result, strict=False))
    second = _accept(request2, result2, reply_roles2)
    assert second is not first
    ac2 = negotiation._RememberedAC(second)
    assert len(negotiation._RememberedAC._memo) == 1 and ac2.__dict__["_encoded"] is remembered[1]  # a hit
    assert ac2.encode() == pynetdicom.pdu.A_ASSOCIATE_AC(second).encode() == expected
    assert ac2.to_primitive().calling_ae_title == request.calling_ae_title


def test_an_ac_differing_in_a_value_is_encoded_afresh():
    data = _request_bytes()
    request, result, reply_roles = _negotiated(data)
    negotiation._RememberedAC(_accept(request, result, reply_roles)).encode()
    other = _accept(request, result, reply_roles, max_length=32768)
    ac = negotiation._RememberedAC(other)
    assert ac.encode() == pynetdicom.pdu.A_ASSOCIATE_AC(other).encode()
    assert len(negotiation._RememberedAC._memo) == 2  # its own entry, not the first one's bytes
    request_b, result_b, roles_b = _negotiated(_request_bytes("OTHERVIEW"))
    for_b = _accept(request_b, result_b, roles_b)
    assert negotiation._RememberedAC(for_b).encode() == pynetdicom.pdu.A_ASSOCIATE_AC(for_b).encode()


def test_an_ac_with_an_item_not_compared_by_value_is_encoded_as_usual():
    ops = AsynchronousOperationsWindowNegotiation()
    ops.maximum_number_operations_invoked = ops.maximum_number_operations_performed = 1
    assert type(ops) not in negotiation._BY_VALUE
    request, result, reply_roles = _negotiated(_request_bytes())
    for _ in range(2):
        primitive = _accept(request, result, reply_roles, extra=[ops])
        ac = negotiation._RememberedAC(primitive)
        assert ac.encode() == pynetdicom.pdu.A_ASSOCIATE_AC(primitive).encode()
    assert not negotiation._RememberedAC._memo


def test_an_ac_of_contexts_not_from_a_remembered_negotiation_is_encoded_as_usual():
    plain = _decode(pynetdicom.pdu.A_ASSOCIATE_RQ, _request_bytes())
    result, reply_roles = negotiation.negotiate_storage_unrestricted(
        plain.presentation_context_definition_list, _supported_contexts(), _roles(plain)
    )
    primitive = _accept(plain, result, reply_roles)
    assert negotiation._RememberedAC(primitive).encode() == pynetdicom.pdu.A_ASSOCIATE_AC(primitive).encode()
    assert not negotiation._RememberedAC._memo


# --- copies of the node's contexts -----------------------------------------------------------------


def test_copy_contexts_is_a_deep_copy():
    supported = _supported_contexts()
    for cx in supported:  # a role set on one: copied too
        cx.scu_role = cx.scp_role = None
    supported[1].scu_role, supported[1].scp_role = True, False
    copies = negotiation._copy_contexts(supported)
    deep = copy.deepcopy(supported)
    assert len(copies) == len(deep) == len(supported) > 1
    for mine, theirs, original in zip(copies, deep, supported, strict=False):
        assert type(mine) is type(original)
        assert mine is not original
        assert mine.__dict__ == theirs.__dict__ == original.__dict__
        assert mine._transfer_syntax is not original._transfer_syntax
        mine.transfer_syntax = [ImplicitVRLittleEndian]  # changing a copy leaves the original alone
        assert original.__dict__ == theirs.__dict__


def test_copy_contexts_deep_copies_anything_else():
    nested = {"contexts": [[1, 2], {"a": [3]}]}
    got = negotiation._copy_contexts(nested)
    assert got == copy.deepcopy(nested)
    assert got["contexts"][0] is not nested["contexts"][0]
    mixed = [_supported_contexts()[0], [4]]
    got_mixed = negotiation._copy_contexts(mixed)
    assert got_mixed[0].__dict__ == mixed[0].__dict__ and got_mixed[0] is not mixed[0]
    assert got_mixed[1] == [4] and got_mixed[1] is not mixed[1]
