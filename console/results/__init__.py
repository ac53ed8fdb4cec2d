"""The agent results the console reads, as frozen dataclasses (field names as on the wire), and read() to decode one.

Each class declares what the console uses of one method's result (agent/*.py declares the whole
shape, rpc.discover publishes it); the items that `fleet status --json` passes on (health checks,
node.status pools) are declared whole. A field an older agent does not send takes its default, one
a newer agent adds is ignored, a value of the wrong type is a ProtocolError naming its path.
tests/test_console_results.py holds every class against a real agent's answers and its schema.
No Textual here: the snapshot layer and the screens call read(), the widgets get these types.

`monitor.py` holds the results the screens show, `manage.py` those of the managing tabs; both are
re-exported here, so `from console.results import Aet` keeps working.
"""

from __future__ import annotations

from agent.protocol import ProtocolError, RPCError, decode

from .manage import (
    Aet,
    AetChanged,
    AetRemoved,
    AetsList,
    AuditEntry,
    AuditRecent,
    Echo,
    EchoDiagnosis,
    LogLine,
    LogTail,
    Route,
    RouteAdded,
    RouteRemoved,
    RoutesList,
    User,
    UserChanged,
    UserKey,
    UserRemoved,
    UsersList,
)
from .monitor import (
    Association,
    AssociationsRecent,
    Cancelled,
    Check,
    Discover,
    HealthCheck,
    Job,
    MethodDescription,
    Migration,
    Move,
    NodeCounts,
    NodeIdentity,
    NodeProcess,
    NodeStatus,
    Pool,
    PoolsList,
    Preview,
    QueueList,
    Retried,
    Skipped,
    StatusPool,
)

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


__all__ = [
    "RESULTS",
    "Aet",
    "AetChanged",
    "AetRemoved",
    "AetsList",
    "Association",
    "AssociationsRecent",
    "AuditEntry",
    "AuditRecent",
    "Cancelled",
    "Check",
    "Discover",
    "Echo",
    "EchoDiagnosis",
    "HealthCheck",
    "Job",
    "LogLine",
    "LogTail",
    "MethodDescription",
    "Migration",
    "Move",
    "NodeCounts",
    "NodeIdentity",
    "NodeProcess",
    "NodeStatus",
    "Pool",
    "PoolsList",
    "Preview",
    "QueueList",
    "Retried",
    "Route",
    "RouteAdded",
    "RouteRemoved",
    "RoutesList",
    "Skipped",
    "StatusPool",
    "User",
    "UserChanged",
    "UserKey",
    "UserRemoved",
    "UsersList",
    "failure",
    "read",
    "read_answer",
]
