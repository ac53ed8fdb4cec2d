"""C-GET and C-MOVE served whole: the sub-operation loop, its pending responses and the final one.

Why not pynetdicom's loop (service_class._get_scp/_move_scp): it turns every response into a
pydicom dataset and a primitive both ways, ~0.3 ms per instance, and it needs a C-MOVE's
destination before anything else, so a refused C-MOVE could only answer 0xC514. Here the stored
bytes go out and the responses come back as raw command sets (commands.py), on a socket the
sending thread holds (inline.py), and a refusal carries its own status.

A handler marked with @serves_whole_operation and bound to EVT_C_GET or EVT_C_MOVE is called as
handler(service, request, context, *args) in place of pynetdicom's loop; any other handler gets
pynetdicom's loop as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dsutils import encode
from pynetdicom.service_class import QueryRetrieveServiceClass

from storage import metrics, status
from storage.pools import migration

from . import background, commands, framing, inline

if TYPE_CHECKING:
    from .retrieve import StoredSender

log = logging.getLogger(__name__)

MAX_SUB_OPERATIONS = 65535  # the counts are US (PS3.4 C.4.2.3.1)
UNABLE_TO_PROCESS = {"C-GET": 0xC411, "C-MOVE": 0xC511}
TOO_MANY = {"C-GET": 0xC416, "C-MOVE": 0xC516}
ALL_FAILED = 0xA702  # Refused: out of resources, unable to perform sub-operations


_access = background.Lane("retrieve-access")


def serves_whole_operation(handler: Callable) -> Callable:
    """Mark an EVT_C_GET / EVT_C_MOVE handler that answers the request itself (see module doc)."""
    handler.serves_whole_operation = True
    return handler


def _dispatch(event, pynetdicom_scp):
    def scp(self, req, context) -> None:
        handler, args = self.assoc.get_handlers(event)
        if not getattr(handler, "serves_whole_operation", False):
            return pynetdicom_scp(self, req, context)
        handler(self, req, context, *(args or ()))

    return scp


_get_scp = QueryRetrieveServiceClass._get_scp
_move_scp = QueryRetrieveServiceClass._move_scp


def install() -> None:
    """Replace QueryRetrieveServiceClass._get_scp and ._move_scp (service_class.py): handlers marked
    serves_whole_operation answer the request themselves."""
    QueryRetrieveServiceClass._get_scp = _dispatch(evt.EVT_C_GET, _get_scp)
    QueryRetrieveServiceClass._move_scp = _dispatch(evt.EVT_C_MOVE, _move_scp)


class Responder:
    """Writes the C-GET-RSPs or C-MOVE-RSPs to one request, on the association it came on."""

    def __init__(self, service, req, context, operation: str):
        self.assoc = service.assoc
        self.operation = operation
        self.command_field = commands.C_GET_RSP if operation == "C-GET" else commands.C_MOVE_RSP
        self.context_id = context.context_id
        self.syntax = context.transfer_syntax[0]
        self.msg_id = req.MessageID
        self.sop_class = str(req.AffectedSOPClassUID)
        self.held = None
        self.requestor_lost = False

    def hold(self) -> None:
        """Write to the requestor from this thread, and look for its C-CANCEL here between
        sub-operations (see cancelled) instead of through pynetdicom's DUL thread."""
        self.held = inline.claim(self.assoc)

    def let_go(self) -> None:
        inline.release(self.assoc)
        self.held = None

    def cancelled(self, service) -> bool:
        """Whether the requestor sent a C-CANCEL for this request (or went away)."""
        if self.held is not None:
            self.held = inline.claim(self.assoc)  # taken again if an instance sent the pynetdicom way let it go
        if self.held is not None:
            try:
                inline.poll(self.held)
            except inline.LinkLost as err:
                log.warning("%s: the requestor's association ended: %s", self.operation, err)
                self.requestor_lost = True
                self.held = None
                return True
        return service.is_cancelled(self.msg_id)

    def send(self, code: int, counts=None, comment: str = "", failed_uids: list[str] | None = None) -> None:
        if self.requestor_lost:
            return
        identifier = b""
        if failed_uids is not None:  # PS3.4 C.4.2.3.1: Failed SOP Instance UID List with these statuses
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed_uids
            identifier = encode(ds, self.syntax.is_implicit_VR, self.syntax.is_little_endian, self.syntax.is_deflated)
        command = commands.retrieve_response(
            self.command_field, self.msg_id, self.sop_class, code, counts, comment, identifier=failed_uids is not None
        )
        if self.assoc.is_established:
            try:
                self.assoc.dul.send_pdu(
                    framing.framed(self.context_id, command, identifier, self.assoc.dimse.maximum_pdu_size)
                )
            except inline.LinkLost as err:
                log.warning("%s: cannot answer the requestor: %s", self.operation, err)
                self.requestor_lost = True
                return
        if code not in (status.PENDING, status.PENDING_WARNING):
            metrics.response_sent(self.operation, code)

    def refuse(self, code: int, reason: str) -> None:
        log.warning(
            "%s from %s refused 0x%04X: %s", self.operation, self.assoc.requestor.ae_title.strip(), code, reason
        )
        self.send(code, None, reason)


