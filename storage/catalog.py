"""Named read and write queries the agent calls; typed results, so the agent writes no SQL of its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Generic, TypeVar

from . import query as q
from . import queue as jobqueue
from . import routes as route_rules
from .accounts import Accounts
from .index import Index

T = TypeVar("T")

# What runs inside a write's transaction after the rows changed (e.g. authorized_keys rewritten):
# if it raises, the change is rolled back with it.
Then = Callable[[], None] | None


# --- errors the agent maps to its error kinds ------------------------------------------------------


class CatalogError(Exception):
    """A named query refused a write; `name` is what it was about (an AE title, a user, a route)."""

    def __init__(self, name: str, position: int | None = None):
        super().__init__(name)
        self.name = name
        self.position = position  # the item's place in a list parameter (routes.add destinations)


class Exists(CatalogError):
    """One of that name exists already."""


class Missing(CatalogError):
    """Nothing of that name exists."""


class NoAddress(CatalogError):
    """The registered AE has no host or no port, so nothing can be sent to it."""


class InUse(CatalogError):
    """The AE title is a destination of routes; removing it would fail every forward to it."""

    def __init__(self, name: str, routes: list[str]):
        super().__init__(name)
        self.routes = routes


class LastAdmin(CatalogError):
    """The change would leave no admin."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """At most `limit` rows, and whether more matched."""

    items: list[T]
    truncated: bool


def _page(rows: list, limit: int, make: Callable) -> Page:
    return Page([make(r) for r in rows[:limit]], len(rows) > limit)


# --- registered AE titles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AetFields:
    """What aets.add sets and aets.update changes."""

    host: str | None
    port: int | None
    description: str
    operations: tuple[str, ...]
    move_destination: bool
    tls: bool


@dataclass(frozen=True)
class Aet(AetFields):
    ae_title: str
    created_at: float
    updated_at: float

    @property
    def addressed(self) -> bool:
        """It has a host and a port: we can call it (C-ECHO, C-MOVE destination, forwards)."""
        return bool(self.host) and bool(self.port)


def _aet(d: dict) -> Aet:
    return Aet(ae_title=d["ae_title"], host=d["host"], port=d["port"], description=d["description"],
               operations=tuple(d["operations"]), move_destination=d["move_destination"], tls=d["tls"],
               created_at=d["created_at"], updated_at=d["updated_at"])


def aets(index: Index) -> list[Aet]:
    return [_aet(d) for d in index.aets()]


def aet(index: Index, ae_title: str) -> Aet | None:
    found = index.aet(ae_title)
    return _aet(found) if found else None


def count_aets(index: Index) -> int:
    return index.connection().execute("SELECT count(*) FROM aets").fetchone()[0]


def _put_aet(index: Index, conn, ae_title: str, f: AetFields) -> None:
    index.put_aet(conn, ae_title, **{x.name: getattr(f, x.name) for x in fields(AetFields)})


def add_aet(index: Index, ae_title: str, new: AetFields) -> Aet:
    """Register an AE title; Exists if it is registered (checked and inserted in one transaction)."""
    with index.transaction() as conn:
        if index.aet(ae_title) is not None:
            raise Exists(ae_title)
        _put_aet(index, conn, ae_title, new)
    return aet(index, ae_title)


def update_aet(index: Index, ae_title: str, **changes) -> Aet:
    """Change some AetFields of a registered AE title; Missing if it is not registered."""
    with index.transaction() as conn:
        current = aet(index, ae_title)
        if current is None:
            raise Missing(ae_title)
        merged = replace(AetFields(**{x.name: getattr(current, x.name) for x in fields(AetFields)}), **changes)
        _put_aet(index, conn, ae_title, merged)
    return aet(index, ae_title)


def remove_aet(index: Index, ae_title: str) -> None:
    """InUse while a route forwards to it; Missing if it is not registered."""
    with index.transaction() as conn:
        used_by = route_rules.using(conn, ae_title)
        if used_by:
            raise InUse(ae_title, used_by)
        if not index.remove_aet(conn, ae_title):
            raise Missing(ae_title)


# --- routes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRecord:
    name: str
    match: Mapping[str, str]
    destinations: tuple[str, ...]
    created_at: float
    updated_at: float


def routes(index: Index) -> list[RouteRecord]:
    return [RouteRecord(r["name"], r["match"], tuple(r["destinations"]), r["created_at"], r["updated_at"])
            for r in route_rules.load(index.connection())]


def add_route(index: Index, name: str, match: dict, destinations: list[str]) -> RouteRecord:
    """Missing/NoAddress (with the destination's position) unless each destination can be sent to;
    Exists if the name is taken. One transaction: no destination is removed between check and insert."""
    with index.transaction() as conn:
        for i, title in enumerate(destinations):
            found = aet(index, title)
            if found is None:
                raise Missing(title, i)
            if not found.addressed:
                raise NoAddress(title, i)
        if not route_rules.put(conn, name, match, destinations):
            raise Exists(name)
    return next(r for r in routes(index) if r.name == name)


def remove_route(index: Index, name: str) -> None:
    with index.transaction() as conn:
        if not route_rules.remove(conn, name):
            raise Missing(name)


# --- studies, series, instances ------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFilter:
    """studies.find's keys, already validated; None matches everything. Patterns may hold * and ?."""

    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    study_uid: str | None = None
    date_range: tuple[str | None, str | None] | None = None  # inclusive YYYYMMDD bounds
    modalities: tuple[str, ...] | None = None  # any of them in any series


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    modalities: tuple[str, ...]
    series: int
    instances: int
    bytes: int


@dataclass(frozen=True)
class SeriesSummary:
    series_uid: str
    study_uid: str
    modality: str
    series_number: str
    series_description: str
    body_part: str
    instances: int
    bytes: int


@dataclass(frozen=True)
class InstanceSummary:
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    pool: str
    size: int
    sha256: str
    received_at: float
    source_ae: str


def find_studies(index: Index, f: StudyFilter, limit: int) -> Page[StudySummary]:
    """Studies matching every key of `f` (C-FIND style), newest first."""
    where, args = [], []
    for column, value in (("s.patient_name", f.patient_name), ("s.patient_id", f.patient_id),
                          ("s.accession_number", f.accession_number)):
        if value is not None:
            clause, values = q.match_clause(column, value)
            where.append(clause)
            args += values
    if f.study_uid is not None:
        where.append("s.study_uid = ?")
        args.append(f.study_uid)
    ranges = [q.key_range_clause("s.date_key", *f.date_range)] if f.date_range else []
    kinds = [q.modalities_clause(list(f.modalities))] if f.modalities else []
    for clause, values in ranges + kinds:
        where.append(clause)
        args += values
    rows = index.connection().execute(
        "SELECT s.study_uid, s.patient_name, s.patient_id, s.study_date, s.study_time, s.accession_number,"
        f" s.study_id, s.study_description, {q.STUDY_MODALITIES}, {q.STUDY_SERIES}, {q.STUDY_INSTANCES},"
        f" {q.STUDY_BYTES} FROM studies s" + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY s.date_key DESC, s.time_key DESC, s.study_uid LIMIT ?", (*args, limit + 1)).fetchall()
    return _page(rows, limit, lambda r: StudySummary(
        *r[:8], tuple(sorted(m for m in (r[8] or "").split(",") if m)), *r[9:]))


def series_of(index: Index, study_uid: str, limit: int) -> Page[SeriesSummary] | None:
    """The study's series by number; None if the study is not in the index."""
    conn = index.connection()
    if conn.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT x.series_uid, x.study_uid, x.modality, x.series_number, x.series_description, x.body_part,"
        f" {q.SERIES_INSTANCES}, {q.SERIES_BYTES} FROM series x WHERE x.study_uid = ?"
        " ORDER BY CAST(x.series_number AS INTEGER), x.series_uid LIMIT ?", (study_uid, limit + 1)).fetchall()
    return _page(rows, limit, lambda r: SeriesSummary(*r))


def instances_of(index: Index, series_uid: str, limit: int) -> Page[InstanceSummary] | None:
    """The series' instances by number; None if the series is not in the index."""
    conn = index.connection()
    if conn.execute("SELECT 1 FROM series WHERE series_uid=?", (series_uid,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT sop_uid, sop_class_uid, instance_number, transfer_syntax, pool, size, sha256, received_at,"
        " source_ae FROM instances WHERE series_uid = ? ORDER BY CAST(instance_number AS INTEGER), sop_uid"
        " LIMIT ?", (series_uid, limit + 1)).fetchall()
    return _page(rows, limit, lambda r: InstanceSummary(*r))


# --- the association log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssociationEntry:
    id: int
    started_at: float
    ended_at: float | None
    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int | None
    result: str
    reason: str
    rejected_contexts: tuple[dict, ...]  # {abstract_syntax, transfer_syntaxes, reason} each
    instances: int
    failures: int
    bytes: int


_ASSOCIATION = ("id, started_at, ended_at, calling_ae, called_ae, peer_host, peer_port, result, reason,"
                " rejected_contexts, instances, failures, bytes")


def _contexts(text: str) -> tuple[dict, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(value) if isinstance(value, list) else ()


def _association(r) -> AssociationEntry:
    return AssociationEntry(*r[:9], _contexts(r[9]), *r[10:])


def associations(index: Index, limit: int, calling_ae: str | None = None,
                 result: str | None = None) -> list[AssociationEntry]:
    """The latest associations, newest first."""
    where, args = [], []
    for column, value in (("calling_ae", calling_ae), ("result", result)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    rows = index.connection().execute(
        f"SELECT {_ASSOCIATION} FROM associations" + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [_association(r) for r in rows]


def rejections(index: Index, since: float) -> list[AssociationEntry]:
    """Since `since`, oldest first: rejected associations, and accepted ones that stored nothing
    because contexts were refused."""
    rows = index.connection().execute(
        f"SELECT {_ASSOCIATION} FROM associations WHERE started_at >= ? AND (result = 'rejected'"
        " OR (rejected_contexts != '[]' AND instances = 0)) ORDER BY started_at", (since,)).fetchall()
    return [_association(r) for r in rows]


# --- what health.check reads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolIngest:
    received_bytes: int  # by instances still in the pool, received since the window's start
    first_received_at: float | None  # its oldest instance's arrival


@dataclass(frozen=True)
class Backlog:
    pending: int  # jobs neither finished nor failed
    oldest_created_at: float | None
    failed: int  # failed or interrupted since `failed_since`


def ingest_by_pool(index: Index, since: float) -> dict[str, PoolIngest]:
    rows = index.connection().execute(
        "SELECT pool, coalesce(sum(CASE WHEN received_at >= ? THEN size ELSE 0 END), 0), min(received_at)"
        " FROM instances GROUP BY pool", (since,)).fetchall()
    return {r[0]: PoolIngest(r[1], r[2]) for r in rows}


def quick_check(index: Index) -> list[str]:
    """SQLite's quick_check: ["ok"], or what is damaged. sqlite3.DatabaseError if it cannot even run."""
    return [r[0] for r in index.connection().execute("PRAGMA quick_check").fetchall()]


def last_backup_at(index: Index) -> float | None:
    return index.connection().execute(
        "SELECT max(updated_at) FROM jobs WHERE kind = 'backup' AND state = 'done'").fetchone()[0]


_NOT_PENDING = ("done", "cancelled", "failed", "interrupted")


def queue_backlog(index: Index, failed_since: float) -> Backlog:
    conn = index.connection()
    marks = ",".join("?" * len(_NOT_PENDING))
    pending, oldest = conn.execute(f"SELECT count(*), min(created_at) FROM jobs WHERE state NOT IN ({marks})",
                                   _NOT_PENDING).fetchone()
    failed = conn.execute("SELECT count(*) FROM jobs WHERE state IN ('failed', 'interrupted') AND updated_at >= ?",
                          (failed_since,)).fetchone()[0]
    return Backlog(pending, oldest, failed)


# --- the job queue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: float | None
    last_error: str | None
    destination: str | None
    study_uid: str | None
    instances_done: int
    instances_total: int
    bytes_done: int
    bytes_total: int
    reason: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class JobList:
    jobs: list[Job]
    counts: dict[str, int]  # by state, over the kind and destination asked for (not the state)
    oldest_pending_age_s: float | None


def list_jobs(index: Index, *, state: str | None = None, kind: str | None = None,
              destination: str | None = None, limit: int = 100) -> JobList:
    found = jobqueue.list_jobs(index.connection(), state=state, kind=kind, destination=destination, limit=limit)
    names = [x.name for x in fields(Job)]
    return JobList([Job(**{n: r[n] for n in names}) for r in found["jobs"]], found["counts"],
                   found["oldest_pending_age_s"])


# --- users and the audit log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: str
    has_password: bool  # the hash itself stays in storage
    ssh_keys: tuple[str, ...]  # OpenSSH public key lines
    created_at: float
    updated_at: float


def _user(d: dict) -> User:
    return User(d["name"], d["role"], bool(d["password_hash"]), tuple(d["ssh_keys"]), d["created_at"],
                d["updated_at"])


def users(accounts: Accounts) -> list[User]:
    return [_user(d) for d in accounts.users()]


def _admin_left_after(accounts: Accounts, conn, current: dict, new_role: str | None) -> bool:
    """Whether an admin remains once `current` stops being one (new_role None: the user is removed)."""
    return current["role"] != "admin" or new_role == "admin" or accounts.admin_count(conn) > 1


def add_user(accounts: Accounts, name: str, role: str, password_hash: str | None, ssh_keys: list[str],
             then: Then = None) -> User:
    """Exists if the name is taken."""
    with accounts.index.transaction() as conn:
        if accounts.user(name, conn) is not None:
            raise Exists(name)
        accounts.add_user(conn, name, role, password_hash, ssh_keys)
        if then is not None:
            then()
    return _user(accounts.user(name))


def update_user(accounts: Accounts, name: str, *, role: str | None = None, password_hash: str | None = None,
                clear_password: bool = False, ssh_keys: list[str] | None = None, then: Then = None) -> User:
    """Missing if there is no such user; LastAdmin if it would demote the last admin."""
    with accounts.index.transaction() as conn:
        current = accounts.user(name, conn)
        if current is None:
            raise Missing(name)
        if role is not None and not _admin_left_after(accounts, conn, current, role):
            raise LastAdmin(name)
        accounts.update_user(conn, name, role=role, password_hash=password_hash, clear_password=clear_password,
                             ssh_keys=ssh_keys)
        if then is not None:
            then()
    return _user(accounts.user(name))


def remove_user(accounts: Accounts, name: str, then: Then = None) -> None:
    """Missing if there is no such user; LastAdmin for the last admin."""
    with accounts.index.transaction() as conn:
        current = accounts.user(name, conn)
        if current is None:
            raise Missing(name)
        if not _admin_left_after(accounts, conn, current, None):
            raise LastAdmin(name)
        accounts.remove_user(conn, name)
        if then is not None:
            then()


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    user: str
    method: str
    params: dict  # as recorded: secrets already redacted
    result: str
    message: str


def recent_audit(accounts: Accounts, limit: int, user: str | None = None,
                 method: str | None = None) -> list[AuditEntry]:
    names = [x.name for x in fields(AuditEntry)]
    return [AuditEntry(**{n: r[n] for n in names}) for r in accounts.recent_audit(limit, user=user, method=method)]
