"""One poll of a node (status, reason, use, rates, queue), the events between two polls, the fleet's exit code."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

from agent.protocol import FORBIDDEN, METHOD_NOT_FOUND, NOT_FOUND, RPCError, decode

from .aet_edits import UNREGISTERED
from .inventory import Fleet, NodeEntry
from .results import Association, Check, Job, NodeStatus, QueueList, StatusPool, failure, read
from .transport.base import Transport, TransportError
from .transport.ssh import HostKeyChanged, HostKeyUnknown

UP, DEGRADED, DOWN, UNREACHABLE, UNTRUSTED = "up", "degraded", "down", "unreachable", "untrusted"
STATUSES = (UP, DEGRADED, DOWN, UNREACHABLE, UNTRUSTED)
# health.check's words, and how the table spells them.
_CHECK_WORDS = {"crit": "critical", "warn": "warning"}
_CHECK_RANK = {"ok": 0, "unknown": 0, "warn": 1, "crit": 2}
INFO, WARNING, CRITICAL = "info", "warning", "critical"


@dataclass
class NodeSnapshot:
    name: str
    site: str
    tags: tuple[str, ...]
    status: str
    reason: str | None
    polled_at: float
    latency_ms: float | None = None
    version: str | None = None
    ae_title: str | None = None
    port: int | None = None
    primary_used_pct: float | None = None
    archive_used_pct: float | None = None
    disk_free_bytes: int | None = None
    instances: int | None = None
    ingest_rate: float | None = None
    queue_pending: int | None = None
    queue_failed: int | None = None
    oldest_pending_age_s: float | None = None
    backup_age_s: float | None = None
    worst_check: str | None = None
    checks: list[Check] = field(default_factory=list)
    pools: list[StatusPool] = field(default_factory=list)
    raw: dict = field(default_factory=dict)  # method -> the agent's answer as it came
    # The typed results behind the figures (console.results), decoded once.
    node_status: NodeStatus | None = None
    queue: QueueList | None = None
    # The node's latest rejected associations (newest first): each new one is an event the console can fix.
    refusals: tuple[Association, ...] = ()

    def __post_init__(self) -> None:
        # A snapshot made by hand (snapshot tests, demos) may carry the agent's answers as JSON: read them here.
        self.checks = [decode(Check, c, "health.check") if isinstance(c, dict) else c for c in self.checks]
        self.pools = [decode(StatusPool, p, "node.status") if isinstance(p, dict) else p for p in self.pools]
        if self.node_status is None and "node.status" in self.raw:
            self.node_status = read("node.status", self.raw["node.status"])
        if self.queue is None and "queue.list" in self.raw:
            self.queue = read("queue.list", self.raw["queue.list"])

    def to_json(self, raw: bool = False) -> dict:
        """The row as JSON-ready data (`fleet status --json`); `raw` adds the agent's answers."""
        data = asdict(self)
        data["tags"] = list(self.tags)
        del data["node_status"], data["queue"], data["refusals"]
        if not raw:
            del data["raw"]
        return data


@dataclass
class Event:
    at: float
    node: str
    severity: str
    text: str
    association: Association | None = None  # a refused association this event is about (the fix acts on it)


def _base(entry: NodeEntry, status: str, reason: str | None, at: float) -> NodeSnapshot:
    return NodeSnapshot(name=entry.name, site=entry.site, tags=entry.tags, status=status, reason=reason, polled_at=at)


def poll(
    entry: NodeEntry, transport: Transport, previous: NodeSnapshot | None = None, *, refusals: bool = False
) -> NodeSnapshot:
    """Ask one node node.status, health.check and queue.list (and, for the console's events, its latest
    refusals). Never raises: a failure is a status and a reason."""
    at = time.time()
    try:
        return _poll(entry, transport, previous, at, refusals)
    except (HostKeyUnknown, HostKeyChanged) as err:
        return _base(entry, UNTRUSTED, err.reason, at)
    except TransportError as err:
        return _base(entry, UNREACHABLE, err.reason, at)
    except Exception as err:  # noqa: BLE001 - a row with the reason, never a crash of the whole view
        return _base(entry, UNREACHABLE, f"unexpected {type(err).__name__}: {err}", at)


