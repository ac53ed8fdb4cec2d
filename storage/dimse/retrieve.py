"""C-MOVE / C-GET sub-operations: stored files sent as their stored bytes, from any pool, with last-access kept."""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config, build_context, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ

from storage.config.tls import client_context
from storage.pools.pool import dataset_offset

from . import background, commands, framing, inline, reactors

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger(__name__)


MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255


_releases = background.Lane("move-store-release")  # C-MOVE store associations, released after the answer


class StoredInstance(Dataset):
    """What the C-MOVE/C-GET handlers yield for pynetdicom to send: the UIDs (for its failed-instance
    list) and where the stored file is. `StoredSender` turns it into a send of the file's bytes."""

    def __init__(self, row: sqlite3.Row, path: Path | None):
        super().__init__()
        self.SOPClassUID = row["sop_class_uid"]
        self.SOPInstanceUID = row["sop_uid"]
        self.stored_path = path
        self.stored_syntax = UID(row["transfer_syntax"])


def lossless_alternatives(syntax: UID) -> list[UID]:
    """Syntaxes a stored instance may be sent in when the peer did not accept its own, with no loss.

    Only what pynetdicom converts itself when it encodes a dataset: implicit <-> explicit VR little
    endian and deflated -> inflated. Compressed pixel data is never decoded here (that would need a
    codec and a decision about lossy output); big endian is left alone like pynetdicom does.
    """
    if syntax == ImplicitVRLittleEndian:
        return [ExplicitVRLittleEndian]
    if syntax.is_compressed or not syntax.is_little_endian:
        return []
    return [ImplicitVRLittleEndian] + ([ExplicitVRLittleEndian] if syntax.is_deflated else [])


def store_contexts(rows: list[sqlite3.Row]) -> list:
    """Presentation contexts for a C-MOVE's store association: one per stored (SOP class, syntax),
    then one per lossless fallback. Each context has one syntax, so the peer cannot pick another
    when it accepts the stored one, and the bytes go out as stored."""
    wanted: dict[tuple[str, str], None] = {}
    for row in rows:
        wanted[(row["sop_class_uid"], row["transfer_syntax"])] = None
    for sop_class, syntax in list(wanted):
        for alt in lossless_alternatives(UID(syntax)):
            wanted.setdefault((sop_class, str(alt)), None)
    if len(wanted) > MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts; proposing the first %d", len(wanted), MAX_CONTEXTS)
    return [build_context(sop_class, [syntax]) for sop_class, syntax in list(wanted)[:MAX_CONTEXTS]]


class _PausedReactor(threading.Event):
    """Stands in for a C-MOVE store association's `_reactor_checkpoint`, keeping its reactor paused
    while we send on it.

    pynetdicom 3.0.4 pauses an association's reactor around each send_c_store from another thread
    by clearing this event and polling `_is_paused`, which the reactor sets *before* it waits, so a
    reactor just passing the wait is taken as paused and can take the C-STORE response off the queue
    ("Received unexpected C-STORE service message", then a 30 s DIMSE timeout). Back-to-back sends
    of small files hit that window. Held, the reactor stays in wait() for the whole move, and still
    leaves within 50 ms once the association ends, so its thread always exits.
    """

    def __init__(self, assoc):
        super().__init__()
        self._assoc = assoc
        self.held = True

    def set(self) -> None:
        if not self.held:
            super().set()

    def let_go(self) -> None:
        self.held = False
        super().set()

    def wait(self, timeout: float | None = None) -> bool:
        while self.held and not self._assoc._kill and (self._assoc.is_established or not self._assoc.is_released):
            if super().wait(0.05):
                return True
        return super().wait(timeout) if not self.held else True


