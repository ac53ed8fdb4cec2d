"""The job queue in the index: enqueue forwards (from the group commit or on request), list, retry, cancel."""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import jobs

if TYPE_CHECKING:
    from .database import Index

FORWARD = "forward"
KINDS = (FORWARD, "migrate", "verify", "backup", "update")
_OPEN = (jobs.PENDING, jobs.RUNNING)


class QueueError(ValueError):
    """A queue request that cannot apply: `kind` is not_found or conflict, `field` the parameter."""

    def __init__(self, kind: str, field: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.field = field


def enqueue_routed(conn: sqlite3.Connection, items: Iterable[tuple[str, str, int, str]], max_attempts: int) -> None:
    """Inside the group commit's transaction: add (study_uid, sop_uid, size, destination) items to
    the forward job of their study and destination, or to a new one. One job per study and
    destination, so the forwarder sends a study's instances together on one association: a study
    whose first instances were already forwarded reopens its done job (a failed or cancelled one
    is left as the operator sees it, and a new job starts)."""
    groups: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for study_uid, sop_uid, size, destination in items:
        groups[(study_uid, destination)].append((sop_uid, size))
    now = time.time()
    for (study_uid, destination), members in groups.items():
        row = conn.execute(
            "SELECT id, state FROM jobs WHERE kind = 'forward' AND destination = ? AND study_uid = ?"
            " ORDER BY id DESC LIMIT 1",
            (destination, study_uid),
        ).fetchone()
        if row is None or row[1] not in (jobs.PENDING, jobs.RUNNING, jobs.DONE):
            job_id = _new_forward(conn, study_uid, destination, "route", max_attempts, now)
        else:
            job_id = row[0]
            if row[1] == jobs.DONE:  # the new instances have had no attempt yet
                conn.execute(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, job_id),
                )
        _add_items(conn, job_id, members, now)


def enqueue_study(index: Index, study_uid: str, destination: str, max_attempts: int, reason: str = "requested") -> dict:
    """A forward job for every instance of a study (studies.send); QueueError if the study is unknown."""
    now = time.time()
    with index.transaction() as conn:
        members = [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT sop_uid, size FROM instances WHERE study_uid = ? ORDER BY series_uid,"
                " CAST(instance_number AS INTEGER), sop_uid",
                (study_uid,),
            )
        ]
        if not members:
            raise QueueError("not_found", "StudyInstanceUID", f"no study {study_uid} in the index")
        job_id = _new_forward(conn, study_uid, destination, reason, max_attempts, now)
        _add_items(conn, job_id, members, now)
    return {"job_id": job_id, "items_total": len(members), "bytes_total": sum(m[1] for m in members)}


def _new_forward(
    conn: sqlite3.Connection, study_uid: str, destination: str, reason: str, max_attempts: int, now: float
) -> int:
    return conn.execute(
        "INSERT INTO jobs (kind, state, reason, created_at, updated_at, attempts, max_attempts, next_attempt_at,"
        " destination, study_uid) VALUES ('forward', 'pending', ?, ?, ?, 0, ?, ?, ?, ?)",
        (reason, now, now, max_attempts, now, destination, study_uid),
    ).lastrowid


def _add_items(conn: sqlite3.Connection, job_id: int, members: list[tuple[str, int]], now: float) -> None:
    added, nbytes = 0, 0
    for sop_uid, size in members:
        if conn.execute(
            "INSERT INTO job_items (job_id, sop_uid) VALUES (?, ?) ON CONFLICT DO NOTHING", (job_id, sop_uid)
        ).rowcount:
            added += 1
            nbytes += size
    if added:
        conn.execute(
            "UPDATE jobs SET instances_total = instances_total + ?, bytes_total = bytes_total + ?,"
            " updated_at = ? WHERE id = ?",
            (added, nbytes, now, job_id),
        )


# --- what operators see and do ------------------------------------------------------------------


