"""Take one backup into a folder, online: snapshot the index, copy every file it lists (checking each against
the index's SHA-256), hard-link what the previous backup already holds, write the manifest last."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from storage.index.database import Index
from storage.pools.pool import ensure_dir, fsync_dir

from .layout import (
    CONFIG,
    INDEX,
    INSTANCES,
    PARTIAL,
    BackupError,
    Entry,
    Manifest,
    backup_id,
    file_name,
    read_entries,
    read_manifest,
    sha256_file,
    write_manifest,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 20
FOLLOW_TRIES = 5  # a row can move again while it is followed (a migration and a recall); then give up
# progress(instances_done, bytes_done) is called at most this often: one index write per call.
PROGRESS_EVERY = 0.5
WINDOW = 16  # files handed to the two copy threads at a time


@dataclass(frozen=True)
class Source:
    """Where an instance's bytes are, per the snapshot (or the live index, once followed)."""

    sop_uid: str
    study_uid: str
    series_uid: str
    pool: str
    path: str
    size: int
    sha256: str


class Stopped(BackupError):
    """The backup was asked to stop (the node is shutting down); its partial folder stays incomplete."""


def snapshot_index(index_path: Path, dest: Path) -> None:
    """A consistent copy of the live index through sqlite3's backup API, in one step (one read transaction),
    while other processes keep writing; the copy is a single file (journal_mode=DELETE)."""
    src = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def complete_backups(root: Path) -> list[tuple[Path, Manifest]]:
    """The complete backups in a target folder, oldest first."""
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.endswith(PARTIAL):
            try:
                out.append((folder, read_manifest(folder)))
            except BackupError:
                continue
    return sorted(out, key=lambda fm: fm[1].finished_at)