class StoredSender:
    """Sends stored instances as their stored bytes over one association (a C-GET's own, a C-MOVE's
    store association, a forward's) and remembers which arrived, for last-access and the log.

    Retrieves call `send(row, ...)` (suboperations.py). The forwarder calls the association's
    send_c_store with a StoredInstance, which `bind` routes here; other calls pass through to
    pynetdicom untouched, as does the rare instance sent the pynetdicom way (a lossless conversion,
    an unusual File Meta layout).
    """

    def __init__(self, node: NodeContext, originator_aet: str | None = None):
        self.node = node
        # PS3.7 9.1.1.1: the AE that asked for the C-MOVE (pynetdicom 3.0.4 puts the node's own title).
        self.originator_aet = originator_aet
        self._contexts: dict[tuple[str, str], int] = {}
        self.sent: list[str] = []
        self.failed: dict[str, str] = {}
        self._assoc = None
        self._original = None
        self._paused: _PausedReactor | None = None
        self._upcoming: tuple | None = None  # (row, message ID, originator ID) of the next sub-operation
        self._ahead: tuple | None = None  # (SOP Instance UID, message ID, FramedStore) made in advance

    def bind(self, assoc) -> None:
        self._assoc = assoc
        self._original = assoc.send_c_store
        assoc.send_c_store = self._send_c_store

    def unbind(self) -> None:
        """Called by the thread that sent (it may hold the association's socket: inline.py)."""
        self._drop_ahead()
        if self._assoc is not None:
            inline.release(self._assoc)
        if self._assoc is not None and self._original is not None:
            self._assoc.send_c_store = self._original
        if self._paused is not None:
            self._paused.let_go()
        self._assoc = None

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead[2].close()
        self._ahead = self._upcoming = None

    def bound_to(self, assoc) -> bool:
        return self._assoc is assoc

    def release_in_background(self, store) -> None:
        """Unbind from a C-MOVE's store association and release it from a thread of its own, so the
        C-MOVE's requestor is answered (and its own release served) without waiting for ours.

        The store association's reactor stays held until the release is done: that is the state
        Association.release() first waits for, by polling every 0.1 ms, which from an association
        thread with work queued spun without sleeping and kept the GIL from the reactor it waited
        for (12 ms per C-MOVE)."""
        self._drop_ahead()
        inline.release(store)
        if self._original is not None:
            store.send_c_store = self._original
        paused, self._paused, self._assoc = self._paused, None, None

        def release() -> None:
            try:
                if store.is_established:
                    store.acse.negotiate_release()
            finally:
                if paused is not None:
                    paused.let_go()

        _releases.submit(release)

    def on_store_connection(self, event) -> None:
        """EVT_CONN_OPEN of a C-MOVE's store association: before its A-ASSOCIATE, so before any send."""
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:  # DCMTK receivers leave Nagle on too; small PDUs must not wait for it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reactors.prepare(event.assoc)  # its DUL wakes for each PDU to send or read, not once a millisecond
        # Before the association is established, so before its reactor runs.
        self._paused = event.assoc._reactor_checkpoint = _PausedReactor(event.assoc)
        self.bind(event.assoc)

    def instance(self, row: sqlite3.Row) -> StoredInstance:
        pool = next((p for p in self.node.pools if p.name == row["pool"]), None)
        return StoredInstance(row, pool.file(row["path"]) if pool is not None else None)

    def send(
        self,
        row: sqlite3.Row,
        msg_id: int,
        originator_id: int | None = None,
        upcoming: tuple[sqlite3.Row, int] | None = None,
    ):
        """One sub-operation of our own retrieve loop (suboperations.py): the row's stored instance
        to the bound association. Returns the response (its .Status is None when none came).

        `upcoming` (row, message ID) is the next sub-operation: its request is read and framed
        while the peer answers this one (the peer's time, not ours), then sent at its turn."""
        self._upcoming = None if upcoming is None else (*upcoming, originator_id)
        return self._send_c_store(self.instance(row), msg_id, 2, self.originator_aet, originator_id)

    def _prepare_upcoming(self) -> None:
        upcoming, self._upcoming = self._upcoming, None
        if upcoming is None:
            return
        row, msg_id, originator_id = upcoming
        try:
            item = self.instance(row)
            message = (
                None
                if item.stored_path is None
                else self._message(item, item.stored_path, msg_id, 2, self.originator_aet, originator_id)
            )
        except Exception:  # noqa: BLE001 - made at its turn instead, where the failure is reported
            return
        if message is not None:
            self._ahead = (str(item.SOPInstanceUID), msg_id, message)

    def _take_ahead(self, uid: str, msg_id: int) -> framing.FramedStore | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead[0] == uid and ahead[1] == msg_id:
            return ahead[2]
        ahead[2].close()
        return None

    def _send_c_store(self, dataset, *args, **kwargs):
        if not isinstance(dataset, StoredInstance):
            return self._original(dataset, *args, **kwargs)
        uid = str(dataset.SOPInstanceUID)
        try:
            status = self._send_stored(dataset, *args, **kwargs)
        except Exception as err:
            self.failed[uid] = str(err)
            log.warning("retrieve of %s failed: %s", uid, err)
            raise  # pynetdicom counts the sub-operation as failed and lists the UID
        code = getattr(status, "Status", None)
        if code is not None and (code == 0 or code & 0xF000 == 0xB000):
            self.sent.append(uid)
        else:
            self.failed[uid] = "peer answered " + ("nothing" if code is None else f"0x{code:04X}")
        return status

    def _send_stored(self, item: StoredInstance, msg_id: int = 1, *args, **kwargs):
        ahead = self._take_ahead(str(item.SOPInstanceUID), msg_id)
        if ahead is not None:
            return framing.send_stored_file(self._assoc, ahead, self._prepare_upcoming)
        args = (msg_id, *args)
        path = item.stored_path
        if path is None or not path.is_file():  # moved by a migration since the rows were read?
            row = self.node.index.instance(str(item.SOPInstanceUID))
            if row is not None:
                item = self.instance(row)
                path = item.stored_path
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{item.SOPInstanceUID}: stored file is missing ({path})")
        try:
            return self._send_file(item, path, *args, **kwargs)
        except ValueError as err:  # no accepted presentation context for the stored syntax
            if not lossless_alternatives(item.stored_syntax):
                raise ValueError(
                    f"{item.SOPInstanceUID} is stored as {item.stored_syntax.name}, which the peer did "
                    f"not accept, and it has no lossless conversion here"
                ) from err
            # Decoded and re-encoded by pynetdicom into an uncompressed syntax the peer accepted.
            # pynetdicom waits for the response on its queue: the DUL thread must read it.
            inline.release(self._assoc)
            return self._original(dcmread(path), *args, **kwargs)

    def _send_file(
        self,
        item: StoredInstance,
        path: Path,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ):
        """The stored bytes as they are, by framing.send_stored_file; pynetdicom's own send_c_store(path)
        for a file with an unusual File Meta layout. ValueError when no context takes the syntax."""
        message = self._message(item, path, msg_id, priority, originator_aet, originator_id)
        if message is None:
            inline.release(self._assoc)  # pynetdicom's own send waits on its queue, filled by the DUL
            return self._original(path, msg_id, priority, originator_aet, originator_id)
        return framing.send_stored_file(self._assoc, message, self._prepare_upcoming)

    def _message(
        self,
        item: StoredInstance,
        path: Path,
        msg_id: int,
        priority: int,
        originator_aet: str | None,
        originator_id: int | None,
    ) -> framing.FramedStore | None:
        """The C-STORE-RQ for the stored bytes, first batch read; None for a file whose File Meta
        layout we do not read ourselves. ValueError when no context takes the stored syntax."""
        offset = dataset_offset(path)
        if offset is None:
            return None
        key = (str(item.SOPClassUID), str(item.stored_syntax))
        context_id = self._contexts.get(key)
        if context_id is None:
            context = self._assoc._get_valid_context(
                item.SOPClassUID, item.stored_syntax, "scu", allow_conversion=False
            )
            context_id = self._contexts[key] = context.context_id
        originator = (self.originator_aet or originator_aet) if originator_aet else None
        command = commands.c_store_request(
            msg_id, priority, key[0], str(item.SOPInstanceUID), originator, originator_id
        )
        return framing.FramedStore(context_id, command, path, offset, self._assoc.dimse.maximum_pdu_size)

    def touch(self) -> None:
        """Record the read in last_access (tiering keeps recently read studies on fast pools)."""
        if not self.sent:
            return
        now = time.time()
        try:
            with self.node.index.transaction() as conn:
                conn.executemany(
                    "UPDATE instances SET last_access = ? WHERE sop_uid = ?", [(now, uid) for uid in self.sent]
                )
        except sqlite3.Error as err:  # a missed last-access must not turn a good retrieve into a failure
            log.warning("cannot update last_access of %d instances: %s", len(self.sent), err)


