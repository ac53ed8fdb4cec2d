"""Backups as jobs: one at a time per node (an flock), each a `backup` job with progress, then retention."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from storage.index import jobs
from storage.index.database import Index

from . import restic
from .catalog import dir_backups
from .layout import BackupError, Manifest
from .retention import keep_set
from .take import take_dir

log = logging.getLogger(__name__)

LOCK_NAME = "backup.lock"  # in the node folder: held by whoever takes a backup


class BackupBusy(BackupError):
    """Another backup runs on this node now."""


@contextmanager
def backup_lock(config) -> Iterator[None]:
    fd = os.open(config.node_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupBusy("a backup is already running on this node; queue.list shows its job") from None
        yield
    finally:
        os.close(fd)


def target_of(config, name: str | None):
    if not config.backups:
        raise BackupError(
            "no backup target in node.yaml: add one, e.g. backups: [{name: usb, type: dir, path: /mnt/usb/pacs}]"
        )
    target = config.backup_target(name)
    if target is None:
        raise BackupError(f"no backup target {name!r}; node.yaml names {', '.join(t.name for t in config.backups)}")
    return target


@dataclass(frozen=True)
class BackupRun:
    job_id: int
    folder: str
    manifest: Manifest
    removed: tuple[str, ...]  # backups retention deleted after this one


def check_target(config, target_name: str | None):
    return target_of(config, target_name)


def run_backup(
    config,
    index: Index,
    target_name: str | None = None,
    *,
    reason: str = "manual",
    stop: threading.Event | None = None,
    job_id: int | None = None,
) -> BackupRun:
    """Take one backup of the node to the target (default: the first one) as a job; BackupError says why not.
    `job_id`: a job already created for this run (backups.run hands it to the process it starts)."""
    target = check_target(config, target_name)
    try:
        with backup_lock(config):
            return _run_locked(config, index, target, reason, stop, job_id)
    except BackupBusy as err:
        if job_id is not None:
            jobs.finish(index, job_id, jobs.FAILED, str(err))
        raise


def _run_locked(config, index: Index, target, reason: str, stop, job_id: int | None) -> BackupRun:
    jobs.interrupt_stale(index, "backup", keep=job_id)  # a backup job left running by a killed process
    if job_id is None:
        job_id = jobs.create(index, "backup", reason, {"target": target.name})
    reported = [0, 0]

    def progress(instances: int, nbytes: int) -> None:
        with index.transaction() as conn:
            jobs.progress(conn, job_id, done=instances - reported[0], nbytes=nbytes - reported[1])
        reported[:] = [instances, nbytes]

    try:
        if target.kind == "restic":
            where, manifest = restic.take_restic(config, index, target, stop=stop, progress=progress)
        else:
            folder, manifest = take_dir(config, index, target, stop=stop, progress=progress)
            where = str(folder)
    except Exception as err:
        jobs.finish(index, job_id, jobs.FAILED, str(err))
        raise
    jobs.finish(index, job_id, jobs.DONE)
    removed = restic.forget(config, target) if target.kind == "restic" else apply_retention(target)
    return BackupRun(job_id, where, manifest, removed)


def apply_retention(target) -> tuple[str, ...]:
    """Delete the complete backups the target's `keep` does not keep. The files of a deleted backup that later
    ones hard-link stay on disk for them: each backup restores alone."""
    complete = [b for b in dir_backups(target) if b.state == "complete"]
    kept = keep_set([(b.id, b.finished_at) for b in complete], target.keep)
    removed = []
    for b in complete:
        if b.id not in kept:
            shutil.rmtree(b.folder)
            removed.append(b.id)
            log.info("backup %s removed from %s by retention", b.id, target.name)
    return tuple(removed)
