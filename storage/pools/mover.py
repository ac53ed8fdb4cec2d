"""Moving instances between pools: copy to a staged temp file, syncfs, re-read and verify, commit, delete the source."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from storage.index import jobs
from storage.uids import instance_path

from .pool import TEMP_SUFFIX, Pool, ensure_dir, fsync_dir

if TYPE_CHECKING:
    from .context import PoolsContext
    from .plan import Move

log = logging.getLogger(__name__)

# A batch is copied, then committed in one transaction, then its sources deleted. Bounded so a
# stop request or a crash never has much uncommitted work, and memory stays small.
BATCH_INSTANCES = 64
BATCH_BYTES = 256 << 20
# Copies overlap: reads, O_DIRECT writes, fsyncs and SHA-256 all release the GIL.
COPY_THREADS = 4


class Mover:
    """Moves instances batch by batch: copy and verify, commit the new locations, then delete the sources.

    The order is what makes a crash harmless. Before the commit the index points at the sources
    and the new copies are un-indexed extras (temp files, or complete files recovery deletes
    because their instance is indexed elsewhere). After it the index points at copies that were
    fsynced and re-read with the right checksum, and the sources are the extras. No step deletes
    the copy the index points at."""

    def __init__(self, node: PoolsContext, job_id: int, touch: bool):
        self.node = node
        self.job_id = job_id
        self.touch = touch
        # The group committers of the worker processes take turns through this lock; so do we.
        self._lock_fd = os.open(
            node.config.index.with_suffix(".writelock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640
        )
        self._executor = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="migrate")
        # Sources are deleted while the next batch copies: once committed they are extras, and
        # a crash before their deletion leaves them to recovery. One thread: unlinks in one
        # folder serialise on it anyway.
        self._deleter = ThreadPoolExecutor(1, thread_name_prefix="migrate-delete")
        self.moved = self.moved_bytes = self.failed = 0
        self.errors: list[str] = []

    def close(self) -> None:
        self._executor.shutdown()
        self._deleter.shutdown()
        os.close(self._lock_fd)

    def move_study(self, move: Move, stop: threading.Event | None) -> None:
        src, dst = self.node.placement.pool(move.source), self.node.placement.pool(move.target)
        rows = (
            self.node.index.connection()
            .execute(
                "SELECT sop_uid, study_uid, path, size, sha256 FROM instances"
                " WHERE study_uid=? AND pool=? ORDER BY path",
                (move.study_uid, move.source),
            )
            .fetchall()
        )
        batch: list = []
        batch_bytes = 0
        for row in rows:
            if batch and (len(batch) >= BATCH_INSTANCES or batch_bytes + row["size"] > BATCH_BYTES):
                if stop is not None and stop.is_set():
                    return
                self._move_batch(src, dst, batch)
                batch, batch_bytes = [], 0
            batch.append(row)
            batch_bytes += row["size"]
        if batch and not (stop is not None and stop.is_set()):
            self._move_batch(src, dst, batch)

    def _move_batch(self, src: Pool, dst: Pool, rows: list) -> None:
        # Stage every copy as a temp file, make the whole batch durable with one syncfs (an fsync
        # per file costs more than half the throughput), re-read each from the disk, and only
        # then give it its name. A crash before the rename leaves temp files (removed at
        # startup); after it, complete verified copies that recovery removes as extras.
        staged = list(self._executor.map(lambda r: _stage(src, dst, r), rows))
        try:
            _syncfs(dst.root)
        except OSError as err:
            for _row, tmp, _rel, _err in staged:
                if tmp is not None:
                    _unlink(tmp)
            staged = [(row, None, None, f"cannot sync pool {dst.name}: {err.strerror}") for row, *_ in staged]
        results = list(self._executor.map(lambda item: _verify_staged(dst, *item), staged))
        copied = [(row, rel) for row, rel, _ in results if rel is not None]
        errors = [f"{row['sop_uid']}: {err}" for row, rel, err in results if err is not None]
        committed, stale = [], []
        try:
            for folder in {dst.file(rel).parent for _, rel in copied}:
                fsync_dir(folder)  # the copies' names are durable before any row points at them
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                with self.node.index.transaction() as conn:
                    now = time.time()
                    for row, rel in copied:
                        # Guarded: if ingest replaced the row (duplicates: overwrite) while we copied,
                        # the row is theirs and our copy is an extra.
                        sql = "UPDATE instances SET pool=?, path=?" + (", last_access=?" if self.touch else "")
                        args = [dst.name, rel] + ([now] if self.touch else [])
                        n = conn.execute(
                            sql + " WHERE sop_uid=? AND pool=? AND path=? AND sha256=?",
                            (*args, row["sop_uid"], src.name, row["path"], row["sha256"]),
                        ).rowcount
                        (committed if n == 1 else stale).append((row, rel))
                    jobs.progress(
                        conn,
                        self.job_id,
                        done=len(committed),
                        failed=len(errors),
                        nbytes=sum(r["size"] for r, _ in committed),
                        errors=errors,
                    )
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except Exception as err:  # noqa: BLE001 - nothing committed: the copies are the extras
            for _row, rel in copied:
                _unlink(dst.file(rel))
            self.failed += len(rows)
            self.errors.append(f"commit of {len(copied)} moved instances failed: {err}")
            log.error("migration: commit failed, sources kept: %s", err)
            return
        # The index now points at the verified copies; the sources are extras from here on.
        self._deleter.submit(
            _delete, [src.file(row["path"]) for row, _ in committed] + [dst.file(rel) for _, rel in stale]
        )
        self.moved += len(committed)
        self.moved_bytes += sum(r["size"] for r, _ in committed)
        self.failed += len(errors)
        self.errors.extend(errors)
        for line in errors:
            log.error("migration %s -> %s: %s", src.name, dst.name, line)


def _stage(src: Pool, dst: Pool, row) -> tuple:
    """Copy one instance into a temp file in its target folder: (row, temp path, new path, None) or
    (row, None, None, why). The source must match its checksum: a corrupt copy is never spread."""
    try:
        with open(src.file(row["path"]), "rb") as fh:
            data = fh.read()
    except OSError as err:
        return row, None, None, f"cannot read the copy in pool {src.name}: {err.strerror}"
    if len(data) != row["size"] or hashlib.sha256(data).hexdigest() != row["sha256"]:
        return (
            row,
            None,
            None,
            (f"the copy in pool {src.name} does not match its checksum (corrupt); not migrated, left where it is"),
        )
    rel = instance_path(row["study_uid"], row["sop_uid"])  # a new name: never an indexed file's
    final = dst.file(rel)
    tmp = final.parent / f".{secrets.token_hex(8)}{TEMP_SUFFIX}"
    try:
        ensure_dir(final.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as err:
        _unlink(tmp)
        return row, None, None, f"cannot write to pool {dst.name}: {err.strerror}"
    return row, tmp, rel, None


def _verify_staged(dst: Pool, row, tmp, rel, error) -> tuple:
    """Re-read a synced temp copy from the disk; if it matches, give it its final name."""
    if error is not None:
        return row, None, error
    try:
        digest = sha256_file(tmp, from_disk=True)
    except OSError as err:
        digest = f"unreadable ({err.strerror})"
    if digest != row["sha256"]:
        _unlink(tmp)
        return row, None, f"the new copy in pool {dst.name} failed verification ({digest}); source kept"
    try:
        os.replace(tmp, dst.file(rel))
    except OSError as err:
        _unlink(tmp)
        return row, None, f"cannot rename the copy in pool {dst.name}: {err.strerror}"
    return row, rel, None


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path) -> None:
    """Flush the whole filesystem holding `path` (what `sync` does, for one filesystem)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def sha256_file(path, from_disk: bool = False) -> str:
    """SHA-256 of a file. `from_disk`: drop its (clean, already synced) pages from the page cache
    first, so the bytes hashed are the ones the disk holds, not the ones we just wrote."""
    with open(path, "rb") as fh:
        if from_disk:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _delete(paths: list) -> None:
    for path in paths:
        _unlink(path)
    for folder in {p.parent for p in paths}:
        try:
            fsync_dir(folder)
        except OSError:
            pass


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
