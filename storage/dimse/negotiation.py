"""Association negotiation for the node: storage-aware unrestricted negotiation, and a request
decoded, negotiated and answered once per distinct request (pynetdicom adjustments, applied by install()).

A viewer proposes the same ~120 presentation contexts with role items on every association, byte
for byte. pynetdicom decoded them into PDU items and a primitive (~3 ms of CPU), negotiated them
(~1 ms) and encoded the A-ASSOCIATE-AC (~1.3 ms) each time, where Orthanc answers in about a
millisecond. Each step is a pure function of the request and our configuration, and pynetdicom
only reads what it produced, so an identical request reuses it: identity-checked, bounded, and
compared byte for byte with pynetdicom's own output in tests/test_association_memo.py.
"""

from __future__ import annotations

import copy
import functools
import threading

import pynetdicom._config
import pynetdicom.acse
import pynetdicom.dimse_primitives
import pynetdicom.dul
import pynetdicom.fsm
import pynetdicom.pdu
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.transport
import pynetdicom.utils
from pydicom.uid import UID
from pynetdicom.presentation import _STORAGE_CLASSES, PresentationContext, negotiate_as_acceptor

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


_memo_lock = threading.Lock()  # the memos below are filled from several association threads
_negotiated: dict[tuple, tuple] = {}
_negotiated_objects: set[int] = set()  # ids of contexts and role items a remembered negotiation returned


def negotiate_storage_unrestricted(rq_contexts, ac_contexts, roles=None):
    """pynetdicom's unrestricted negotiation, minus its guess that every UID missing from its own
    sop_class module is storage: that accepted e.g. Modality Worklist FIND (keyword
    ModalityWorklistInformationModelFind, which pynetdicom spells differently) as a storage context.
    Contexts whose abstract syntax pydicom names as a non-storage SOP class get normal negotiation.

    Remembered for a request decoded once (_RememberedRQ: the same context list object): its
    outcome depends only on the request, our contexts and the roles, and pynetdicom only reads the
    resulting contexts and role items (~1 ms of CPU for a viewer's 120 contexts)."""
    key = (
        id(rq_contexts),
        tuple((cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role) for cx in ac_contexts),
        tuple((roles or {}).items()),
    )
    hit = _negotiated.get(key)
    if hit is not None and hit[0] is rq_contexts:
        return list(hit[1]), list(hit[2])
    result, reply_roles = _negotiate_storage_unrestricted(rq_contexts, ac_contexts, roles)
    if getattr(rq_contexts, "remembered", False):  # only lists kept alive by the RQ memo
        with _memo_lock:
            if len(_negotiated) >= _RememberedRQ.MEMO_SIZE * 4:
                _, old_result, old_roles = _negotiated.pop(next(iter(_negotiated)))
                _negotiated_objects.difference_update(id(o) for o in (*old_result, *old_roles))
            _negotiated[key] = (rq_contexts, result, reply_roles)
            _negotiated_objects.update(id(o) for o in (*result, *reply_roles))  # never freed while remembered
        return list(result), list(reply_roles)
    return result, reply_roles


def _negotiate_storage_unrestricted(rq_contexts, ac_contexts, roles=None):
    other = [cx for cx in rq_contexts if _known_non_storage(cx.abstract_syntax)]
    storage = [cx for cx in rq_contexts if not _known_non_storage(cx.abstract_syntax)]
    result_a, roles_a = negotiate_as_acceptor(other, ac_contexts, roles)
    result_b, roles_b = _negotiate_unrestricted(storage, ac_contexts, roles)
    return sorted(result_a + result_b, key=lambda cx: cx.context_id), roles_a + roles_b


# --- A-ASSOCIATE-RQ decoding, A-ASSOCIATE-AC encoding --------------------------------------------


class _RememberedRQ(pynetdicom.pdu.A_ASSOCIATE_RQ):
    """A-ASSOCIATE-RQ decoded once per distinct request.

    A viewer proposes the same ~120 presentation contexts and role items every time, byte for
    byte; decoding them into PDU items and then into a primitive took ~3 ms of CPU per association
    (getscu). The decoded PDU and its primitive are pure functions of the bytes and are only read
    afterwards (by pynetdicom's negotiation and by our handlers), so an identical request gets the
    same decoded items and a primitive of its own whose lists it shares.
    """

    _memo: dict[bytes, tuple] = {}
    MEMO_SIZE = 64

    def decode(self, bytestream) -> None:
        key = bytes(bytestream)
        hit = self._memo.get(key)
        if hit is None:
            super().decode(bytestream)
            primitive = super().to_primitive()
            contexts = _RememberedList(primitive.presentation_context_definition_list)
            primitive._presentation_context_definition_list = contexts
            hit = (dict(self.__dict__), primitive, contexts)
            with _memo_lock:  # several DUL threads decode at once
                if len(self._memo) >= self.MEMO_SIZE:
                    self._memo.pop(next(iter(self._memo)))  # the oldest request seen
                self._memo[key] = hit
        self.__dict__.update(hit[0])
        self._remembered = hit[1]

    def to_primitive(self):
        remembered = getattr(self, "_remembered", None)
        if remembered is None:
            return super().to_primitive()
        return copy.copy(remembered)  # its own attributes; the item lists are shared, read only


