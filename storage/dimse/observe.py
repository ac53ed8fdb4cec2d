"""pynetdicom's DIMSE events turned into the node's metrics (storage/metrics.py): requests, bytes, store times."""

from __future__ import annotations

import time

from pynetdicom import evt

from storage import metrics

# DIMSE responses by command field; pending responses (0xFF00/0xFF01) of C-FIND/MOVE/GET are not requests.
_OPERATIONS = {0x8001: "C-STORE", 0x8030: "C-ECHO", 0x8020: "C-FIND", 0x8021: "C-MOVE", 0x8010: "C-GET"}
_PENDING = (0xFF00, 0xFF01)


def _on_dimse_recv(event) -> None:
    msg = event.message
    if type(msg).__name__ == "C_STORE_RQ":
        event.assoc._pacsdeck_store_started = time.perf_counter()
        data = msg.data_set
        if data is not None:
            metrics.store_received(data.getbuffer().nbytes if hasattr(data, "getbuffer") else len(data))


def _on_dimse_sent(event) -> None:
    cs = event.message.command_set
    operation = _OPERATIONS.get(int(getattr(cs, "CommandField", 0) or 0))
    if operation is None:
        return
    status = int(getattr(cs, "Status", 0xFFFF))
    if status in _PENDING:
        return
    metrics.response_sent(operation, status)
    if operation == "C-STORE":
        started = getattr(event.assoc, "_pacsdeck_store_started", None)
        if started is not None:
            metrics.store_answered(time.perf_counter() - started)


def scp_handlers() -> list:
    """pynetdicom event handlers for start_scp; none when metrics are off (no cost per message)."""
    if not metrics.enabled():
        return []
    return [(evt.EVT_DIMSE_RECV, _on_dimse_recv), (evt.EVT_DIMSE_SENT, _on_dimse_sent)]
