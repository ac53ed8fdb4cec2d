"""What the console reads to show a node: status, health, queue, pools, associations, discover, preview."""

from __future__ import annotations

from dataclasses import dataclass, field

# --- node.status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeIdentity:
    """node.status `node`: who the node is and where its config lives."""

    ae_title: str | None = None
    port: int | None = None
    bind: str | None = None
    config: str | None = None
    dir: str | None = None
    open_mode: bool | None = None
    require_called_aet: bool | None = None


@dataclass(frozen=True)
class NodeProcess:
    """node.status `process`: the running node (null when nothing runs)."""

    pid: int | None = None
    workers: int | None = None
    started_at: str | None = None
    uptime_s: float | None = None


@dataclass(frozen=True)
class NodeCounts:
    """node.status `counts`: rows in the index."""

    patients: int | None = None
    studies: int | None = None
    series: int | None = None
    instances: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class StatusPool:
    """One pool as node.status reports it (disk figures null when its folder cannot be examined)."""

    name: str
    tier: str | None = None
    path: str | None = None
    instances: int | None = None
    bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    used_percent: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class NodeStatus:
    """node.status."""

    version: str | None = None
    listening: bool | None = None
    node: NodeIdentity = field(default_factory=NodeIdentity)
    process: NodeProcess | None = None
    counts: NodeCounts = field(default_factory=NodeCounts)
    pools: tuple[StatusPool, ...] = ()


# --- health.check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One health check: status ok, warn, crit or unknown; `value` a number, string, boolean or null."""

    name: str
    status: str
    value: float | str | bool | None = None
    unit: str | None = None
    threshold: str | None = None
    message: str | None = None
    detail: dict[str, object] | None = None


@dataclass(frozen=True)
class HealthCheck:
    """health.check."""

    status: str | None = None
    summary: str | None = None
    checks: tuple[Check, ...] = ()


# --- queue.list, queue.retry, queue.cancel ----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One queue job (forward, migrate, backup, ...)."""

    id: int
    kind: str | None = None
    state: str | None = None
    attempts: int = 0
    max_attempts: int | None = None
    destination: str | None = None
    items_done: int | None = None
    items_total: int | None = None
    next_attempt_at: str | None = None
    last_error: str | None = None
    study_uid: str | None = None
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class QueueList:
    """queue.list. `counts` is a map: every state the agent knows, and any other state found."""

    jobs: tuple[Job, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)


@dataclass(frozen=True)
class Retried:
    """queue.retry."""

    retried: int = 0


@dataclass(frozen=True)
class Cancelled:
    """queue.cancel."""

    cancelled: int = 0


# --- pools.list, pools.migrate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """One pool as pools.list reports it (its figures absent when `error` says its folder cannot be examined)."""

    name: str
    tier: str | None = None
    instances: int | None = None
    indexed_bytes: int | None = None  # what the pool holds
    used: int | None = None  # counted against capacity: indexed_bytes, or the filesystem's use without a capacity
    capacity: int | None = None
    capacity_is_logical: bool = False
    used_percent: float | None = None
    disk_total: int | None = None  # the filesystem's figures, shared with whatever else lives on it
    disk_free: int | None = None
    disk_used: int | None = None
    high_watermark: float | None = None
    low_watermark: float | None = None
    accepting: bool = False
    above_high_watermark: bool = False
    error: str | None = None


@dataclass(frozen=True)
class PoolsList:
    """pools.list."""

    pools: tuple[Pool, ...] = ()


@dataclass(frozen=True)
class Move:
    """One study a migration moves (or would move)."""

    study_uid: str | None = None
    source: str | None = None
    target: str | None = None
    instances: int | None = None
    bytes: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A study (or a pool) a migration leaves where it is, and why."""

    why: str | None = None
    study_uid: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Migration:
    """pools.migrate: the plan; a real run that moved something adds its job and what it did."""

    dry_run: bool | None = None
    plan: tuple[Move, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    studies: int = 0
    instances: int = 0
    bytes: int | None = None
    job_id: int | None = None
    state: str | None = None
    moved_instances: int = 0
    reason: str | None = None  # why nothing is planned (an older agent does not say)


# --- associations.recent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Association:
    """One entry of the association log."""

    id: int | None = None
    started_at: str | None = None
    calling_ae: str | None = None
    called_ae: str | None = None
    peer_host: str | None = None
    peer_port: int | None = None
    result: str | None = None
    instances: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AssociationsRecent:
    """associations.recent."""

    associations: tuple[Association, ...] = ()


# --- rpc.discover -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodDescription:
    """One method as rpc.discover publishes it; `params` is its JSON Schema object."""

    name: str
    role: str | None = None
    params: dict[str, object] = field(default_factory=dict)

    def requires(self, param: str) -> bool:
        required = self.params.get("required")
        return isinstance(required, list) and param in required


@dataclass(frozen=True)
class Discover:
    """rpc.discover."""

    schema_version: int | None = None
    methods: tuple[MethodDescription, ...] = ()

    def method(self, name: str) -> MethodDescription | None:
        return next((m for m in self.methods if m.name == name), None)


# --- preview.render ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """preview.render in mode png: the image, base64."""

    png: str | None = None
    width: int | None = None
    height: int | None = None
