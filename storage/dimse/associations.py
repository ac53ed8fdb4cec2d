"""The association log: facts gathered from pynetdicom events, one row written when a connection closes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage import metrics

if TYPE_CHECKING:
    from storage.index.database import Index

log = logging.getLogger(__name__)


@dataclass
class AssociationRecord:
    """What the association log keeps about one association, filled in as events arrive."""

    started_at: float
    calling_ae: str = ""
    called_ae: str = ""
    peer_host: str = ""
    peer_port: int | None = None
    result: str = "requested"
    reason: str = ""
    rejected_contexts: list = field(default_factory=list)
    instances: int = 0
    failures: int = 0
    bytes: int = 0
    ended_at: float | None = None
    permissions: dict = field(default_factory=dict)  # operation -> allowed, decided once per association


class AssociationLog:
    """Collects per-association facts from pynetdicom events and writes one row when it closes."""

    def __init__(self, index: Index, may: Callable[[str, str], bool], rejection_reason: Callable[[str, str], str]):
        """`may(calling_ae, operation)` and `rejection_reason(calling_ae, called_ae)`: the node's access rules."""
        self._index, self._may, self._rejection_reason = index, may, rejection_reason
        self._lock = threading.Lock()
        self._open: dict[int, AssociationRecord] = {}

    def record(self, assoc) -> AssociationRecord | None:
        with self._lock:
            return self._open.get(id(assoc))

    def may(self, assoc, calling_ae: str, operation: str) -> bool:
        """Node.may, asked once per association and operation (not once per instance)."""
        rec = self.record(assoc)
        if rec is None:
            return self._may(calling_ae, operation)
        if operation not in rec.permissions:
            rec.permissions[operation] = self._may(calling_ae, operation)
        return rec.permissions[operation]

    def on_requested(self, event) -> None:
        req = event.assoc.requestor
        rec = AssociationRecord(
            started_at=time.time(),
            calling_ae=(getattr(req.primitive, "calling_ae_title", "") or "").strip(),
            called_ae=(getattr(req.primitive, "called_ae_title", "") or "").strip(),
            peer_host=req.address,
            peer_port=req.port,
        )
        with self._lock:
            self._open[id(event.assoc)] = rec

    def on_accepted(self, event) -> None:
        rec = self.record(event.assoc)
        if rec is None:
            return
        rec.result = "accepted"
        rec.rejected_contexts = [
            {
                "abstract_syntax": str(cx.abstract_syntax),
                "transfer_syntaxes": [str(t) for t in cx.transfer_syntax],
                "reason": _CX_RESULTS.get(cx.result, str(cx.result)),
            }
            for cx in event.assoc.rejected_contexts
        ]
        if rec.rejected_contexts:
            log.info(
                "association from %s: %d presentation context(s) rejected", rec.calling_ae, len(rec.rejected_contexts)
            )

    def on_rejected(self, event) -> None:
        rec = self.record(event.assoc)
        if rec is None:
            return
        reason = self._rejection_reason(rec.calling_ae, rec.called_ae)  # an index read: outside the lock
        with self._lock:  # EVT_CONN_CLOSE (the DUL thread) may take the record at any moment: one of us logs
            if rec.result != "requested" or id(event.assoc) not in self._open:
                return
            rec.reason, rec.result = reason, "rejected"
        _log_rejection(rec)

    def on_pdu_received(self, event) -> None:
        """Note a peer's A-RELEASE-RQ or A-ABORT as the DUL reads it, before the connection closes:
        the association thread's EVT_RELEASED can come after EVT_CONN_CLOSE."""
        pdu_type = getattr(event.pdu, "pdu_type", None)
        if pdu_type in (0x05, 0x07):
            rec = self.record(event.assoc)
            if rec is not None and rec.result == "accepted":
                rec.result = "released" if pdu_type == 0x05 else "aborted"

    def on_released(self, event) -> None:
        rec = self.record(event.assoc)
        if rec is not None and rec.result == "accepted":
            rec.result = "released"

    def on_aborted(self, event) -> None:
        rec = self.record(event.assoc)
        if rec is not None and rec.result in ("accepted", "requested"):
            rec.result = "aborted"

    def on_closed(self, event) -> None:
        with self._lock:
            rec = self._open.pop(id(event.assoc), None)
            unlogged = rec is not None and rec.result == "requested"  # EVT_REJECTED has not run, and now never will
        if rec is None:  # a TCP connection that never asked for an association (port probe)
            return
        if rec.result == "accepted":  # closed without release or abort: the peer dropped the connection
            rec.result = "dropped"
        elif rec.result in ("requested", "rejected"):  # EVT_REJECTED may come after the close
            rec.result = "rejected"
            rec.reason = rec.reason or self._rejection_reason(rec.calling_ae, rec.called_ae)
            if unlogged:
                _log_rejection(rec)
        rec.ended_at = time.time()
        metrics.association_closed(rec.result)
        try:
            self._index.log_association(rec.__dict__)
        except Exception:  # losing a log row must not disturb DICOM service
            log.exception("cannot write the association log")


def _log_rejection(rec: AssociationRecord) -> None:
    log.warning(
        "association rejected: calling %r called %r from %s: %s",
        rec.calling_ae,
        rec.called_ae,
        rec.peer_host,
        rec.reason,
    )


_CX_RESULTS = {
    0x01: "user-rejection",
    0x02: "no-reason",
    0x03: "abstract-syntax-not-supported",
    0x04: "transfer-syntaxes-not-supported",
}
