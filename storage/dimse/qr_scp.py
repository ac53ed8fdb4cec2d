"""C-FIND, C-MOVE and C-GET handlers: identifiers become index queries, results become DIMSE responses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from storage import status
from storage.index import query

from . import retrieve, suboperations

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger(__name__)

FIND_CONTEXTS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
RETRIEVE_CONTEXTS = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
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


def _calling(assoc) -> str:
    return assoc.requestor.ae_title.strip()


def _request(event, node: NodeContext, operation: str) -> tuple[str, Dataset]:
    """(model, identifier) of a permitted C-FIND; Refused otherwise."""
    return _permitted(node, event.assoc, event.request, operation, lambda: event.identifier)


def _permitted(node: NodeContext, assoc, request, operation: str, identifier) -> tuple[str, Dataset]:
    """(model, decoded identifier) of a request the calling AE may make; Refused otherwise."""
    calling = _calling(assoc)
    if not node.associations.may(assoc, calling, operation):
        raise Refused(status.NOT_AUTHORIZED, f"{calling} may not {operation} here")
    try:
        decoded = identifier()
    except Exception as err:  # pydicom raises many types for bad input
        raise Refused(status.CANNOT_UNDERSTAND, f"cannot decode the identifier: {err}") from err
    return _MODEL[str(request.AffectedSOPClassUID)], decoded


def handle_find(event, node: NodeContext):
    try:
        model, identifier = _request(event, node, "find")
        q = query.parse_identifier(identifier, model)
    except Refused as err:
        log.warning("C-FIND from %s refused 0x%04X: %s", _calling(event.assoc), err.status, err.reason)
        yield _status(err.status, err.reason), None
        return
    except query.QueryError as err:
        log.warning("C-FIND from %s: %s", _calling(event.assoc), err)
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
            log.warning(
                "C-FIND from %s: more than query_limit=%d matches; answered the first %d",
                _calling(event.assoc),
                limit,
                limit,
            )
            yield _status(status.CANCEL, f"more than {limit} matches; narrow the query"), None
            return
        yield pending, query.response(row, q, ae_title=node.config.ae_title)
    yield status.SUCCESS, None


def _retrieve_rows(node: NodeContext, model: str, identifier: Dataset) -> list:
    try:
        return query.retrieve_rows(node.index.connection(), identifier, model)
    except query.QueryError as err:
        raise Refused(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(err)) from err


def _retrieve_request(service, req, context, node: NodeContext, operation: str) -> list:
    """The rows a permitted C-GET / C-MOVE asks for; Refused otherwise."""
    syntax = context.transfer_syntax[0]

    def identifier() -> Dataset:
        return decode(req.Identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)

    model, ds = _permitted(node, service.assoc, req, operation, identifier)
    rows = _retrieve_rows(node, model, ds)
    if len(rows) > suboperations.MAX_SUB_OPERATIONS:
        raise Refused(
            suboperations.TOO_MANY[f"C-{operation.upper()}"],
            f"{len(rows)} instances match; at most {suboperations.MAX_SUB_OPERATIONS} per request",
        )
    return rows


@suboperations.serves_whole_operation
def handle_get(service, req, context, node: NodeContext) -> None:
    """C-GET: the matching instances as C-STOREs on the requestor's own association."""
    respond = suboperations.Responder(service, req, context, "C-GET")
    try:
        rows = _retrieve_request(service, req, context, node, "get")
    except Refused as err:
        respond.refuse(err.status, err.reason)
        return
    sender = retrieve.StoredSender(node)
    sender.bind(service.assoc)
    what = f"C-GET from {_calling(service.assoc)}"
    try:
        suboperations.serve(service, respond, sender, rows, what)
    finally:
        sender.unbind()
        suboperations.after_retrieve(sender, rows, what)


@suboperations.serves_whole_operation
def handle_move(service, req, context, node: NodeContext) -> None:
    """C-MOVE: the matching instances as C-STOREs on a new association to a registered destination."""
    respond = suboperations.Responder(service, req, context, "C-MOVE")
    destination = str(req.MoveDestination or "").strip()
    try:
        rows = _retrieve_request(service, req, context, node, "move")
        aet = retrieve.move_destination(node, destination)
        if aet is None:  # and no connection is opened
            raise Refused(status.MOVE_DESTINATION_UNKNOWN, f"{destination!r} is not a registered move destination")
    except Refused as err:
        respond.refuse(err.status, err.reason)
        return
    if not rows:
        respond.send(status.SUCCESS, (None, 0, 0, 0))
        return
    what = f"C-MOVE from {_calling(service.assoc)} to {destination}"
    sender = retrieve.StoredSender(node, originator_aet=service.assoc.requestor.ae_title)
    store, why_not = retrieve.open_store_association(
        service.ae, node, aet, rows, sender, service.ae.connection_timeout or 5
    )
    try:
        if why_not is not None:  # the log says why in full; the ErrorComment (64 characters) begins it
            respond.refuse(status.MOVE_DESTINATION_UNKNOWN, f"cannot associate with {destination}: {why_not}")
            return
        suboperations.serve(service, respond, sender, rows, what, store=store)
    finally:
        if sender.bound_to(store):  # not established, or serve() failed before releasing it
            sender.release_in_background(store)
        suboperations.after_retrieve(sender, rows, what)