def _poll(
    entry: NodeEntry, transport: Transport, previous: NodeSnapshot | None, at: float, refusals: bool
) -> NodeSnapshot:
    started = time.perf_counter()
    try:
        answer = transport.call("node.status")
        status = read("node.status", answer)
    except RPCError as err:
        # The agent answers but has no usable node (config missing, index unreadable), or it answers in a
        # shape this console cannot read (a ProtocolError naming the field).
        snap = _base(entry, DOWN, err.message, at)
        snap.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return snap
    snap = _base(entry, UP, None, at)
    snap.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    snap.raw["node.status"] = answer
    _from_status(snap, status)

    health_error = None
    try:
        answer = transport.call("health.check")
        snap.raw["health.check"] = answer
        snap.checks = list(read("health.check", answer).checks)
    except RPCError as err:
        health_error = failure("health.check", err)
    _from_checks(snap)

    try:
        answer = transport.call("queue.list", {"limit": 50})
        snap.raw["queue.list"] = answer
        snap.queue = read("queue.list", answer)
        snap.queue_pending = snap.queue.count("pending")
        snap.queue_failed = snap.queue.count("failed")
        snap.oldest_pending_age_s = snap.queue.oldest_pending_age_s
    except RPCError as err:
        # Method not found: this node has no queue yet. Forbidden: this login may not see it. Either way the
        # queue columns stay empty; neither says anything about the node's health.
        no_queue = err.code == METHOD_NOT_FOUND or (err.kind == NOT_FOUND and "unknown method" in err.message)
        if not no_queue and err.kind != FORBIDDEN:
            health_error = health_error or failure("queue.list", err)

    if refusals:
        try:
            answer = transport.call("associations.recent", {"result": "rejected", "limit": 20})
            snap.refusals = read("associations.recent", answer).associations
        except RPCError:
            pass  # an older agent, or a login that may not see the log: no refusal events, nothing about health

    if previous is not None and previous.instances is not None and snap.instances is not None:
        elapsed = snap.polled_at - previous.polled_at
        if elapsed > 0:
            snap.ingest_rate = round(max(0, snap.instances - previous.instances) / elapsed, 2)

    snap.status, snap.reason = _judge(status, snap, health_error)
    return snap


def _from_status(snap: NodeSnapshot, status: NodeStatus) -> None:
    snap.node_status = status
    snap.version = status.version
    snap.ae_title = status.node.ae_title
    snap.port = status.node.port
    snap.instances = status.counts.instances
    snap.pools = list(status.pools)
    tiers: list[str | None] = []
    for pool in snap.pools:
        if pool.tier not in tiers:
            tiers.append(pool.tier)
    if snap.pools:
        snap.primary_used_pct = _used_pct([p for p in snap.pools if p.tier == tiers[0]])
        if len(tiers) > 1:
            snap.archive_used_pct = _used_pct([p for p in snap.pools if p.tier == tiers[-1]])
        free = [p.disk_free_bytes for p in snap.pools if p.tier == tiers[0] and p.disk_free_bytes is not None]
        snap.disk_free_bytes = min(free) if free else None


def _used_pct(pools: list[StatusPool]) -> float | None:
    """How full the fullest of these pools is, in percent, as the node judges it (against a pool's
    configured capacity, the figure its watermarks use); from the disk for an agent that does not say."""
    worst = None
    for p in pools:
        pct = p.used_percent
        total, free = p.disk_total_bytes, p.disk_free_bytes
        if pct is None and total is not None and free is not None and total > 0:
            pct = 100.0 * (total - free) / total
        if pct is not None:
            worst = round(pct, 1) if worst is None else max(worst, round(pct, 1))
    return worst


def _from_checks(snap: NodeSnapshot) -> None:
    worst = _worst(snap.checks)
    for c in snap.checks:
        if c.name == "backup_age" and c.status != "unknown" and isinstance(c.value, (int, float)):
            snap.backup_age_s = round(float(c.value) * 3600, 1)
    if worst is not None:
        snap.worst_check = f"{worst.name}: {_CHECK_WORDS[worst.status]}"


def _worst(checks: list[Check]) -> Check | None:
    bad = [c for c in checks if _CHECK_RANK.get(c.status, 0)]
    return max(bad, key=lambda c: _CHECK_RANK[c.status]) if bad else None


def _judge(status: NodeStatus, snap: NodeSnapshot, health_error: str | None) -> tuple[str, str | None]:
    if not status.listening:
        if status.process is None:
            return DOWN, f"node not running: nothing listens on port {snap.port}"
        return DOWN, f"node process {status.process.pid} runs but port {snap.port} is not listening"
    worst = _worst(snap.checks)
    if worst is not None:
        return DEGRADED, f"{worst.name}: {worst.message}"
    if snap.queue_failed:
        return DEGRADED, f"{snap.queue_failed} failed queue job{'s' if snap.queue_failed != 1 else ''}"
    if health_error:
        return DEGRADED, health_error
    return UP, None


# --- events ---------------------------------------------------------------------------------------

_STATUS_SEVERITY = {UP: INFO, DEGRADED: WARNING, DOWN: CRITICAL, UNREACHABLE: CRITICAL, UNTRUSTED: CRITICAL}
_STATUS_TEXT = {
    UP: "is up",
    DEGRADED: "is degraded",
    DOWN: "is down",
    UNREACHABLE: "is unreachable",
    UNTRUSTED: "is refused (host key)",
}


