"""Group commit: one thread fsyncs the folders and commits the index rows of every waiting instance.

Each association thread has already fsynced its file; it hands the row over and waits. The thread
takes everything queued, fsyncs each distinct folder once (making the renames durable), commits all
rows in one transaction, and only then wakes the waiters, who may answer 0x0000. With one sender this
is one folder fsync and one commit per instance; with several, the cost is shared.

Auto-routing happens in the same transaction: each written instance that a route matches gets its
forward queued with its row, so a crash can lose neither without the other.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from storage.index import queue as job_queue
from storage.index.database import Index, InstanceRecord
from storage.index.routes import Router

from .pool import fsync_dir

log = logging.getLogger(__name__)

_STOP = object()
MAX_BATCH = 256


@dataclass
class Pending:
    """One instance whose file is durable and whose index row is not yet."""

    record: InstanceRecord
    folder: Path
    keep_existing: bool  # duplicates policy `keep`: an indexed copy wins and this row is not written
    dataset: Dataset | None = None  # as parsed at ingest: what routes match on
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    previous: tuple | None = None  # (pool, path, size) of the row that was there when we committed
    written: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the commit did: wrote the row (replacing `previous`, if any) or kept `previous`."""

    written: bool
    previous: tuple | None


class GroupCommitter:
    def __init__(self, index: Index, lock_path: Path, max_attempts: int = 10):
        self._index = index
        self._router = Router()  # this process's compiled routes, re-read when they change
        self._max_attempts = max_attempts  # of the forward jobs that routes queue
        # Worker processes take turns through this lock instead of SQLite's busy handler, which
        # sleeps whole milliseconds between retries; flock wakes the next writer at once.
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit(
        self, record: InstanceRecord, folder: Path, keep_existing: bool, dataset: Dataset | None = None
    ) -> Outcome:
        """Block until the row is committed; raise what made it fail.

        Duplicates are settled here, inside the transaction, so two associations (or two worker
        processes) storing the same SOP Instance UID at once still leave exactly one row.
        """
        item = Pending(record, folder, keep_existing, dataset)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return Outcome(item.written, item.previous)

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        os.close(self._lock_fd)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[Pending]) -> None:
        try:
            for folder in {item.folder for item in batch}:
                fsync_dir(folder)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._write_rows(batch)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except Exception as err:  # noqa: BLE001 - isolate the failing row, fail only it
            if len(batch) == 1:
                batch[0].error = err
            else:
                log.warning("group commit of %d rows failed (%s); committing one by one", len(batch), err)
                for item in batch:
                    self._commit_batch([item])
                return
        for item in batch:
            item.done.set()

    def _write_rows(self, batch: list[Pending]) -> None:
        with self._index.transaction() as conn:
            self._router.refresh(conn)  # one small read per batch; recompiles only after routes.* changes
            forwards = []
            for item in batch:
                item.previous = self._index.location(conn, item.record.sop_uid)
                item.written = item.previous is None or not item.keep_existing
                if item.written:
                    self._index.put_instances(conn, [item.record])
                    if self._router.routes:
                        inst = item.record.instance
                        for destination in self._router.destinations(item.dataset, inst["source_ae"]):
                            forwards.append((inst["study_uid"], inst["sop_uid"], inst["size"], destination))
            if forwards:
                job_queue.enqueue_routed(conn, forwards, self._max_attempts)
