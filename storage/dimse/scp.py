"""The DICOM SCP: a pynetdicom AE whose event handlers translate requests into Node calls."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationServer

from storage import status
from storage.config.limits import LimitsConfig
from storage.config.tls import server_context
from storage.pools.ingest import NotStorable

from . import guard, observe, qr_scp, reactors, tls
from .part10 import file_meta

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger(__name__)


# Never matches a real calling AE title: with no AE registered and open mode off, nobody gets in.
_NOBODY = "\x00"


class NodeAE(AE):
    """An AE whose accepted calling AE titles come from the index at each association request,
    so AEs added or removed through the agent apply without a restart."""

    def __init__(self, node: NodeContext):
        self._node = node
        super().__init__(ae_title=node.config.ae_title)

    @property
    def require_calling_aet(self) -> list[str]:
        if self._node.config.open_mode:
            return []
        return self._node.registered_titles() or [_NOBODY]

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # pynetdicom's __init__ assigns []
        pass


class NodeServer(AssociationServer):
    # Not pynetdicom's ThreadedAssociationServer: that starts a thread per connection only to build
    # the Association, which starts its own threads anyway; building it here, in the accept loop,
    # takes ~0.5 ms and saves a thread start (~0.3 ms) before every association's first PDU.
    # Worker processes accept on one listening socket the supervisor bound before forking, so a
    # second node configured on the same port fails to bind instead of silently sharing it.
    listening_socket: socket.socket | None = None
    # socketserver's default listen backlog of 5 drops SYNs when modalities connect in a burst;
    # each dropped one costs the sender a 1 s retransmission.
    request_queue_size = 128

    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket.

    Without it, small DIMSE responses wait for Nagle's algorithm and a peer that also leaves
    Nagle on (DCMTK 3.6.7 does) crawls at ~20 instances/s.
    """

    tls_context = None  # ssl.SSLContext when node.yaml has `tls:`

    def get_request(self):
        # With workers every process is woken for a new connection; the losers' accept() raises
        # BlockingIOError (the shared socket is non-blocking), which socketserver ignores.
        sock, address = super().get_request()
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:  # the handshake runs later, in the connection's own thread
            sock = tls.wrap_accepted(self.tls_context, sock)
        return sock, address

    def server_bind(self) -> None:
        if self.listening_socket is None:
            super().server_bind()
            return
        self.socket.close()  # the fresh socket socketserver made: we use the inherited one
        self.socket = self.listening_socket
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.listening_socket is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.listening_socket is None:
            super().server_close()  # an inherited socket stays open for the other workers

    def shutdown(self) -> None:
        # pynetdicom's shutdown also unregisters from ae._servers, where only start_server() puts a
        # server; we build ours with make_server() to choose the class.
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        self.ae.gate.close_all()


def handle_echo(event, node: NodeContext) -> int:
    return status.SUCCESS


def handle_store(event, node: NodeContext):
    req = event.request
    calling = event.assoc.requestor.ae_title.strip()
    rec = node.associations.record(event.assoc)
    stream = req.DataSet  # the dataset as received, in pynetdicom's buffer: parsed and copied once, later
    if rec is not None:
        rec.bytes += stream.getbuffer().nbytes
    try:
        if not node.associations.may(event.assoc, calling, "store"):
            raise NotStorable(status.NOT_AUTHORIZED, f"{calling} may not store here")
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            header = file_meta(str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID), transfer_syntax, calling)
        except (UnicodeEncodeError, TypeError) as err:  # a command UID that is not even ASCII
            raise NotStorable(status.CANNOT_UNDERSTAND, f"bad command: {err}") from err
        node.ingestor.store(
            header,
            stream,
            sop_class_uid=req.AffectedSOPClassUID,
            sop_instance_uid=req.AffectedSOPInstanceUID,
            transfer_syntax=transfer_syntax,
            calling_ae=calling,
        )
    except NotStorable as err:
        log.warning("C-STORE from %s refused 0x%04X: %s", calling, err.status, err.reason)
        if rec is not None:
            rec.failures += 1
        rsp = Dataset()
        rsp.Status = err.status
        rsp.ErrorComment = err.reason[:64]
        return rsp
    except Exception:  # never let a bug kill the association; nothing was acknowledged
        log.exception("C-STORE from %s failed", calling)
        if rec is not None:
            rec.failures += 1
        return status.OUT_OF_RESOURCES
    if rec is not None:
        rec.instances += 1
    return status.SUCCESS


def on_connection_open(event, node: NodeContext) -> None:
    """Count the new connection as waiting for its A-ASSOCIATE-RQ (the oldest such may be closed)."""
    event.assoc.ae.gate.opened(event.assoc, event.address[0])


def on_connection_closed(event) -> None:
    event.assoc.ae.gate.closed(event.assoc)


