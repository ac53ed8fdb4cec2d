"""The forwarder: runs the queue's forward jobs, one association per destination, retried with backoff.

It runs in exactly one process of the node (next to the migration scheduler; the node lock makes it
one per node folder). A dispatcher thread polls the jobs table cheaply (PRAGMA data_version, which
changes only when another connection commits) and starts one thread per destination with due jobs,
at most `queue.concurrency` at once, so a destination that is down never holds up the others.

A destination thread claims its due jobs one at a time and sends their instances as stored (the
file's dataset bytes, through storage/dimse/retrieve.py's StoredSender) on one association
(forward_link.py) that it keeps for as long as that destination has due jobs. Acknowledged
instances are recorded at least every ACK_BATCH instances or ACK_SECONDS: a retry after a failed
attempt never resends an acknowledged instance, and after a crash (kill -9, power loss) at most
that many acknowledged instances per destination are sent again. A destination receiving an
instance twice keeps one copy (same SOP Instance UID), so that resend costs time, not data.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from storage.index import jobs
from storage.index.queue import requeue_running

from .forward_link import AssociationFailed, Link

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how soon a new job starts; an idle poll is one PRAGMA (a few microseconds)
ACK_BATCH = 64  # acknowledged instances recorded per transaction ...
ACK_SECONDS = 0.5  # ... or at least this often
FETCH = 500  # pending items read per query


class Forwarder:
    """Starts a thread per destination with due jobs; each attempt's outcome is recorded in the jobs table."""

    def __init__(self, node: NodeContext):
        self.node = node
        self.config = node.config.queue
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._busy: dict[tuple[str, int], threading.Thread] = {}  # (destination, slot) -> its thread
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._dispatch_loop, name="forwarder", daemon=True)
        self._lock_path = node.config.index.with_suffix(".writelock")
        self._seen_version: dict[int, int] = {}  # job id -> data_version when its state was last read

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Running jobs stop at the next instance and go back to pending."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            threads = list(self._busy.values())
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    # --- dispatch --------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        index = self.node.index
        try:
            moved = requeue_running(index)
            if moved:
                log.info("queue: %d forward job(s) left running by the last run are pending again", moved)
            conn = index.connection()
            seen = None
            next_due = 0.0
            while not self._stop.is_set():
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                now = time.time()
                if version != seen or now >= next_due or self._wake.is_set():
                    self._wake.clear()
                    seen = version
                    next_due = self._dispatch(conn, now)
                self._wake.wait(POLL_SECONDS)
        except Exception:  # say so loudly; the node keeps storing, the jobs wait
            log.exception("queue: the forwarder stopped")
        finally:
            index.close()

    def _dispatch(self, conn, now: float) -> float:
        """Start a thread for each destination with due jobs (up to the concurrency); return when
        the next waiting job falls due."""
        rows = conn.execute(
            "SELECT destination, min(coalesce(next_attempt_at, 0)),"
            " sum(coalesce(next_attempt_at, 0) <= ?) FROM jobs WHERE kind = 'forward'"
            " AND state = 'pending' GROUP BY destination",
            (now,),
        ).fetchall()
        next_due = now + 60
        with self._lock:
            for destination, first_due, due in rows:
                if not due:
                    next_due = min(next_due, first_due)
                    continue
                # Several associations to one destination only when it has several due jobs.
                serving = sum(1 for d, _ in self._busy if d == destination)
                for slot in range(self.config.associations):
                    if serving >= min(self.config.associations, due) or len(self._busy) >= self.config.concurrency:
                        break
                    if (destination, slot) in self._busy:
                        continue
                    thread = threading.Thread(
                        target=self._serve, args=(destination, slot), daemon=True, name=f"forward-{destination}-{slot}"
                    )
                    self._busy[(destination, slot)] = thread
                    serving += 1
                    thread.start()
        return next_due

    # --- one destination -----------------------------------------------------------------------

    def _serve(self, destination: str, slot: int) -> None:
        link = Link(self.node, self.config, destination)
        try:
            while not self._stop.is_set():
                job = self._claim(destination)
                if job is None:
                    break
                if not self._run_job(link, job):
                    break  # the destination failed us: the next attempt waits for its backoff
        except Exception:  # a bug must not kill the dispatcher; the job is retried
            log.exception("queue: forwarding to %s failed", destination)
        finally:
            link.close()
            self.node.index.close()
            with self._lock:
                self._busy.pop((destination, slot), None)
            self._wake.set()

    @contextmanager
    def _transaction(self):
        """A write transaction, taking turns with the workers' group commits through their lock
        file (SQLite's own busy handler sleeps whole milliseconds)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self.node.index.transaction() as conn:
                yield conn
        finally:
            os.close(fd)

    def _claim(self, destination: str):
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE kind = 'forward' AND destination = ? AND state = 'pending'"
                " AND coalesce(next_attempt_at, 0) <= ? ORDER BY next_attempt_at, id LIMIT 1",
                (destination, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (now, row["id"]),
            )
        return {**dict(row), "attempts": row["attempts"] + 1}

    def _run_job(self, link: Link, job: dict) -> bool:
        """One attempt at one job; False when the destination failed (stop serving it for now)."""
        job_id = job["id"]
        conn = self.node.index.connection()
        acks: list[tuple[str, int]] = []
        failures: dict[str, str] = {}
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if acks or failures:
                self._record(job_id, acks, failures)
                acks.clear()
                failures.clear()
            last_flush = time.monotonic()

        failed_this_attempt: dict[str, str] = {}
        try:
            while True:
                items = conn.execute(
                    "SELECT i.*, ji.sop_uid AS item_uid FROM job_items ji"
                    " LEFT JOIN instances i ON i.sop_uid = ji.sop_uid"
                    " WHERE ji.job_id = ? AND ji.state = 'pending' LIMIT ?",
                    (job_id, FETCH),
                ).fetchall()
                if not items:
                    outcome = self._finish(job, failed_this_attempt)
                    if outcome == "more":
                        continue
                    return True
                link.ensure(job, [r for r in items if r["sop_uid"] is not None])
                for row in items:
                    if self._stop.is_set() or self._cancelled(conn, job_id):
                        flush()
                        self._interrupted(job)
                        return not self._stop.is_set()
                    uid = row["item_uid"]
                    if row["sop_uid"] is None:  # deleted from the index since it was queued
                        failures[uid] = failed_this_attempt[uid] = "no longer in the index"
                    else:
                        error = link.send(row)
                        if error is None:
                            acks.append((uid, row["size"]))
                        else:
                            failures[uid] = failed_this_attempt[uid] = error
                    if len(acks) >= ACK_BATCH or time.monotonic() - last_flush >= ACK_SECONDS:
                        flush()
                flush()
        except AssociationFailed as err:
            flush()
            self._attempt_failed(job, str(err), whole_destination=not link.was_up)
            link.close()
            return False
        finally:
            self._seen_version.pop(job_id, None)
            if link.sender is not None:  # its per-association lists; we keep our own record per job
                link.sender.sent.clear()
                link.sender.failed.clear()

    def _cancelled(self, conn, job_id: int) -> bool:
        """Read before each instance. A cancel is a commit by another connection, so the job's
        state is read again only when PRAGMA data_version says something was committed."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._seen_version.get(job_id):
            return False
        self._seen_version[job_id] = version
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or row[0] != jobs.RUNNING

    def _record(self, job_id: int, acks: list[tuple[str, int]], failures: dict[str, str]) -> None:
        now = time.time()
        with self._transaction() as conn:
            if acks:
                conn.executemany(
                    "UPDATE job_items SET state = 'done', error = NULL WHERE job_id = ? AND sop_uid = ?",
                    [(job_id, uid) for uid, _ in acks],
                )
            if failures:
                conn.executemany(
                    "UPDATE job_items SET state = 'failed', error = ? WHERE job_id = ? AND sop_uid = ?",
                    [(error, job_id, uid) for uid, error in failures.items()],
                )
            conn.execute(
                "UPDATE jobs SET instances_done = instances_done + ?, bytes_done = bytes_done + ?,"
                " updated_at = ? WHERE id = ?",
                (len(acks), sum(size for _, size in acks), now, job_id),
            )

    def _finish(self, job: dict, failed: dict[str, str]) -> str:
        """End the attempt: done, or failed instances retried later; "more" if instances were
        added while we sent (checked in the same transaction that would close the job)."""
        job_id = job["id"]
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute("SELECT state, attempts, max_attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != jobs.RUNNING:
                return "stopped"  # cancelled meanwhile
            if conn.execute(
                "SELECT 1 FROM job_items WHERE job_id = ? AND state = 'pending' LIMIT 1", (job_id,)
            ).fetchone():
                return "more"
            if not failed:
                jobs.succeeded(conn, job_id, now)  # clears an earlier attempt's error
                log.info("queue: job %d (%s to %s) done", job_id, job["study_uid"], job["destination"])
                return "done"
            first_uid, first_error = next(iter(failed.items()))
            error = f"{len(failed)} instance(s) not stored by {job['destination']}; {first_uid}: {first_error}"
            self._schedule(conn, [(job_id, row["attempts"], row["max_attempts"])], error, now)
            conn.execute(
                "UPDATE job_items SET state = 'pending' WHERE job_id = ? AND state = 'failed' AND ? < ?",
                (job_id, row["attempts"], row["max_attempts"]),
            )
        return "failed"

    def _interrupted(self, job: dict) -> None:
        """Stopped at an instance boundary: by a cancel (leave it) or by the node stopping (pending
        again, and this attempt does not count)."""
        if not self._stop.is_set():
            log.info("queue: job %d cancelled", job["id"])
            return
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = max(attempts - 1, 0), next_attempt_at = ?,"
                " updated_at = ? WHERE id = ? AND state = 'running'",
                (time.time(), time.time(), job["id"]),
            )

    def _attempt_failed(self, job: dict, error: str, whole_destination: bool) -> None:
        """The attempt failed for this job and, if no association could be opened at all, for every
        other due job to the same destination (they would fail the same way)."""
        now = time.time()
        with self._transaction() as conn:
            conn.execute("UPDATE job_items SET state = 'pending' WHERE job_id = ? AND state = 'failed'", (job["id"],))
            rows = [
                tuple(r)
                for r in conn.execute(
                    "SELECT id, attempts, max_attempts FROM jobs WHERE id = ? AND state = 'running'", (job["id"],)
                )
            ]
            if whole_destination:  # the due jobs not yet claimed (never one another thread is sending)
                rows += [
                    (r[0], r[1] + 1, r[2])
                    for r in conn.execute(
                        "SELECT id, attempts, max_attempts FROM jobs WHERE kind = 'forward' AND destination = ?"
                        " AND state = 'pending' AND coalesce(next_attempt_at, 0) <= ?",
                        (job["destination"], now),
                    )
                ]
                conn.executemany("UPDATE jobs SET attempts = ? WHERE id = ?", [(a, i) for i, a, _ in rows])
            self._schedule(conn, rows, error, now)
        log.warning(
            "queue: forward to %s failed (job %d, attempt %d of %d): %s",
            job["destination"],
            job["id"],
            job["attempts"],
            job["max_attempts"],
            error,
        )

    def _schedule(self, conn, rows: list[tuple[int, int, int]], error: str, now: float) -> None:
        """Failed attempts: back to pending after the backoff, or failed once attempts are used up."""
        for job_id, attempts, max_attempts in rows:
            if attempts >= max_attempts:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', next_attempt_at = NULL, last_error = ?, updated_at = ?"
                    " WHERE id = ?",
                    (error, now, job_id),
                )
            else:
                delay = jobs.backoff(attempts, self.config.backoff_base, self.config.backoff_max)
                conn.execute(
                    "UPDATE jobs SET state = 'pending', next_attempt_at = ?, last_error = ?, updated_at = ?"
                    " WHERE id = ?",
                    (now + delay, error, now, job_id),
                )