def _link_and_hash(src: Path, dest: Path) -> tuple[int, str]:
    """Hard-link a pool file into the backup (pool files are never changed in place: a new write is a new
    name, so the link holds these exact bytes even if a migration deletes the pool's name), then hash it."""
    os.link(src, dest)
    h = hashlib.sha256()
    size = 0
    with open(dest, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _copy(src: Path, dest: Path) -> tuple[int, str]:
    """Copy and hash in one pass. Returns (size, sha256) of what was read. Not fsynced here: one sync()
    before the manifest flushes them all (one fsync per file cost 4 ms each, as much as the copy itself)."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(CHUNK):
            h.update(block)
            fout.write(block)
            size += len(block)
    return size, h.hexdigest()


class _Taker:
    def __init__(self, config, index: Index, root: Path, work: Path, previous, stop, progress, from_pools: bool):
        self.from_pools = from_pools  # hard-link pool files instead of copying them (a restic staging folder)
        self.config = config
        self.index = index
        self.work = work
        self.pools = {p.name: p.path for p in config.pools}
        self.previous_folder, self.previous = previous
        self.stop = stop
        self.progress = progress
        self.counts = {"copied": 0, "copied_bytes": 0, "linked": 0, "followed": 0, "gone": 0}
        self.instances = 0
        self.bytes = 0
        self._made: set[Path] = set()
        self._reported = 0.0
        self._lock = threading.Lock()  # the counts and the folders made, shared by the two copy threads
        self._work_str = str(work)
        self._previous_str = str(self.previous_folder) if self.previous_folder is not None else ""
        self._made_rel: set[str] = set()  # folders made by _linked_now (main thread only)

    def _folder(self, dest: Path) -> None:
        parent = dest.parent
        if parent not in self._made:
            os.makedirs(parent, mode=0o750, exist_ok=True)  # flushed by the one sync() before the manifest
            with self._lock:
                self._made.add(parent)

    def _count(self, **add: int) -> None:
        with self._lock:
            for key, n in add.items():
                self.counts[key] += n

    def _link(self, source: Source, dest: Path) -> bool:
        prev = self.previous.get(source.sop_uid)
        if prev is None or prev.sha256 != source.sha256 or self.previous_folder is None:
            return False
        try:
            os.link(self.previous_folder / prev.file, dest)
        except OSError:  # the previous file is gone, or links are not supported there: copy instead
            return False
        self._count(linked=1)
        return True

    def _read(self, src: Path, dest: Path) -> tuple[int, str]:
        if self.from_pools:
            try:
                return _link_and_hash(src, dest)
            except FileNotFoundError:
                raise
            except OSError:  # another filesystem, or no links there: copy from now on
                self.from_pools = False
        return _copy(src, dest)

    def _live(self, sop_uid: str) -> Source | None:
        row = (
            self.index.connection()
            .execute(
                "SELECT sop_uid, study_uid, series_uid, pool, path, size, sha256 FROM instances WHERE sop_uid=?",
                (sop_uid,),
            )
            .fetchone()
        )
        return None if row is None else Source(*row)

    def take(self, source: Source, dest: Path) -> Source | None:
        """The instance's bytes into dest: linked, copied, or followed to where a migration or an overwrite
        put them. Returns the source the bytes came from, or None if the instance was deleted meanwhile."""
        if self._link(source, dest):
            return source
        current = source
        for _ in range(FOLLOW_TRIES):
            pool = self.pools.get(current.pool)
            if pool is None:
                raise BackupError(f"instance {current.sop_uid}: pool {current.pool!r} is not in node.yaml")
            try:
                size, sha = self._read(pool / current.path, dest)
            except FileNotFoundError:
                size, sha = None, None
            if sha == current.sha256 and size == current.size:
                self._count(copied=1, copied_bytes=size)  # or linked from the pool (restic): read and checked
                return current
            # Moved (a migration deleted the source after updating the row) or replaced (an overwrite):
            # what the live index says now is what the node holds.
            live = self._live(current.sop_uid)
            if live is None:
                _unlink(dest)
                self._count(gone=1)
                return None
            if live == current:
                _unlink(dest)
                raise BackupError(
                    f"instance {current.sop_uid}: {pool / current.path} does not match the index "
                    f"(size {size}, sha256 {sha}; the index says {current.size}, {current.sha256}): "
                    "the file is damaged; pacsdeck node verify checks every file"
                )
            _unlink(dest)  # what was read there is not the instance's: read it again from where it went
            current = live
            self._count(followed=1)
        raise BackupError(f"instance {source.sop_uid} kept moving while the backup read it; run the backup again")

    def _linked_now(self, row) -> tuple[Source, Source, str] | None:
        """The hard link to the previous backup's copy, if it holds these bytes. Plain strings here, not
        Paths: this runs once per instance the node holds, and is most of an incremental backup's time."""
        source = Source(*row)
        prev = self.previous.get(source.sop_uid)
        if prev is None or prev.sha256 != source.sha256 or self.previous_folder is None:
            return None
        rel = file_name(source.study_uid, source.sop_uid)
        folder = rel.rpartition("/")[0]
        if folder not in self._made_rel:
            os.makedirs(os.path.join(self._work_str, folder), mode=0o750, exist_ok=True)
            self._made_rel.add(folder)
        try:
            os.link(os.path.join(self._previous_str, prev.file), os.path.join(self._work_str, rel))
        except OSError:  # the previous file is gone, or links are not supported there: copy instead
            return None
        self._count(linked=1)
        return source, source, rel

    def _one(self, row) -> tuple[Source, Source | None, str]:
        source = Source(*row)
        rel = file_name(source.study_uid, source.sop_uid)
        dest = self.work / rel
        self._folder(dest)
        return source, self.take(source, dest), rel

    def run(self, snapshot: sqlite3.Connection) -> None:
        rows = snapshot.execute(
            "SELECT sop_uid, study_uid, series_uid, pool, path, size, sha256 FROM instances ORDER BY study_uid, sop_uid"
        ).fetchall()
        # Two files at a time: reading, hashing and writing overlap (hashlib and file IO release the GIL),
        # in windows small enough that a stop request or a progress report waits for a few files only.
        with open(self.work / INSTANCES, "w", encoding="utf-8") as out, ThreadPoolExecutor(2) as pool:
            for start in range(0, len(rows), WINDOW):
                if self.stop is not None and self.stop.is_set():
                    raise Stopped("the backup was stopped before it finished; it is left incomplete")
                # A file the previous backup holds unchanged is a hard link, made here: a thread would cost
                # more than the link (3800 links took 0.4 s through the pool, 0.1 s without it).
                window = [self._linked_now(row) or pool.submit(self._one, row) for row in rows[start : start + WINDOW]]
                for item in window:
                    source, got, rel = item.result() if isinstance(item, Future) else item
                    if got is None:
                        snapshot.execute("DELETE FROM instances WHERE sop_uid=?", (source.sop_uid,))
                        continue
                    if got != source:
                        snapshot.execute(
                            "UPDATE instances SET pool=?, path=?, size=?, sha256=? WHERE sop_uid=?",
                            (got.pool, got.path, got.size, got.sha256, got.sop_uid),
                        )
                    out.write(_line(Entry(got.sop_uid, got.study_uid, got.series_uid, rel, got.size, got.sha256)))
                    self.instances += 1
                    self.bytes += got.size
                    self._report()
        snapshot.commit()
        self._report(force=True)

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._reported >= PROGRESS_EVERY):
            self._reported = now
            self.progress(self.instances, self.bytes)