def handle_requested(event, node: NodeContext) -> None:
    """Admit the association or answer A-ASSOCIATE-RJ "local limit exceeded" (transient), counted
    and logged with the limit that was reached."""
    assoc = event.assoc
    calling = (getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
    host = assoc.requestor.address
    why = assoc.ae.gate.admit(assoc, calling, host)
    if why is None:
        return
    guard.rejected("association-limit", f"{calling}@{host}", why)
    rec = node.associations.record(assoc)
    if rec is not None:
        rec.result, rec.reason = "rejected", f"local limit exceeded: {why}"
    assoc.acse.send_reject(0x02, 0x03, 0x02)
    assoc.kill()


def build_ae(node: NodeContext) -> NodeAE:
    cfg = node.config
    limits = cfg.limits or LimitsConfig()
    ae = NodeAE(node)
    ae.limits = limits
    ae.gate = guard.Gate(limits, cfg.max_associations)
    ae.maximum_pdu_size = cfg.max_pdu
    # pynetdicom counts every live acceptor thread: half-open connections, and threads still ending
    # after their connection closed. The Gate is the real limit (associations apart from connections
    # still negotiating); pynetdicom's must never bite first (with it at max_associations +
    # max_pending, bench/listener.py saw 9 echoes in 10 refused while idle connections churned).
    ae.maximum_associations = 1_000_000
    ae.acse_timeout = limits.request_timeout  # also the ARTIM timer: how long a rejected peer may linger
    ae.network_timeout = limits.idle_timeout
    ae.require_called_aet = cfg.require_called_aet
    ae.add_supported_context(Verification)
    for sop_class in qr_scp.FIND_CONTEXTS + qr_scp.RETRIEVE_CONTEXTS:
        ae.add_supported_context(sop_class)
    return ae


class PortInUse(OSError):
    """The DICOM port is taken (another node or program listens there)."""


def _port_in_use(node: NodeContext, err: OSError) -> PortInUse:
    return PortInUse(
        err.errno,
        f"cannot listen on {node.config.bind}:{node.config.port}: {err.strerror} "
        f"(another node or program uses that port; change `port` in {node.config.path})",
    )


def listen(node: NodeContext) -> socket.socket:
    """The supervisor's listening socket, bound once and shared by the forked workers."""
    try:
        sock = socket.create_server((node.config.bind, node.config.port), backlog=NodeServer.request_queue_size)
    except OSError as err:
        raise _port_in_use(node, err) from None
    sock.setblocking(False)
    return sock


def start_scp(node: NodeContext, listening: socket.socket | None = None) -> NodeServer:
    ae = build_ae(node)
    server_class = (
        NodeServer if listening is None else type("WorkerNodeServer", (NodeServer,), {"listening_socket": listening})
    )
    log_ = node.associations
    handlers = [
        (evt.EVT_CONN_OPEN, reactors.on_connection_open),
        (evt.EVT_CONN_OPEN, on_connection_open, [node]),
        (evt.EVT_C_ECHO, handle_echo, [node]),
        (evt.EVT_C_STORE, handle_store, [node]),
        (evt.EVT_C_FIND, qr_scp.handle_find, [node]),
        (evt.EVT_C_MOVE, qr_scp.handle_move, [node]),
        (evt.EVT_C_GET, qr_scp.handle_get, [node]),
        (evt.EVT_REQUESTED, log_.on_requested),
        (evt.EVT_REQUESTED, handle_requested, [node]),
        (evt.EVT_ACCEPTED, log_.on_accepted),
        (evt.EVT_REJECTED, log_.on_rejected),
        (evt.EVT_PDU_RECV, log_.on_pdu_received),
        (evt.EVT_RELEASED, log_.on_released),
        (evt.EVT_ABORTED, log_.on_aborted),
        (evt.EVT_CONN_CLOSE, log_.on_closed),
        (evt.EVT_CONN_CLOSE, on_connection_closed),
        *observe.scp_handlers(),  # empty unless node.yaml sets metrics_port
    ]
    try:
        server = ae.make_server((node.config.bind, node.config.port), evt_handlers=handlers, server_class=server_class)
    except OSError as err:
        raise _port_in_use(node, err) from None
    if node.config.tls is not None and node.config.tls.listen:
        server.tls_context = server_context(node.config.tls)
    thread = threading.Thread(target=server.serve_forever, name="scp-accept", daemon=True)
    thread.start()
    return server


def install() -> None:
    """Set pynetdicom's _config.UNRESTRICTED_STORAGE_SERVICE."""
    # Storage contexts (every public storage SOP class, private and unknown ones too) are accepted with
    # the sender's first proposed transfer syntax, so each instance is kept exactly as the modality
    # encoded it. pynetdicom's own negotiation would pick by our list's order and make DCMTK transcode.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
