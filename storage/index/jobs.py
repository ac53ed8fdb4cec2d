"""Jobs: background work (forwards, migrations, verifications) recorded with its state and progress in the index."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .database import Index

# pending: waiting for its next attempt (next_attempt_at); running: a process works on it now;
# done / failed (attempts used up, last_error says why) / cancelled (by an operator or a shutdown).
PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
MAX_ERRORS = 100  # kept per job; the count in instances_failed is always complete


def create(index: Index, kind: str, reason: str, params: dict, instances_total: int = 0, bytes_total: int = 0) -> int:
    """A job run at once by the caller (migrate, verify): running, its one attempt started."""
    now = time.time()
    with index.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO jobs (kind, state, reason, params, instances_total, bytes_total, created_at, updated_at,"
            " attempts, max_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
            (kind, RUNNING, reason, json.dumps(params, sort_keys=True), instances_total, bytes_total, now, now),
        )
        return cur.lastrowid


def progress(
    conn: sqlite3.Connection, job_id: int, *, done: int = 0, failed: int = 0, nbytes: int = 0, errors: list[str] = ()
) -> None:
    """Add to a job's counts inside the caller's transaction (the one that committed the work)."""
    row = conn.execute("SELECT errors FROM jobs WHERE id=?", (job_id,)).fetchone()
    kept = json.loads(row[0]) if row else []
    kept = (kept + list(errors))[:MAX_ERRORS]
    conn.execute(
        "UPDATE jobs SET instances_done = instances_done + ?, instances_failed = instances_failed + ?,"
        " bytes_done = bytes_done + ?, errors = ?, updated_at = ? WHERE id = ?",
        (done, failed, nbytes, json.dumps(kept), time.time(), job_id),
    )


def finish(index: Index, job_id: int, state: str, error: str | None = None) -> None:
    with index.transaction() as conn:
        if state == DONE and error is None:
            succeeded(conn, job_id, time.time())
            return
        conn.execute(
            "UPDATE jobs SET state=?, last_error=coalesce(?, last_error), updated_at=? WHERE id=?",
            (state, error, time.time(), job_id),
        )


def succeeded(conn: sqlite3.Connection, job_id: int, now: float) -> None:
    """Done, inside the caller's transaction. An error from an earlier attempt is no longer the job's
    last error (a newcomer read a finished job's old error as its state, issue 17): it is cleared, and
    kept in the job's error history if the job has one."""
    row = conn.execute("SELECT errors, last_error FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        return
    kept = json.loads(row[0] or "[]")
    if kept and row[1] is not None and row[1] not in kept:
        kept = (kept + [row[1]])[:MAX_ERRORS]
    conn.execute(
        "UPDATE jobs SET state=?, next_attempt_at=NULL, last_error=NULL, errors=?, updated_at=? WHERE id=?",
        (DONE, json.dumps(kept), now, job_id),
    )


def interrupt_stale(index: Index, kind: str, keep: int | None = None) -> int:
    """Jobs left `running` by a process that died; call only while holding that kind's lock.
    `keep`: the job the lock holder is about to run (created for it before the lock was taken).

    They failed their one attempt. Migrations are re-planned from the rules (or the next request)
    by their next run, so nothing resumes them."""
    with index.transaction() as conn:
        return conn.execute(
            "UPDATE jobs SET state=?, last_error=?, updated_at=? WHERE kind=? AND state=? AND id IS NOT ?",
            (FAILED, "interrupted: the process running it stopped", time.time(), kind, RUNNING, keep),
        ).rowcount


def get(index: Index, job_id: int) -> dict | None:
    row = index.connection().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    return _as_dict(row) if row else None


def recent(index: Index, kind: str | None = None, limit: int = 50) -> list[dict]:
    sql, args = "SELECT * FROM jobs", []
    if kind is not None:
        sql += " WHERE kind=?"
        args.append(kind)
    rows = index.connection().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [_as_dict(r) for r in rows]


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before attempt `attempts + 1`: base, 2*base, 4*base, ... never more than cap."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def _as_dict(row) -> dict:
    d = dict(row)
    d["params"] = json.loads(d["params"])
    d["errors"] = json.loads(d["errors"])
    return d