class _RememberedAC(pynetdicom.pdu.A_ASSOCIATE_AC):
    """A-ASSOCIATE-AC encoded once per remembered negotiation (~1.3 ms of CPU for 120 contexts).

    Only when every part of the answer is known to be the same: contexts and role items that
    are the very objects a remembered negotiation returned, and user information made of the
    standard notifications compared by value; anything else is encoded as usual."""

    _memo: dict[tuple, tuple] = {}

    def from_primitive(self, primitive) -> None:
        key, parts = _ac_key(primitive)
        hit = self._memo.get(key) if key is not None else None
        if hit is not None and len(hit[2]) == len(parts) and all(a is b for a, b in zip(hit[2], parts, strict=False)):
            self.__dict__.update(hit[0])
            self._encoded = hit[1]
            return
        super().from_primitive(primitive)
        if key is not None:
            entry = (dict(self.__dict__), super().encode(), parts)
            with _memo_lock:
                if len(self._memo) >= _RememberedRQ.MEMO_SIZE * 4:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = entry
            self._encoded = entry[1]

    def encode(self) -> bytes:
        encoded = self.__dict__.get("_encoded")
        return encoded if encoded is not None else super().encode()


_BY_VALUE = {
    pynetdicom.pdu_primitives.MaximumLengthNotification: "maximum_length_received",
    pynetdicom.pdu_primitives.ImplementationClassUIDNotification: "implementation_class_uid",
    pynetdicom.pdu_primitives.ImplementationVersionNameNotification: "implementation_version_name",
}


def _ac_key(primitive) -> tuple[tuple | None, tuple]:
    """(key, objects the key names by identity) of an A-ASSOCIATE-AC primitive, or (None, ())."""
    parts, values = [], []
    for cx in primitive.presentation_context_definition_results_list or ():
        if id(cx) not in _negotiated_objects:
            return None, ()
        parts.append(cx)
    for item in primitive.user_information or ():
        attribute = _BY_VALUE.get(type(item))
        if attribute is not None:
            values.append((type(item).__name__, getattr(item, attribute)))
        elif id(item) in _negotiated_objects:
            parts.append(item)
        else:
            return None, ()
    key = (
        primitive.called_ae_title,
        primitive.calling_ae_title,
        primitive.result,
        primitive.result_source,
        str(primitive.application_context_name),
        tuple(map(id, parts)),
        tuple(values),
    )
    return key, tuple(parts)


class _RememberedList(list):
    """The context list of a remembered request: lives as long as its memo entry."""

    remembered = True


# --- per connection --------------------------------------------------------------------------------


def _copy_contexts(value, memo=None):
    """transport.py's deepcopy, which it uses only to give each accepted association its own copy
    of the server's presentation contexts: ~0.4 ms per association through copy.deepcopy. A
    context holds a few numbers and UIDs (immutable str), so a copy of its attributes with its own
    transfer syntax list is the same deep copy."""
    if isinstance(value, list) and all(type(cx) is PresentationContext for cx in value):
        copies = []
        for cx in value:
            twin = PresentationContext.__new__(PresentationContext)
            twin.__dict__ = {**cx.__dict__, "_transfer_syntax": list(cx._transfer_syntax)}
            copies.append(twin)
        return copies
    return copy.deepcopy(value, memo)


_validate_uid = functools.lru_cache(maxsize=4096)(pynetdicom._config.VALIDATORS["UI"])
_set_uid = functools.lru_cache(maxsize=4096)(pynetdicom.utils.set_uid)


def install() -> None:
    """Replace, in pynetdicom 3.0.4: acse.negotiate_unrestricted, the A-ASSOCIATE-RQ/AC PDU classes
    (dul._PDU_TYPES, fsm.A_ASSOCIATE_AC, pdu.PDU_TYPES: requests and answers remembered, see
    above), transport.deepcopy (_copy_contexts), _config.VALIDATORS["UI"] and set_uid (utils.py)."""
    pynetdicom.acse.negotiate_unrestricted = negotiate_storage_unrestricted
    pynetdicom.dul._PDU_TYPES[b"\x01"] = (_RememberedRQ, pynetdicom.dul._PDU_TYPES[b"\x01"][1])
    pynetdicom.fsm.A_ASSOCIATE_AC = _RememberedAC
    pynetdicom.pdu.PDU_TYPES[_RememberedRQ] = pynetdicom.pdu.PDU_TYPES[pynetdicom.pdu.A_ASSOCIATE_RQ]
    pynetdicom.pdu.PDU_TYPES[_RememberedAC] = pynetdicom.pdu.PDU_TYPES[pynetdicom.pdu.A_ASSOCIATE_AC]
    pynetdicom.transport.deepcopy = _copy_contexts
    # pynetdicom checks every UID of every A-ASSOCIATE-RQ with a regular expression, through its
    # documented VALIDATORS hook; a viewer's C-GET proposes the same ~120 SOP classes every time.
    # The check depends only on the value (and a setting we never change), so remember the answers.
    pynetdicom._config.VALIDATORS["UI"] = _validate_uid
    # The same for its conversion of each of those UIDs into a pydicom UID, which also runs pydicom's
    # conformance regex (is_valid): 1,500 regex matches per getscu association, half its decoding time.
    # A pure function of its arguments; only a "non-conformant UID" warning is now logged once per value.
    for module in (
        pynetdicom.pdu_items,
        pynetdicom.pdu_primitives,
        pynetdicom.presentation,
        pynetdicom.dimse_primitives,
    ):
        module.set_uid = _set_uid