def _line(entry: Entry) -> str:
    return json.dumps(entry.__dict__, sort_keys=True) + "\n"


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def take_dir(
    config,
    index: Index,
    target,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    root: Path | None = None,
    from_pools: bool = False,
) -> tuple[Path, Manifest]:
    """One complete backup in `target.path/<id>`; while it is written the folder is `<id>.partial`, and it is
    renamed only after the manifest, so a backup killed at any point is never taken for a complete one.
    `root` and `from_pools`: a restic target's staging folder, its files hard-linked from the pools."""
    root = Path(root if root is not None else target.path)
    try:
        ensure_dir(root)
    except OSError as err:
        raise BackupError(f"backup target {target.name}: cannot create {root}: {err.strerror}") from None
    started = time.time()
    bid = backup_id(config.ae_title, started)
    n = 1
    while (root / bid).exists() or (root / (bid + PARTIAL)).exists():  # two in one second
        n += 1
        bid = f"{backup_id(config.ae_title, started)}-{n}"
    work = root / (bid + PARTIAL)
    work.mkdir(mode=0o750)
    fsync_dir(root)
    done = complete_backups(root)
    previous = (done[-1][0], {e.sop_uid: e for e in read_entries(done[-1][0])}) if done else (None, {})

    snapshot_index(index.path, work / INDEX)
    shutil.copyfile(config.path, work / CONFIG)
    with open(work / CONFIG, "rb+") as f:
        os.fsync(f.fileno())
    taker = _Taker(config, index, root, work, previous, stop, progress, from_pools)
    snapshot = sqlite3.connect(work / INDEX)
    try:
        taker.run(snapshot)
    finally:
        snapshot.close()
    # Every file, folder and the instance list on disk before the manifest says the backup is whole: one
    # sync() (as `cp -a` then `sync`), not an fsync per file; the manifest itself is then fsynced.
    os.sync()
    manifest = Manifest(
        id=bid,
        target=target.name,
        kind=target.kind,
        ae_title=config.ae_title,
        started_at=started,
        finished_at=time.time(),
        instances=taker.instances,
        bytes=taker.bytes,
        previous=previous[0].name if previous[0] is not None else None,
        instances_sha256=sha256_file(work / INSTANCES),
        index_sha256=sha256_file(work / INDEX),
        **taker.counts,
    )
    write_manifest(work, manifest)
    final = root / bid
    os.rename(work, final)
    fsync_dir(root)
    log.info(
        "backup %s to %s: %d instances, %d bytes (%d copied, %d linked, %d followed, %d gone) in %.1f s",
        bid,
        target.name,
        manifest.instances,
        manifest.bytes,
        manifest.copied,
        manifest.linked,
        manifest.followed,
        manifest.gone,
        manifest.finished_at - started,
    )
    return final, manifest
