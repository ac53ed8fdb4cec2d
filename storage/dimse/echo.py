"""C-ECHO to a peer with a diagnosis a person can act on when it fails; and a plain C-STORE sender."""

from __future__ import annotations

import errno
import logging
import socket
import time

from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification

from . import install

log = logging.getLogger(__name__)

# Diagnosis kinds, in the order the checks run: each names the layer that failed.
DNS, REFUSED, UNREACHABLE, TIMEOUT, REJECTED, ABORTED, FAILED = (
    "dns",
    "refused",
    "unreachable",
    "timeout",
    "rejected",
    "aborted",
    "failed",
)

_HINTS = {
    (1, 3): "register our AE title {calling} (and this host) at the peer",
    (1, 7): "the peer does not answer to {called}; check the AE title it expects",
    (2, 2): "the peer does not speak this DICOM protocol version",
    (3, 1): "the peer is busy; try again later",
    (3, 2): "the peer has reached its association limit; try again later",
}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def echo(calling: str, called: str, host: str, port: int, timeout: float = 5.0, tls=None) -> dict:
    """Resolve, connect, associate, C-ECHO, release; stop at the first layer that fails and say which."""
    install()  # the agent's aets.echo and diagnose.run speak DICOM through the same door as the node
    started = time.perf_counter()
    out = {
        "ok": False,
        "calling_ae": calling,
        "called_ae": called,
        "host": host,
        "port": port,
        "address": None,
        "status": None,
        "rtt_ms": None,
        "total_ms": None,
        "diagnosis": None,
    }

    def fail(kind: str, message: str, **detail) -> dict:
        out["total_ms"] = _ms(time.perf_counter() - started)
        out["diagnosis"] = {"kind": kind, "message": message, **detail}
        return out

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return fail(DNS, f"{host} does not resolve ({err.strerror}); check the host name or use its IP address")
    address = infos[0][4][0]
    out["address"] = address

    # pynetdicom only logs a failed connect; our own connect first tells refused from unreachable
    # from silent. The peer sees one extra connection that closes without a PDU.
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return fail(
            REFUSED,
            f"{host}:{port} refused the connection: nothing listens there "
            "(wrong port, or the peer's DICOM service is down)",
        )
    except TimeoutError:
        return fail(TIMEOUT, f"no TCP answer from {host}:{port} within {timeout:g} s (firewall, or host down)")
    except OSError as err:
        if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return fail(UNREACHABLE, f"no route to {host} ({err.strerror})")
        return fail(REFUSED, f"cannot connect to {host}:{port}: {err.strerror}")

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    rejections = []  # A-ASSOCIATE-RJ PDUs as they arrive (see the is_rejected check below)

    def on_pdu(event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu.to_primitive())

    assoc_started = time.perf_counter()
    assoc = ae.associate(
        address,
        port,
        ae_title=called,
        evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)],
        tls_args=(tls, None) if tls is not None else None,
    )
    try:
        if assoc.is_established:
            sent = time.perf_counter()
            rsp = assoc.send_c_echo()
            out["rtt_ms"] = _ms(time.perf_counter() - sent)
            if "Status" not in rsp:
                if assoc.is_aborted:
                    return fail(ABORTED, f"{called} aborted the association instead of answering the C-ECHO")
                return fail(TIMEOUT, f"no C-ECHO response from {called} within {timeout:g} s")
            out["status"] = int(rsp.Status)
            if rsp.Status != 0x0000:
                return fail(FAILED, f"C-ECHO answered with status 0x{int(rsp.Status):04X}")
            out["ok"] = True
            out["total_ms"] = _ms(time.perf_counter() - started)
            return out
        if assoc.is_rejected or rejections:
            # pynetdicom 3.0.4 reports some rejections as aborts: when the peer closes the connection
            # right after its A-ASSOCIATE-RJ, the ACSE can see the closed socket first. The PDU is proof.
            return _rejected(fail, rejections[0] if rejections else assoc.acceptor.primitive, calling, called)
        primitive = assoc.acceptor.primitive
        if primitive is not None and primitive.result == 0x00:
            return fail(
                REJECTED,
                f"{called} accepted the association but not the Verification SOP Class",
                reason="Verification presentation context rejected",
            )
        if time.perf_counter() - assoc_started >= timeout * 0.9:
            return fail(
                TIMEOUT,
                f"{host}:{port} accepted TCP but did not answer the association request "
                f"within {timeout:g} s (is it a DICOM port?)",
            )
        return fail(
            ABORTED, f"{host}:{port} dropped the association request (not DICOM, TLS expected, or the peer aborted)"
        )
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _rejected(fail, primitive, calling: str, called: str) -> dict:
    result, source, diagnostic = primitive.result, primitive.result_source, primitive.diagnostic
    reason = primitive.reason_str
    hint = _HINTS.get((source, diagnostic), "").format(calling=calling, called=called)
    message = f"association rejected ({primitive.result_str}, {primitive.source_str}): {reason}"
    return fail(
        REJECTED,
        f"{message}; {hint}" if hint else message,
        result=result,
        source=source,
        diagnostic=diagnostic,
        reason=reason,
    )


def send_datasets(calling: str, called: str, host: str, port: int, datasets, contexts, timeout: float = 30.0) -> int:
    """C-STORE each dataset on one association, as a modality would; the number answered 0x0000.

    `contexts`: (SOP Class UID, transfer syntax) pairs to propose. What `pacsdeck up` sends its demo
    studies with."""
    install()
    ae = AE(ae_title=calling)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return 0
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            stored += bool(status and status.Status == 0)
    finally:
        assoc.release()
        ae.shutdown()
    return stored
