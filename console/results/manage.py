"""What the console reads to manage a node: AE titles, users, routes, the audit log and the node's log."""

from __future__ import annotations

from dataclasses import dataclass, field

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
