"""C-FIND, C-MOVE and C-GET handlers: identifiers become index queries, results become DIMSE responses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from . import migration, query, retrieve, status

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

FIND_CONTEXTS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
RETRIEVE_CONTEXTS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
                     PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
_MODEL = {
    PatientRootQueryRetrieveInformationModelFind: query.PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelMove: query.PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelGet: query.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: query.STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelMove: query.STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelGet: query.STUDY_ROOT,
}


class Refused(Exception):
    """The request cannot be served; `status` says why in DIMSE terms."""

    def __init__(self, status_code: int, reason: str):
        super().__init__(reason)
        self.status = status_code
        self.reason = reason


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]  # LO
    return ds


def _calling(event) -> str:
    return event.assoc.requestor.ae_title.strip()


def _request(event, node: "Node", operation: str) -> tuple[str, Dataset]:
    """(model, identifier) of a permitted request; Refused otherwise."""
    calling = _calling(event)
    if not node.associations.may(event.assoc, calling, operation):
        raise Refused(status.NOT_AUTHORIZED, f"{calling} may not {operation} here")
    try:
        identifier = event.identifier
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for bad input
        raise Refused(status.CANNOT_UNDERSTAND, f"cannot decode the identifier: {err}") from err
    return _MODEL[str(event.request.AffectedSOPClassUID)], identifier


def handle_find(event, node: "Node"):
    try:
        model, identifier = _request(event, node, "find")
        q = query.parse_identifier(identifier, model)
    except Refused as err:
        log.warning("C-FIND from %s refused 0x%04X: %s", _calling(event), err.status, err.reason)
        yield _status(err.status, err.reason), None
        return
    except query.QueryError as err:
        log.warning("C-FIND from %s: %s", _calling(event), err)
        yield _status(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(err)), None
        return
    limit = node.config.query_limit or None
    # Fetched at once: the read transaction must not stay open while responses trickle out.
    rows = list(query.find(node.index.connection(), q, None if limit is None else limit + 1))
    # FF01: matching goes on, but a requested optional key is not supported (it comes back empty).
    pending = status.PENDING_WARNING if q.unsupported_keys() else status.PENDING
    for n, row in enumerate(rows):
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        if limit is not None and n == limit:
            log.warning("C-FIND from %s: more than query_limit=%d matches; answered the first %d",
                        _calling(event), limit, limit)
            yield _status(status.CANCEL, f"more than {limit} matches; narrow the query"), None
            return
        yield pending, query.response(row, q, ae_title=node.config.ae_title)
    yield status.SUCCESS, None


def _retrieve_rows(node: "Node", model: str, identifier: Dataset) -> list:
    try:
        return query.retrieve_rows(node.index.connection(), identifier, model)
    except query.QueryError as err:
        raise Refused(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(err)) from err


def handle_move(event, node: "Node"):
    destination = str(event.move_destination or "").strip()
    aet = retrieve.move_destination(node, destination)
    if aet is None:  # pynetdicom answers 0xA801 and opens no connection
        log.warning("C-MOVE from %s refused: %r is not a registered move destination", _calling(event), destination)
        yield None, None
        return
    # pynetdicom wants the destination before anything else, so a refusal after this point cannot
    # carry its own status: raising here makes pynetdicom answer 0xC514 (Unable to process), still
    # before any connection to the destination.
    try:
        model, identifier = _request(event, node, "move")
        rows = _retrieve_rows(node, model, identifier)
    except Refused as err:
        log.warning("C-MOVE from %s refused (0x%04X would say why): %s", _calling(event), err.status, err.reason)
        raise
    sender = retrieve.StoredSender(node, originator_aet=event.assoc.requestor.ae_title)
    yield retrieve.store_association_args(node, aet, rows, sender)
    yield len(rows)
    try:
        yield from _sub_operations(event, rows, sender, f"C-MOVE from {_calling(event)} to {destination}")
    finally:
        sender.unbind()  # before pynetdicom releases the store association


def handle_get(event, node: "Node"):
    try:
        model, identifier = _request(event, node, "get")
        rows = _retrieve_rows(node, model, identifier)
    except Refused as err:
        log.warning("C-GET from %s refused 0x%04X: %s", _calling(event), err.status, err.reason)
        yield 1  # pynetdicom sends a failure status only after a sub-operation count
        yield _status(err.status, err.reason), None
        return
    sender = retrieve.StoredSender(node)
    sender.bind(event.assoc)
    yield len(rows)
    try:
        yield from _sub_operations(event, rows, sender, f"C-GET from {_calling(event)}")
    finally:
        sender.unbind()


def _sub_operations(event, rows: list, sender: retrieve.StoredSender, what: str):
    """Yield one pending item per instance; pynetdicom sends each and reports the counts."""
    try:
        for row in rows:
            if event.is_cancelled:
                log.info("%s cancelled after %d of %d", what, len(sender.sent) + len(sender.failed), len(rows))
                yield status.CANCEL, None
                return
            yield status.PENDING, sender.instance(row)
    finally:
        sender.touch()
        log.info("%s: %d sent, %d failed", what, len(sender.sent), len(sender.failed))
        for study_uid in {row["study_uid"] for row in rows}:  # no-op unless migration.recall_on_access
            migration.recall_on_access(sender.node, study_uid)
