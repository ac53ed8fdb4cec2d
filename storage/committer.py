"""Group commit: one thread fsyncs the folders and commits the index rows of every waiting instance.

Each association thread has already fsynced its file; it hands the row over and waits. The thread
takes everything queued, fsyncs each distinct folder once (making the renames durable), commits all
rows in one transaction, and only then wakes the waiters, who may answer 0x0000. With one sender this
is one folder fsync and one commit per instance; with several, the cost is shared.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .index import Index, InstanceRecord
from .pools import fsync_dir

log = logging.getLogger(__name__)

_STOP = object()
MAX_BATCH = 256


@dataclass
class Pending:
    """One instance whose file is durable and whose index row is not yet."""

    record: InstanceRecord
    folder: Path
    keep_existing: bool  # duplicates policy `keep`: an indexed copy wins and this row is not written
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
    def __init__(self, index: Index, lock_path: Path):
        self._index = index
        # Worker processes take turns through this lock instead of SQLite's busy handler, which
        # sleeps whole milliseconds between retries; flock wakes the next writer at once.
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit(self, record: InstanceRecord, folder: Path, keep_existing: bool) -> Outcome:
        """Block until the row is committed; raise what made it fail.

        Duplicates are settled here, inside the transaction, so two associations (or two worker
        processes) storing the same SOP Instance UID at once still leave exactly one row.
        """
        item = Pending(record, folder, keep_existing)
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
            for item in batch:
                item.previous = self._index.location(conn, item.record.sop_uid)
                item.written = item.previous is None or not item.keep_existing
                if item.written:
                    self._index.put_instances(conn, [item.record])