@dataclass
class Outcome:
    """The counts of one retrieve (PS3.4 C.4.2.3.1) and the UIDs of its failed sub-operations."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    cancelled: bool = False
    link_lost: bool = False  # the association the instances went on ended

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def counts(self, with_remaining: bool = True) -> tuple:
        return (self.remaining if with_remaining else None, self.completed, self.failed, self.warning)


def run(
    sender: StoredSender,
    rows: list,
    msg_id: int,
    is_cancelled: Callable[[], bool],
    pending: Callable[[Outcome], None],
    originator_id: int | None = None,
) -> Outcome:
    """Send each row's stored instance on the sender's association, reporting after each one."""
    outcome = Outcome(len(rows))
    for n, row in enumerate(rows):
        if is_cancelled():
            outcome.cancelled = True
            return outcome
        uid = row["sop_uid"]
        upcoming = (rows[n + 1], (msg_id + n + 1) % 65535 + 1) if n + 1 < len(rows) else None
        try:
            code = sender.send(row, (msg_id + n) % 65535 + 1, originator_id, upcoming).Status
        except inline.LinkLost as err:
            log.warning("retrieve: the association ended after %d of %d: %s", n, len(rows), err)
            outcome.link_lost = True
            code = None
        except Exception:  # noqa: BLE001 - the sender has logged why; the sub-operation failed
            code = None
        if code == 0:
            outcome.completed += 1
        elif code is not None and code & 0xF000 == 0xB000:
            outcome.warning += 1
        else:
            outcome.failed += 1
            outcome.failed_uids.append(uid)
        if outcome.link_lost:  # nothing more can go out on it: the rest failed too
            rest = rows[n + 1 :]
            outcome.failed += len(rest)
            outcome.failed_uids += [r["sop_uid"] for r in rest]
            return outcome
        pending(outcome)
    return outcome


def serve(service, respond: Responder, sender: StoredSender, rows: list, what: str, store=None) -> None:
    """A C-GET's or C-MOVE's sub-operations and answers, on associations this thread holds.

    `store` is a C-MOVE's association to its destination (None for a C-GET, which sends on the
    requestor's own): it is released in the background once every instance is answered. A bug
    answers "unable to process" rather than aborting the requestor's association."""
    try:
        respond.hold()
        outcome = run(
            sender,
            rows,
            respond.msg_id,
            lambda: respond.cancelled(service),
            lambda o: respond.send(status.PENDING, o.counts()),
            originator_id=respond.msg_id if store is not None else None,
        )
        if store is not None:
            sender.release_in_background(store)
        if store is not None or not outcome.link_lost:  # a lost C-GET association takes no answer
            finish(respond, outcome, what)
    except Exception as err:  # a bug in our loop: say so to the requestor, keep the association
        log.exception("%s failed", what)
        respond.send(UNABLE_TO_PROCESS[respond.operation], None, str(err))
    finally:
        respond.let_go()


def finish(responder: Responder, outcome: Outcome, what: str) -> None:
    """The final response: Cancel, Success, Warning (some failed) or Failure (all failed)."""
    if outcome.cancelled:
        log.info("%s cancelled after %d of %d", what, outcome.total - outcome.remaining, outcome.total)
        responder.send(status.CANCEL, outcome.counts(), failed_uids=outcome.failed_uids)
    elif not outcome.failed and not outcome.warning:
        responder.send(status.SUCCESS, outcome.counts(with_remaining=False))
    else:
        code = ALL_FAILED if outcome.failed == outcome.total else status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        responder.send(code, outcome.counts(with_remaining=False), failed_uids=outcome.failed_uids)


def after_retrieve(sender: StoredSender, rows: list, what: str) -> None:
    """Last-access times and recalls, on a background lane: the requestor's release (and its next
    request) need not wait for an index write."""

    def record() -> None:
        sender.touch()
        for study_uid in {row["study_uid"] for row in rows}:  # no-op unless migration.recall_on_access
            migration.recall_on_access(sender.node, study_uid)

    log.info("%s: %d sent, %d failed", what, len(sender.sent), len(sender.failed))
    _access.submit(record)
