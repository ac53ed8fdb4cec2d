"""/metrics, /healthz and /readyz on loopback in the supervisor: every worker's counters, state read at scrape time."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import TYPE_CHECKING

from . import __version__, metrics

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig
    from storage.index.database import Index
    from storage.pools.placement import Placement
    from storage.pools.pool import Pool

log = logging.getLogger(__name__)

BIND = "127.0.0.1"  # metrics say a lot about a site; whoever scrapes them tunnels or runs a local agent
_FINISHED_JOBS = ("done", "failed", "interrupted", "cancelled")
_server: ThreadingHTTPServer | None = None


class NodeCollector:
    """Pool, queue, backup and build figures read from the index and filesystem at each scrape."""

    def __init__(self, index: Index, pools: list[Pool], placement: Placement):
        self.index, self.pools, self.placement = index, pools, placement

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        info = InfoMetricFamily("pacsdeck_build", "Versions of pacsdeck and its DICOM stack")
        info.add_metric(
            [],
            {
                "version": __version__,
                "python": sys.version.split()[0],
                "pydicom": version("pydicom"),
                "pynetdicom": version("pynetdicom"),
            },
        )
        yield info
        labels = ["pool", "tier"]
        instances = GaugeMetricFamily("pacsdeck_pool_instances", "Instances indexed in the pool", labels=labels)
        stored = GaugeMetricFamily("pacsdeck_pool_bytes", "Bytes of the instances indexed in the pool", labels=labels)
        free = GaugeMetricFamily("pacsdeck_pool_free_bytes", "Bytes that still fit in the pool", labels=labels)
        room = GaugeMetricFamily("pacsdeck_pool_room_bytes", "Free bytes above the pool's reserve", labels=labels)
        placement = self.placement
        usage = placement.usage()
        for pool in self.pools:
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
        conn = self.index.connection()
        marks = ",".join("?" * len(_FINISHED_JOBS))
        depth, oldest = conn.execute(
            f"SELECT count(*), min(created_at) FROM jobs WHERE state NOT IN ({marks})", _FINISHED_JOBS
        ).fetchone()
        yield GaugeMetricFamily("pacsdeck_queue_depth", "Jobs not finished", value=depth)
        yield GaugeMetricFamily(
            "pacsdeck_queue_oldest_age_seconds",
            "Age of the oldest unfinished job (0: none)",
            value=time.time() - oldest if oldest else 0.0,
        )
        last = conn.execute("SELECT max(updated_at) FROM jobs WHERE kind='backup' AND state='done'").fetchone()[0]
        yield GaugeMetricFamily(
            "pacsdeck_backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup (0: none yet)",
            value=last or 0.0,
        )


def readiness(cfg: NodeConfig, placement: Placement) -> dict:
    """/readyz: the SCP accepts TCP, the index takes a write lock, some pool has room above its reserve."""
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
        accepting, refused = placement.candidates(1)
        checks["pools_above_reserve"] = bool(accepting)
        if refused:
            checks["pools_refusing"] = refused
    except (OSError, sqlite3.Error):
        checks["pools_above_reserve"] = False
    checks["ready"] = all(checks[k] for k in ("scp_listening", "index_writable", "pools_above_reserve"))
    return checks


def serve(config: NodeConfig, index: Index, pools: list[Pool], placement: Placement) -> ThreadingHTTPServer | None:
    """Start /metrics, /healthz, /readyz on 127.0.0.1:metrics_port in this (the supervisor) process."""
    global _server
    if not metrics.enabled():
        return None
    from prometheus_client import CollectorRegistry, exposition, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(NodeCollector(index, pools, placement))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, code, ctype = exposition.generate_latest(registry), 200, exposition.CONTENT_TYPE_LATEST
                except Exception as err:  # a scrape must get an answer, not a hang
                    log.exception("metrics scrape failed")
                    body, code, ctype = f"scrape failed: {err}\n".encode(), 500, "text/plain"
            elif path == "/healthz":
                body, code, ctype = b"ok\n", 200, "text/plain"
            elif path == "/readyz":
                state = readiness(config, placement)
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

    _server = ThreadingHTTPServer((BIND, config.metrics_port), Handler)
    _server.daemon_threads = True
    threading.Thread(target=_server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", BIND, config.metrics_port)
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