def events(previous: NodeSnapshot | None, current: NodeSnapshot) -> list[Event]:
    """What changed worth telling an operator: status changes, checks that got worse (a pool crossing its
    watermark is its filesystem check turning warn/crit), new failed queue jobs, failed backups."""
    at, node = current.polled_at, current.name
    out: list[Event] = []

    def add(severity: str, text: str) -> None:
        out.append(Event(at=at, node=node, severity=severity, text=text))

    if previous is None:
        if current.status != UP:
            add(_STATUS_SEVERITY[current.status], f"{node} {_STATUS_TEXT[current.status]}: {current.reason}")
        return out
    if previous.status != current.status:
        text = f"{node} {_STATUS_TEXT[current.status]}"
        if current.status == UP:
            text += f" again (was {previous.status})"
        elif current.reason:
            text += f": {current.reason}"
        add(_STATUS_SEVERITY[current.status], text)
    if current.status in (DOWN, UNREACHABLE, UNTRUSTED):
        return out  # no checks to compare; the status event says it all

    before = {c.name: c.status for c in previous.checks}
    for c in current.checks:
        name, now = c.name, c.status
        was = before.get(name, "ok")
        if _CHECK_RANK.get(now, 0) > _CHECK_RANK.get(was, 0):
            what = "crossed its watermark" if _is_pool_space(name) else "got worse"
            add(CRITICAL if now == "crit" else WARNING, f"{name} {what} ({_CHECK_WORDS[now]}): {c.message}")
        elif _CHECK_RANK.get(now, 0) < _CHECK_RANK.get(was, 0) and name in before:
            add(INFO, f"{name} is {'ok' if not _CHECK_RANK.get(now, 0) else _CHECK_WORDS[now]} again")

    if (
        current.queue_failed is not None
        and previous.queue_failed is not None
        and current.queue_failed > previous.queue_failed
    ):
        n = current.queue_failed - previous.queue_failed
        add(WARNING, f"{n} more failed queue job{'s' if n != 1 else ''} ({current.queue_failed} failed)")

    out += _refusal_events(previous, current)

    seen = {j.id for j in _jobs(previous) if j.state == "failed"}
    for job in _jobs(current):
        if job.kind == "backup" and job.state == "failed" and job.id not in seen:
            add(CRITICAL, f"backup failed: {job.last_error or 'no error recorded'}")
    return out


def _refusal_events(previous: NodeSnapshot, current: NodeSnapshot) -> list[Event]:
    """One warning per association refused since the previous poll: "CT9 was refused by site-b: not registered"."""
    before = max((a.id for a in previous.refusals if a.id is not None), default=0)
    out = []
    for a in reversed(current.refusals):  # oldest first, as the event log keeps them
        if a.id is None or a.id <= before:
            continue
        why = "not registered" if UNREGISTERED in (a.reason or "") else (a.reason or "rejected")
        text = f"{a.calling_ae} was refused by {current.name}: {why}"
        out.append(Event(at=current.polled_at, node=current.name, severity=WARNING, text=text, association=a))
    return out


def _is_pool_space(name: str) -> bool:
    return name.startswith("pool") and ("filesystem" in name or "forecast" in name)


def _jobs(snap: NodeSnapshot) -> tuple[Job, ...]:
    return snap.queue.jobs if snap.queue is not None else ()


# --- the fleet ------------------------------------------------------------------------------------


def poll_fleet(
    fleet: Fleet,
    transports: dict[str, Transport],
    timeout: float,
    previous: dict[str, NodeSnapshot] | None = None,
    parallel: int | None = None,
) -> list[NodeSnapshot]:
    """Poll every node at once, one thread each; returns in fleet order within `timeout` seconds.

    A node that has not answered by then is a row saying so; its thread finishes on its own (its transport's
    timeouts bound it) and never holds up the other rows. `parallel` caps how many nodes are polled at once
    (default: all); with a cap, a node that hangs holds its slot until its own timeout.
    """
    previous = previous or {}
    results: dict[str, NodeSnapshot] = {}
    lock = threading.Lock()

    gate = threading.BoundedSemaphore(parallel) if parallel else None

    def one(entry: NodeEntry) -> None:
        if gate is not None:
            gate.acquire()
        try:
            snap = poll(entry, transports[entry.name], previous.get(entry.name))
        finally:
            if gate is not None:
                gate.release()
        with lock:
            results[entry.name] = snap

    # Plain daemon threads, not an executor: a thread stuck on a dead node must not hold up the caller,
    # nor the interpreter's exit (executor threads are joined at exit).
    threads = [
        threading.Thread(target=one, args=(entry,), daemon=True, name=f"poll-{entry.name}") for entry in fleet.nodes
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    out = []
    at = time.time()
    with lock:
        for entry in fleet.nodes:
            snap = results.get(entry.name)
            if snap is None:
                snap = _base(entry, UNREACHABLE, f"no answer within {timeout:g} s", at)
            out.append(snap)
    return out


EXIT_UP, EXIT_DEGRADED, EXIT_DOWN = 0, 1, 2


def fleet_exit_code(snapshots) -> int:
    """0 all up; 1 any degraded (a warning); 2 any down, unreachable, untrusted, or a critical check."""
    code = EXIT_UP
    for s in snapshots:
        if s.status in (DOWN, UNREACHABLE, UNTRUSTED) or (s.worst_check or "").endswith(": critical"):
            return EXIT_DOWN
        if s.status == DEGRADED:
            code = EXIT_DEGRADED
    return code
