"""The agent's reads of what the node did: the association log, health figures and the job queue; typed results."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from . import queue as jobqueue
from .database import Index

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


_ASSOCIATION = (
    "id, started_at, ended_at, calling_ae, called_ae, peer_host, peer_port, result, reason,"
    " rejected_contexts, instances, failures, bytes"
)


def _contexts(text: str) -> tuple[dict, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(value) if isinstance(value, list) else ()


def _association(r) -> AssociationEntry:
    return AssociationEntry(*r[:9], _contexts(r[9]), *r[10:])


def associations(
    index: Index, limit: int, calling_ae: str | None = None, result: str | None = None
) -> list[AssociationEntry]:
    """The latest associations, newest first."""
    where, args = [], []
    for column, value in (("calling_ae", calling_ae), ("result", result)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    rows = (
        index.connection()
        .execute(
            f"SELECT {_ASSOCIATION} FROM associations"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        .fetchall()
    )
    return [_association(r) for r in rows]


def rejections(index: Index, since: float) -> list[AssociationEntry]:
    """Since `since`, oldest first: rejected associations, and accepted ones that stored nothing
    because contexts were refused."""
    rows = (
        index.connection()
        .execute(
            f"SELECT {_ASSOCIATION} FROM associations WHERE started_at >= ? AND (result = 'rejected'"
            " OR (rejected_contexts != '[]' AND instances = 0)) ORDER BY started_at",
            (since,),
        )
        .fetchall()
    )
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
    rows = (
        index.connection()
        .execute(
            "SELECT pool, coalesce(sum(CASE WHEN received_at >= ? THEN size ELSE 0 END), 0), min(received_at)"
            " FROM instances GROUP BY pool",
            (since,),
        )
        .fetchall()
    )
    return {r[0]: PoolIngest(r[1], r[2]) for r in rows}


def quick_check(index: Index) -> list[str]:
    """SQLite's quick_check: ["ok"], or what is damaged. sqlite3.DatabaseError if it cannot even run."""
    return [r[0] for r in index.connection().execute("PRAGMA quick_check").fetchall()]


def last_backup_at(index: Index) -> float | None:
    return (
        index.connection()
        .execute("SELECT max(updated_at) FROM jobs WHERE kind = 'backup' AND state = 'done'")
        .fetchone()[0]
    )


_NOT_PENDING = ("done", "cancelled", "failed", "interrupted")


def queue_backlog(index: Index, failed_since: float) -> Backlog:
    conn = index.connection()
    marks = ",".join("?" * len(_NOT_PENDING))
    pending, oldest = conn.execute(
        f"SELECT count(*), min(created_at) FROM jobs WHERE state NOT IN ({marks})", _NOT_PENDING
    ).fetchone()
    failed = conn.execute(
        "SELECT count(*) FROM jobs WHERE state IN ('failed', 'interrupted') AND updated_at >= ?", (failed_since,)
    ).fetchone()[0]
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


def list_jobs(
    index: Index, *, state: str | None = None, kind: str | None = None, destination: str | None = None, limit: int = 100
) -> JobList:
    found = jobqueue.list_jobs(index.connection(), state=state, kind=kind, destination=destination, limit=limit)
    names = [x.name for x in fields(Job)]
    return JobList(
        [Job(**{n: r[n] for n in names}) for r in found["jobs"]], found["counts"], found["oldest_pending_age_s"]
    )
