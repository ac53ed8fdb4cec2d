"""Prometheus metrics on loopback: DICOM counters from every worker, state read at scrape time, /healthz, /readyz.

Design (the node runs several forked worker processes sharing the DICOM port):
- counters and the histogram are incremented in whichever worker served the association;
  prometheus-client's multiprocess mode keeps each process's values in mmap'd files under
  `<node dir>/metrics/` (emptied at start, so a restart never adds stale values);
- state (instances, bytes and free space per pool, queue depth, last backup, build info) is not
  counted anywhere: the supervisor reads it from the index and the filesystem at each scrape, so
  it is never stale and no worker has to own it;
- the HTTP server runs in the supervisor (which serves no DICOM), bound to 127.0.0.1 only.
With `metrics_port: 0` (the default) nothing here is imported or registered and the hooks return at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig
    from .node import Node

log = logging.getLogger(__name__)

BIND = "127.0.0.1"  # metrics say a lot about a site; whoever scrapes them tunnels or runs a local agent
# Store durations: an fsync'd small instance takes a few ms, a large CT slice on a busy disk ~100 ms.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# DIMSE responses by command field; pending responses (0xFF00/0xFF01) of C-FIND/MOVE/GET are not requests.
_OPERATIONS = {0x8001: "C-STORE", 0x8030: "C-ECHO", 0x8020: "C-FIND", 0x8021: "C-MOVE", 0x8010: "C-GET"}
_PENDING = (0xFF00, 0xFF01)
_FINISHED_JOBS = ("done", "failed", "interrupted", "cancelled")


class _Metrics:
    """The metric objects; created once in the supervisor before the workers fork."""

    def __init__(self, prometheus_client):
        p = prometheus_client
        self.associations = p.Counter("pacsdeck_associations", "DICOM associations by final result",
                                      ["result"], registry=None)
        self.dimse = p.Counter("pacsdeck_dimse_requests", "DIMSE requests answered, by operation and final status",
                               ["operation", "status"], registry=None)
        self.store_seconds = p.Histogram("pacsdeck_store_duration_seconds",
                                         "C-STORE request received to response sent", buckets=STORE_BUCKETS,
                                         registry=None)
        self.received = p.Counter("pacsdeck_received_bytes", "Dataset bytes received in C-STORE requests",
                                  registry=None)
        self.rejected = p.Counter("pacsdeck_rejected", "Peer input refused by the listener's limits and checks",
                                  ["reason"], registry=None)


_metrics: _Metrics | None = None
_server: ThreadingHTTPServer | None = None


def setup(config: "NodeConfig") -> bool:
    """Before the workers fork: empty the multiprocess folder and create the metrics. False when off."""
    global _metrics
    if not config.metrics_port:
        return False
    folder = config.node_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    import prometheus_client
    from prometheus_client import values

    # The value class is chosen when prometheus_client is first imported; choose again in case
    # something imported it before the folder was set.
    values.ValueClass = values.get_value_class()
    _metrics = _Metrics(prometheus_client)
    return True


# --- hooks in the workers (each a dictionary lookup and an increment) ------------------------------


def association_closed(result: str) -> None:
    if _metrics is not None:
        _metrics.associations.labels(result).inc()


def rejected(reason: str) -> None:
    """A malformed, oversized, unexpected or late input was refused (storage/dimse/guard.py names the reasons)."""
    if _metrics is not None:
        _metrics.rejected.labels(reason).inc()


def _on_dimse_recv(event) -> None:
    msg = event.message
    if _metrics is not None and type(msg).__name__ == "C_STORE_RQ":
        event.assoc._pacsdeck_store_started = time.perf_counter()
        data = msg.data_set
        if data is not None:
            _metrics.received.inc(data.getbuffer().nbytes if hasattr(data, "getbuffer") else len(data))


def _on_dimse_sent(event) -> None:
    if _metrics is None:
        return
    cs = event.message.command_set
    operation = _OPERATIONS.get(int(getattr(cs, "CommandField", 0) or 0))
    if operation is None:
        return
    status = int(getattr(cs, "Status", 0xFFFF))
    if status in _PENDING:
        return
    _metrics.dimse.labels(operation, f"0x{status:04X}").inc()
    if operation == "C-STORE":
        started = getattr(event.assoc, "_pacsdeck_store_started", None)
        if started is not None:
            _metrics.store_seconds.observe(time.perf_counter() - started)


def response_sent(operation: str, status: int) -> None:
    """A final response written without pynetdicom's DIMSE layer (storage/dimse/suboperations.py)."""
    if _metrics is not None:
        _metrics.dimse.labels(operation, f"0x{status:04X}").inc()


def scp_handlers() -> list:
    """pynetdicom event handlers for start_scp; none when metrics are off (no cost per message)."""
    if _metrics is None:
        return []
    from pynetdicom import evt

    return [(evt.EVT_DIMSE_RECV, _on_dimse_recv), (evt.EVT_DIMSE_SENT, _on_dimse_sent)]