def move_destination(node: NodeContext, title: str) -> dict | None:
    """The registered AE a C-MOVE may send to, or None (unknown, not a move destination, no address)."""
    aet = node.index.aet(title.strip())
    if aet is None or not aet["move_destination"] or not aet["host"] or not aet["port"]:
        return None
    return aet


def open_store_association(ae, node: NodeContext, aet: dict, rows: list, sender: StoredSender, timeout: float) -> tuple:
    """An association from `ae` to the registered destination `aet`, proposing what `rows` need
    (dicts or rows with sop_class_uid and transfer_syntax): (association, None) once established,
    else (association, why not) — rejected with the peer's reason, refused, or silent."""
    rejections: list = []  # A-ASSOCIATE-RJ as it arrives: pynetdicom may report it as an abort

    def on_pdu(event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu.to_primitive())

    host, port = aet["host"], aet["port"]
    tls_args = (client_context(node.config.tls), None) if aet.get("tls") else None
    assoc = ae.associate(
        host,
        port,
        ae_title=aet["ae_title"],
        contexts=store_contexts(rows),
        max_pdu=node.config.max_pdu,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, sender.on_store_connection), (evt.EVT_PDU_RECV, on_pdu)],
    )
    if assoc.is_established:
        return assoc, None
    return assoc, why_not(assoc, rejections, host, port, timeout)


def why_not(assoc, rejections: list, host: str, port: int, timeout: float) -> str:
    """Why no association: rejected (with the peer's reason), refused, or silent."""
    p = rejections[0] if rejections else (assoc.acceptor.primitive if assoc.is_rejected else None)
    if p is not None:
        return f"association rejected by {host}:{port} ({p.result_str}, {p.source_str}): {p.reason_str}"
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5)):
            pass
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection: nothing listens there (destination down or wrong port)"
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or err}"
    return f"{host}:{port} accepted TCP but did not accept the association (aborted or timed out)"


def install() -> None:
    """Set pynetdicom's _config.STORE_SEND_CHUNKED_DATASET."""
    # send_c_store(path) then sends the file's dataset bytes as stored, in chunks, never decoded or
    # re-encoded (pynetdicom's own mechanism). Only our retrieve code calls send_c_store with a path.
    _config.STORE_SEND_CHUNKED_DATASET = True
