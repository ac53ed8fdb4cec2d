"""The forwarder's association to one destination: opened with the contexts its jobs need, kept while it has some."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynetdicom import AE

from .retrieve import MAX_CONTEXTS, StoredSender, open_store_association

if TYPE_CHECKING:
    from storage.config.settings import QueueConfig

    from .context import NodeContext


class AssociationFailed(Exception):
    """No association with the destination, or it was lost: the attempt fails for the job(s)."""


class Link:
    """The association to one destination, kept across that destination's jobs while it has some."""

    def __init__(self, node: NodeContext, config: QueueConfig, destination: str):
        self.node = node
        self.config = config  # the timeouts
        self.destination = destination
        self.assoc = None
        self.ae: AE | None = None
        self.sender: StoredSender | None = None
        self.proposed: set[tuple[str, str]] = set()
        self.msg_id = 0
        self.was_up = False  # an association was established on this link for the current job

    def ensure(self, job: dict, rows: list) -> None:
        """An established association proposing every (SOP class, syntax) these rows need."""
        needed = {(r["sop_class_uid"], r["transfer_syntax"]) for r in rows}
        if self.assoc is not None and self.assoc.is_established and needed <= self.proposed:
            self.was_up = True
            return
        self.close()
        self.was_up = False
        aet = self.node.index.aet(self.destination)
        if aet is None or not aet["host"] or not aet["port"]:
            raise AssociationFailed(
                f"{self.destination} is not registered with a host and port any more; "
                "register it again with aets.add / aets.update"
            )
        pairs = needed | self._due_pairs()
        wanted = [{"sop_class_uid": c, "transfer_syntax": s} for c, s in sorted(pairs)]
        # The stored pairs first (each brings its lossless alternatives); at most 128 contexts.
        wanted.sort(key=lambda r: (r["sop_class_uid"], r["transfer_syntax"]) not in needed)
        cfg = self.config
        self.ae = AE(ae_title=self.node.config.ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = cfg.timeout
        self.ae.connection_timeout = cfg.timeout
        self.sender = StoredSender(self.node)
        assoc, reason = open_store_association(
            self.ae, self.node, aet, wanted[: MAX_CONTEXTS // 2], self.sender, cfg.timeout
        )
        if reason is not None:
            self.sender.unbind()
            self.ae.shutdown()
            self.ae = None
            raise AssociationFailed(reason)
        self.assoc = assoc
        self.proposed = {(r["sop_class_uid"], r["transfer_syntax"]) for r in wanted[: MAX_CONTEXTS // 2]}
        self.was_up = True

    def _due_pairs(self) -> set[tuple[str, str]]:
        """What the destination's other open jobs will need, so one association serves them all."""
        rows = (
            self.node.index.connection()
            .execute(
                "SELECT DISTINCT i.sop_class_uid, i.transfer_syntax FROM jobs j JOIN job_items ji ON ji.job_id = j.id"
                " JOIN instances i ON i.sop_uid = ji.sop_uid WHERE j.kind = 'forward' AND j.destination = ?"
                " AND j.state IN ('pending', 'running') AND ji.state = 'pending' LIMIT 64",
                (self.destination,),
            )
            .fetchall()
        )
        return {(r[0], r[1]) for r in rows}

    def send(self, row) -> str | None:
        """Send one stored instance; None when the destination acknowledged it, else why not.
        Raises AssociationFailed when the association is gone."""
        # StoredSender sends the file's dataset bytes as they are (C-MOVE's path): it finds a file
        # a migration moved since the row was read, and converts losslessly when the peer did not
        # accept the stored syntax (and only then).
        self.msg_id = self.msg_id % 65535 + 1
        try:
            status = self.assoc.send_c_store(self.sender.instance(row), msg_id=self.msg_id)
        except Exception as err:  # pynetdicom and our sender raise many types
            if not self.assoc.is_established:
                raise AssociationFailed(f"association with {self.destination} lost: {err}") from err
            return str(err)
        code = getattr(status, "Status", None)
        if code is None:
            raise AssociationFailed(
                f"{self.destination} gave no C-STORE response within "
                f"{self.config.timeout:g} s or aborted the association"
            )
        if code == 0 or code & 0xF000 == 0xB000:  # success, or a warning: stored
            return None
        comment = getattr(status, "ErrorComment", None)
        return f"{self.destination} answered 0x{int(code):04X}" + (f" ({comment})" if comment else "")

    def close(self) -> None:
        if self.sender is not None:
            self.sender.unbind()
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        if self.ae is not None:
            self.ae.shutdown()
        self.assoc = self.ae = self.sender = None
        self.proposed = set()