def list_jobs(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    destination: str | None = None,
    limit: int = 100,
) -> dict:
    """Jobs newest first; counts by state and the oldest pending job's age over the same kind and
    destination (the state filter narrows only the list)."""
    where, args = [], []
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if destination is not None:
        where.append("destination = ?")
        args.append(destination)
    scope = (" WHERE " + " AND ".join(where)) if where else ""
    listed = where + (["state = ?"] if state is not None else [])
    rows = conn.execute(
        "SELECT * FROM jobs" + ((" WHERE " + " AND ".join(listed)) if listed else "") + " ORDER BY id DESC LIMIT ?",
        (*args, *([state] if state is not None else []), limit),
    ).fetchall()
    counts = dict.fromkeys(jobs.STATES, 0)
    for st, n in conn.execute(f"SELECT state, count(*) FROM jobs{scope} GROUP BY state", args):
        counts[st] = counts.get(st, 0) + n
    oldest = conn.execute(
        f"SELECT min(created_at) FROM jobs{scope}{' AND' if scope else ' WHERE'} state = 'pending'", args
    ).fetchone()[0]
    return {
        "jobs": [dict(r) for r in rows],
        "counts": counts,
        "oldest_pending_age_s": round(time.time() - oldest, 3) if oldest is not None else None,
    }


def _forward_job(conn: sqlite3.Connection, job_id: int, not_forward: str) -> sqlite3.Row:
    """The job's kind and state; QueueError unless it exists and is a forward (`not_forward` says why not)."""
    row = conn.execute("SELECT kind, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise QueueError("not_found", "id", f"no job {job_id}; queue.list shows them")
    if row["kind"] != FORWARD:
        raise QueueError("conflict", "id", f"job {job_id} is a {row['kind']} job: {not_forward}")
    return row


def retry(index: Index, *, job_id: int | None = None, destination: str | None = None) -> int:
    """Start a job again now: one job (pending: its backoff ends now; failed or cancelled: a fresh
    set of attempts), or every failed forward to a destination. Acknowledged instances stay done."""
    now = time.time()
    with index.transaction() as conn:
        if job_id is not None:
            row = _forward_job(conn, job_id, "those are not retried; run it again (pools.migrate, pools.verify)")
            if row["state"] in (jobs.RUNNING, jobs.DONE):
                raise QueueError(
                    "conflict",
                    "id",
                    f"job {job_id} is {row['state']}; only pending, failed or cancelled jobs can be retried",
                )
            ids = [job_id]
        else:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE kind = 'forward' AND destination = ? AND state = 'failed'",
                    (destination,),
                )
            ]
        for jid in ids:
            # A retried job gets its whole set of attempts again; its last error stays until one succeeds.
            conn.execute(
                "UPDATE jobs SET state = 'pending', next_attempt_at = ?, updated_at = ?,"
                " attempts = CASE WHEN state = 'pending' THEN attempts ELSE 0 END WHERE id = ?",
                (now, now, jid),
            )
            conn.execute(
                "UPDATE job_items SET state = 'pending', error = NULL WHERE job_id = ? AND state = 'failed'", (jid,)
            )
    return len(ids)


def cancel(index: Index, job_id: int) -> int:
    """Cancel a forward job: a pending one never runs again, a running one stops at the next
    instance (the forwarder reads the state before each). Failed jobs can be cancelled too, to
    say they were seen and will not be retried."""
    now = time.time()
    with index.transaction() as conn:
        row = _forward_job(conn, job_id, "it runs to its end (a migration stops between batches when the node stops)")
        if row["state"] in (jobs.DONE, jobs.CANCELLED):
            raise QueueError("conflict", "id", f"job {job_id} is already {row['state']}")
        conn.execute(
            "UPDATE jobs SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?,"
            " last_error = coalesce(last_error, 'cancelled') WHERE id = ?",
            (now, job_id),
        )
    return 1


def requeue_running(index: Index) -> int:
    """At start, before the forwarder runs: forwards a dead process left running go back to pending.
    Items it had sent but not yet recorded as acknowledged are sent again (see storage/dimse/forward.py)."""
    now = time.time()
    with index.transaction() as conn:
        return conn.execute(
            "UPDATE jobs SET state = 'pending', next_attempt_at = ?, updated_at = ?"
            " WHERE kind = 'forward' AND state = 'running'",
            (now, now),
        ).rowcount