# --- the supervisor: state at scrape time, and the HTTP server ------------------------------------


class NodeCollector:
    """Pool, queue, backup and build figures read from the index and filesystem at each scrape."""

    def __init__(self, node: "Node"):
        self.node = node

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        import pydicom
        import pynetdicom

        info = InfoMetricFamily("pacsdeck_build", "Versions of pacsdeck and its DICOM stack")
        info.add_metric([], {"version": __version__, "python": sys.version.split()[0],
                             "pydicom": pydicom.__version__, "pynetdicom": pynetdicom.__version__})
        yield info
        labels = ["pool", "tier"]
        instances = GaugeMetricFamily("pacsdeck_pool_instances", "Instances indexed in the pool", labels=labels)
        stored = GaugeMetricFamily("pacsdeck_pool_bytes", "Bytes of the instances indexed in the pool", labels=labels)
        free = GaugeMetricFamily("pacsdeck_pool_free_bytes", "Bytes that still fit in the pool", labels=labels)
        room = GaugeMetricFamily("pacsdeck_pool_room_bytes", "Free bytes above the pool's reserve", labels=labels)
        placement = self.node.placement
        usage = placement.usage()
        for pool in self.node.pools:
            n, b = usage.get(pool.name, (0, 0))
            instances.add_metric([pool.name, pool.tier], n)
            stored.add_metric([pool.name, pool.tier], b)
            try:
                space = placement.space(pool, usage)
            except OSError:
                continue  # absent samples: the pool's folder cannot be examined
            free.add_metric([pool.name, pool.tier], space.free)
            room.add_metric([pool.name, pool.tier], space.room)
        yield from (instances, stored, free, room)
        conn = self.node.index.connection()
        marks = ",".join("?" * len(_FINISHED_JOBS))
        depth, oldest = conn.execute(f"SELECT count(*), min(created_at) FROM jobs WHERE state NOT IN ({marks})",
                                     _FINISHED_JOBS).fetchone()
        yield GaugeMetricFamily("pacsdeck_queue_depth", "Jobs not finished", value=depth)
        yield GaugeMetricFamily("pacsdeck_queue_oldest_age_seconds", "Age of the oldest unfinished job (0: none)",
                                value=time.time() - oldest if oldest else 0.0)
        last = conn.execute("SELECT max(updated_at) FROM jobs WHERE kind='backup' AND state='done'").fetchone()[0]
        yield GaugeMetricFamily("pacsdeck_backup_last_success_timestamp_seconds",
                                "Unix time of the last successful backup (0: none yet)", value=last or 0.0)


def readiness(node: "Node") -> dict:
    """/readyz: the SCP accepts TCP, the index takes a write lock, some pool has room above its reserve."""
    cfg = node.config
    checks = {}
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.bind, cfg.bind)
    try:
        with socket.create_connection((probe, cfg.port), timeout=2.0):
            checks["scp_listening"] = True
    except OSError:
        checks["scp_listening"] = False
    try:
        # A short-lived connection of our own: a write lock taken and given back, nothing written.
        conn = sqlite3.connect(cfg.index, timeout=2.0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            checks["index_writable"] = True
        finally:
            conn.close()
    except sqlite3.Error:
        checks["index_writable"] = False
    try:
        accepting, refused = node.placement.candidates(1)
        checks["pools_above_reserve"] = bool(accepting)
        if refused:
            checks["pools_refusing"] = refused
    except (OSError, sqlite3.Error):
        checks["pools_above_reserve"] = False
    checks["ready"] = all(checks[k] for k in ("scp_listening", "index_writable", "pools_above_reserve"))
    return checks


def serve(node: "Node") -> ThreadingHTTPServer | None:
    """Start /metrics, /healthz, /readyz on 127.0.0.1:metrics_port in this (the supervisor) process."""
    global _server
    if _metrics is None:
        return None
    from prometheus_client import CollectorRegistry, exposition, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(NodeCollector(node))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, code, ctype = exposition.generate_latest(registry), 200, exposition.CONTENT_TYPE_LATEST
                except Exception as err:  # noqa: BLE001 - a scrape must get an answer, not a hang
                    log.exception("metrics scrape failed")
                    body, code, ctype = f"scrape failed: {err}\n".encode(), 500, "text/plain"
            elif path == "/healthz":
                body, code, ctype = b"ok\n", 200, "text/plain"
            elif path == "/readyz":
                state = readiness(node)
                body = json.dumps(state, sort_keys=True).encode() + b"\n"
                code, ctype = (200 if state["ready"] else 503), "application/json"
            else:
                body, code, ctype = b"try /metrics, /healthz or /readyz\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # a scrape every 15 s is not news
            pass

    _server = ThreadingHTTPServer((BIND, node.config.metrics_port), Handler)
    _server.daemon_threads = True
    threading.Thread(target=_server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", BIND, node.config.metrics_port)
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
