"""The agent results the console reads, as frozen dataclasses (field names as on the wire), and read() to decode one.

Each class declares what the console uses of one method's result (agent/*.py declares the whole
shape, rpc.discover publishes it); the items that `fleet status --json` passes on (health checks,
node.status pools) are declared whole. A field an older agent does not send takes its default, one
a newer agent adds is ignored, a value of the wrong type is a ProtocolError naming its path.
tests/test_console_results.py holds every class against a real agent's answers and its schema.
No Textual here: the snapshot layer and the screens call read(), the widgets get these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.protocol import ProtocolError, RPCError, decode

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


# --- aets.list, aets.add, aets.update, aets.remove, aets.echo ----------------------------------------


@dataclass(frozen=True)
class Aet:
    """One registered AE title (host and port null for a sender the node never calls)."""

    ae_title: str
    host: str | None = None
    port: int | None = None
    description: str = ""
    operations: tuple[str, ...] = ()
    move_destination: bool = False
    tls: bool = False


@dataclass(frozen=True)
class AetsList:
    """aets.list."""

    aets: tuple[Aet, ...] = ()


@dataclass(frozen=True)
class AetChanged:
    """aets.add and aets.update: the AE title as it now is."""

    aet: Aet


@dataclass(frozen=True)
class AetRemoved:
    """aets.remove."""

    removed: str


@dataclass(frozen=True)
class EchoDiagnosis:
    """Why a C-ECHO failed: the layer (dns, refused, unreachable, timeout, rejected, aborted, failed) and a sentence."""

    kind: str
    message: str
    reason: str | None = None


@dataclass(frozen=True)
class Echo:
    """aets.echo: ok with the round trip, or the diagnosis."""

    ok: bool
    called_ae: str | None = None
    host: str | None = None
    port: int | None = None
    status: int | None = None
    rtt_ms: float | None = None
    total_ms: float | None = None
    diagnosis: EchoDiagnosis | None = None


# --- users.list, users.add, users.update, users.remove -----------------------------------------------


@dataclass(frozen=True)
class UserKey:
    """One of a user's SSH public keys, as users.list shows it: its type and `TYPE SHA256:…` fingerprint."""

    type: str
    fingerprint: str


@dataclass(frozen=True)
class User:
    """One agent user; `has_password` only for a user made before passwords were dropped (nothing checks it)."""

    name: str
    role: str
    has_password: bool = False
    ssh_keys: tuple[UserKey, ...] = ()
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class UsersList:
    """users.list."""

    users: tuple[User, ...] = ()


@dataclass(frozen=True)
class UserChanged:
    """users.add and users.update: the user as it now is."""

    user: User


@dataclass(frozen=True)
class UserRemoved:
    """users.remove."""

    removed: str


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


# --- routes.list, routes.add, routes.remove ---------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One auto-routing rule: `match` {calling_ae or DICOM keyword: pattern}, {} for every instance."""

    name: str
    match: dict[str, str] = field(default_factory=dict)
    destinations: tuple[str, ...] = ()
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class RoutesList:
    """routes.list."""

    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class RouteAdded:
    """routes.add: the route as stored."""

    route: Route


@dataclass(frozen=True)
class RouteRemoved:
    """routes.remove."""

    removed: str


# --- audit.recent -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: `result` "ok" or the error kind the call failed with; `params` redacted by the agent."""

    id: int
    at: str | None = None
    user: str = ""
    method: str = ""
    params: dict[str, object] = field(default_factory=dict)
    result: str = ""
    message: str = ""


@dataclass(frozen=True)
class AuditRecent:
    """audit.recent, newest first."""

    entries: tuple[AuditEntry, ...] = ()


# --- logs.tail --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line of the node's log; level and logger null for a line out of the format (a traceback)."""

    message: str
    time: str | None = None
    level: str | None = None
    logger: str | None = None


@dataclass(frozen=True)
class LogTail:
    """logs.tail: the lines, oldest first, and where the next call goes on from (`end` in node.log, `cursor`
    in the journal)."""

    lines: tuple[LogLine, ...] = ()
    source: str = "file"
    path: str | None = None
    end: int = 0
    cursor: str | None = None
    truncated: bool = False

    def after(self) -> dict:
        """The params of the next logs.tail that returns only what was written after these lines."""
        if self.source == "journal":
            return {"after_cursor": self.cursor} if self.cursor else {}
        return {"after": self.end}


# --- reading an answer ------------------------------------------------------------------------------

RESULTS: dict[str, type] = {
    "node.status": NodeStatus,
    "health.check": HealthCheck,
    "queue.list": QueueList,
    "queue.retry": Retried,
    "queue.cancel": Cancelled,
    "pools.list": PoolsList,
    "pools.migrate": Migration,
    "associations.recent": AssociationsRecent,
    "aets.list": AetsList,
    "aets.add": AetChanged,
    "aets.update": AetChanged,
    "aets.remove": AetRemoved,
    "aets.echo": Echo,
    "users.list": UsersList,
    "users.add": UserChanged,
    "users.update": UserChanged,
    "users.remove": UserRemoved,
    "rpc.discover": Discover,
    "preview.render": Preview,
    "routes.list": RoutesList,
    "routes.add": RouteAdded,
    "routes.remove": RouteRemoved,
    "audit.recent": AuditRecent,
    "logs.tail": LogTail,
}


def read(method: str, answer):
    """The typed result of `method` from the agent's answer (parsed JSON); ProtocolError if it does not fit."""
    return decode(RESULTS[method], answer, method)


def read_answer(method: str, answer, error: Exception | None) -> tuple[object | None, Exception | None]:
    """(typed result, None) or (None, error) for one call's outcome; an unreadable answer becomes its error."""
    if error is not None:
        return None, error
    try:
        return read(method, answer), None
    except ProtocolError as err:
        return None, err


def failure(method: str, error: Exception) -> str:
    """One line for a failed call: `queue.list failed: …`; an unreadable answer names the method itself."""
    if isinstance(error, ProtocolError):
        return error.message
    return f"{method} failed: {error.message if isinstance(error, RPCError) else error}"
