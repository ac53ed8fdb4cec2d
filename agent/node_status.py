"""node.status: identity, version, uptime, counts, pools summary and whether the node is listening."""

from __future__ import annotations

import os
import socket
import time

import psutil

from storage import __version__
from storage.backups import catalog as catalog_backups
from storage.index import catalog
from storage.workers import running_node_pid

from .protocol import SCHEMA_VERSION, iso_time
from .registry import Method
from .schema import BOOL, INT, NUM, STR, TIME, Arr, Null, Obj

_PROBE_TTL = 1.0  # a console polling every second should not cost the node a connection per poll
# Past one SYN retransmit (1 s): a node whose accept backlog is momentarily full is slow, not down.
_PROBE_TIMEOUT = 2.0


def _probe_address(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)


def listening(ctx, host: str, port: int) -> bool:
    """Does anything accept TCP on the node's port? A bare connect, closed at once (no DICOM traffic)."""
    cached = ctx.cache.get("probe")
    now = time.monotonic()
    if cached and now - cached[0] < _PROBE_TTL:
        return cached[1]
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            up = True
    except OSError:
        up = False
    ctx.cache["probe"] = (now, up)
    return up


def node_process(ctx, node_dir) -> dict | None:
    """pid and start time of the node's supervisor, from the node lock it holds while it runs."""
    pid = running_node_pid(node_dir)
    if pid is None:
        return None
    known = ctx.cache.get("node_process")
    if known and known["pid"] == pid:
        return known
    try:
        found = {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.Error:  # gone since the lock was read, or in another PID namespace
        return {"pid": pid, "create_time": None}
    ctx.cache["node_process"] = found
    return found


def _pools(node) -> list[dict]:
    """Per pool: instances and bytes (index), disk total/free, and how full it is as the node judges it
    for placement and watermarks (`used_percent`: against its configured capacity, else its disk)."""
    placement = node.placement
    usage = placement.usage()
    out = []
    for pool in node.pools:
        instances, size = usage.get(pool.name, (0, 0))
        entry = {
            "name": pool.name,
            "tier": pool.tier,
            "path": str(pool.root),
            "instances": instances,
            "bytes": size,
            "disk_total_bytes": None,
            "disk_free_bytes": None,
            "used_percent": None,
        }
        try:
            space = placement.space(pool, usage)
            entry.update(
                disk_total_bytes=space.disk_total,
                disk_free_bytes=space.disk_free,
                used_percent=round(space.used_percent, 2),
            )
        except OSError as err:
            entry["error"] = f"{pool.root}: {err.strerror}"
        out.append(entry)
    return out


def status(ctx, params: dict) -> dict:
    node = ctx.require_node()
    cfg = node.config
    now = time.time()
    up = listening(ctx, _probe_address(cfg.bind), cfg.port)
    proc = node_process(ctx, cfg.node_dir)
    started = proc and proc["create_time"]
    counts = node.index.counts()
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "time": iso_time(now),
        "node": {
            "ae_title": cfg.ae_title,
            "port": cfg.port,
            "bind": cfg.bind,
            "config": str(cfg.path),
            "dir": str(cfg.node_dir),
            "open_mode": cfg.open_mode,
            "require_called_aet": cfg.require_called_aet,
        },
        "listening": up,
        "process": None
        if proc is None
        else {
            "pid": proc["pid"],
            "workers": cfg.worker_count(),
            "started_at": iso_time(started) if started else None,
            "uptime_s": round(now - started, 3) if started else None,
        },
        "agent": {"pid": os.getpid(), "uptime_s": round(now - ctx.started_at, 3)},
        "counts": {k: counts[k] for k in _COUNTS},
        "registered_aets": catalog.count_aets(node.index),
        "pools": _pools(node),
        "backups": _backups(cfg),
    }


def _backups(cfg) -> list[dict]:
    """Per target: the newest complete backup and the newest verification (from the targets themselves)."""
    out = []
    found = catalog_backups.all_backups(cfg)
    for target in cfg.backups:
        mine = [b for b in found if b.target == target.name and b.state == "complete"]
        newest = max(mine, key=lambda b: b.finished_at or 0, default=None)
        checked = [b.verification for b in mine if b.verification]
        verified = max(checked, key=lambda v: v.get("at") or 0, default=None)
        out.append(
            {
                "target": target.name,
                "type": target.kind,
                "last_success_at": iso_time(newest.finished_at) if newest is not None else None,
                "last_verified_at": iso_time(verified["at"]) if verified else None,
                "last_verified_ok": bool(verified["ok"]) if verified else None,
            }
        )
    return out


_COUNTS = ("patients", "studies", "series", "instances", "bytes")
_POOL = Obj(
    {
        "name": STR,
        "tier": STR,
        "path": STR,
        "instances": INT,
        "bytes": INT,
        "disk_total_bytes": Null(INT),
        "disk_free_bytes": Null(INT),
        "used_percent": Null(NUM),
    },
    {"error": STR},
)  # error: the pool's folder cannot be examined (then the disk figures are null)
RESULT = Obj(
    {
        "schema_version": INT,
        "version": STR,
        "time": TIME,
        "node": Obj(
            {
                "ae_title": STR,
                "port": INT,
                "bind": STR,
                "config": STR,
                "dir": STR,
                "open_mode": BOOL,
                "require_called_aet": BOOL,
            }
        ),
        "listening": BOOL,
        "process": Null(Obj({"pid": INT, "workers": INT, "started_at": Null(TIME), "uptime_s": Null(NUM)})),
        "agent": Obj({"pid": INT, "uptime_s": NUM}),
        "counts": Obj(dict.fromkeys(_COUNTS, INT)),
        "registered_aets": INT,
        "pools": Arr(_POOL),
        "backups": Arr(
            Obj(
                {
                    "target": STR,
                    "type": STR,
                    "last_success_at": Null(TIME),
                    "last_verified_at": Null(TIME),
                    "last_verified_ok": Null(BOOL),
                }
            )
        ),
    }
)

METHODS = (
    Method(
        "node.status", status, "Identity, version, uptime, counts, pools and listening state of the node", result=RESULT
    ),
)
