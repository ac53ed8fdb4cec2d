"""health.check: machine and PACS checks with thresholds, one overall status (what `node check` exits with)."""

from __future__ import annotations

import logging
import time

from storage.config.health import health_config

from . import health_host as host
from . import health_node as pacs
from .health_host import CRIT, OK, UNKNOWN, WARN, check
from .protocol import SCHEMA_VERSION, iso_time
from .registry import Method
from .schema import ANY, INT, NUM, STR, TIME, Arr, Enum, Map, Null, Obj

log = logging.getLogger(__name__)

STATUSES = (OK, WARN, CRIT, UNKNOWN)
# Nagios plugin exit codes. A check that cannot say anything on this hardware (no sensors, no
# smartmontools) is listed as unknown but does not make the whole node unknown: exit 3 means the
# health of the node itself could not be evaluated (broken config, agent error).
NAGIOS_EXIT = {OK: 0, WARN: 1, CRIT: 2, UNKNOWN: 3}


def _guarded(name: str, func, *args) -> list[dict]:
    """One failing probe becomes one unknown check instead of failing health.check as a whole."""
    try:
        result = func(*args)
    except Exception as err:  # reported in the result, with the cause logged
        log.exception("health check %s failed", name)
        return [check(name, UNKNOWN, None, None, None, f"the {name} check itself failed: {err}")]
    return result if isinstance(result, list) else [result]


def run_checks(ctx, node) -> list[dict]:
    hc = health_config(node.config)
    io_first = host.io_sample()  # the disk I/O rate spans the rest of the run when there is no earlier sample
    checks: list[dict] = []
    checks += _guarded("cpu_load", host.load, hc)
    checks += _guarded("memory", host.memory, hc)
    checks += _guarded("node_process", pacs.node_process, ctx, node, hc)
    for pool in node.pools:
        checks += _guarded(f"pool:{pool.name}:filesystem", pacs.pool_filesystem, node, pool, hc)
        checks += _guarded(f"pool:{pool.name}:fsync", pacs.pool_fsync, pool, hc)
    checks += _guarded("pool_forecast", pacs.pool_forecasts, ctx, node, hc)
    checks += _guarded("index_integrity", pacs.index_integrity, ctx, node)
    checks += _guarded("backup_age", pacs.backup_age, node, hc)
    checks += _guarded("queue_backlog", pacs.queue_backlog, node, hc)
    checks += _guarded("clock", host.clock, hc)
    checks += _guarded("sensors", host.sensors)
    checks += _guarded("smart", host.smart, ctx)
    checks += _guarded("disk_io", host.disk_io, ctx, io_first)
    return checks


def overall(checks: list[dict]) -> str:
    """The worst of ok/warn/crit; unknown checks are counted in the summary, not here (see NAGIOS_EXIT)."""
    statuses = {c["status"] for c in checks}
    return CRIT if CRIT in statuses else WARN if WARN in statuses else OK


def summary(checks: list[dict], status: str) -> str:
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}
    bad = [c for c in checks if c["status"] in (CRIT, WARN)]
    bad.sort(key=lambda c: c["status"] != CRIT)
    head = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    if not bad:
        return head
    return f"{head}: " + "; ".join(f"{c['name']}: {c['message']}" for c in bad[:3])


def health_check(ctx, params: dict) -> dict:
    node = ctx.require_node()
    started = time.perf_counter()
    checks = run_checks(ctx, node)
    status = overall(checks)
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso_time(time.time()),
        "ae_title": node.config.ae_title,
        "status": status,
        "summary": summary(checks, status),
        "counts": {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES},
        "duration_s": round(time.perf_counter() - started, 4),
        "checks": checks,
    }


# One check as health_host.check() builds it; `detail` holds figures that differ per check.
_VALUE = {"type": ["number", "string", "boolean", "null"]}
CHECK = Obj(
    {
        "name": STR,
        "status": Enum(*STATUSES),
        "value": _VALUE,
        "unit": Null(STR),
        "threshold": Null(STR),
        "message": STR,
    },
    {"detail": Map(ANY)},
)
RESULT = Obj(
    {
        "schema_version": INT,
        "time": TIME,
        "ae_title": STR,
        "status": Enum(OK, WARN, CRIT),
        "summary": STR,
        "counts": Obj(dict.fromkeys(STATUSES, INT)),
        "duration_s": NUM,
        "checks": Arr(CHECK),
    }
)

METHODS = (
    Method(
        "health.check",
        health_check,
        "Machine and PACS health: each check with status, value, unit, "
        "threshold and what to do; thresholds from node.yaml `health:`",
        result=RESULT,
    ),
)
