"""Migration between pools: plan by rule (age, watermark) or request, move whole studies safely, verify, recall."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from storage.index import jobs
from storage.uids import instance_path

from .pool import TEMP_SUFFIX, Pool, ensure_dir, fsync_dir

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig

    from .context import PoolsContext

log = logging.getLogger(__name__)

LOCK_NAME = "migration.lock"  # in the node folder: held by whoever moves files between pools
VERIFY_LOCK_NAME = "verify.lock"  # in the node folder: held (shared) by every running verification
# A batch is copied, then committed in one transaction, then its sources deleted. Bounded so a
# stop request or a crash never has much uncommitted work, and memory stays small.
BATCH_INSTANCES = 64
BATCH_BYTES = 256 << 20
# Copies overlap: reads, O_DIRECT writes, fsyncs and SHA-256 all release the GIL.
COPY_THREADS = 4


class MigrationBusy(RuntimeError):
    """Another process or thread is migrating on this node right now."""


@contextmanager
def migration_lock(config: NodeConfig, wait: bool = False) -> Iterator[None]:
    """Exclusive right to move files between pools (an flock, so a dead holder releases it).

    Startup recovery takes it too: it must never mistake a running migration's fresh copies for
    crash leftovers."""
    fd = os.open(config.node_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise MigrationBusy(f"a migration is already running on {config.node_dir}") from None
        yield
    finally:
        os.close(fd)


@contextmanager
def verification(node: PoolsContext) -> Iterator[None]:
    """Held (shared) while a verification runs, by whatever process runs it. Whoever gets it alone
    knows that no verification runs, so a verify job still `running` is one whose process died:
    it is marked failed, as migrations mark theirs."""
    fd = os.open(node.config.node_dir / VERIFY_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            jobs.interrupt_stale(node.index, "verify")
        except BlockingIOError:  # other verifications run: their jobs are not stale
            pass
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Move:
    """One study's instances in one pool, to go to another pool, and why."""

    study_uid: str
    source: str
    target: str
    instances: int
    bytes: int
    reason: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(
    node: PoolsContext, *, study_uids: list[str] | None = None, target: str | None = None, now: float | None = None
) -> tuple[list[Move], list[dict]]:
    """What a migration would move, and what it would have to skip (with why). Changes nothing.

    With `study_uids` those studies go to `target` (default: the next tier with room). Without,
    the rules apply: first every pool above its high watermark sheds its least-recently-accessed
    studies until it would be under its low watermark, then the age rules in their order.
    """
    placement = node.placement
    conn = node.index.connection()
    now = time.time() if now is None else now
    moves: list[Move] = []
    skipped: list[dict] = []
    planned: set[tuple[str, str]] = set()
    room: dict[str, int] = {}

    def add(move: Move) -> bool:
        if (move.study_uid, move.source) in planned:
            return True
        if move.target not in room:
            try:
                room[move.target] = placement.space(placement.pool(move.target)).room
            except OSError:
                room[move.target] = 0
        if room[move.target] < move.bytes:
            skipped.append(
                {
                    "study_uid": move.study_uid,
                    "source": move.source,
                    "target": move.target,
                    "bytes": move.bytes,
                    "why": f"pool {move.target} has no room for it ({room[move.target]} bytes left above its reserve)",
                    "rule": move.reason,
                }
            )
            return False
        room[move.target] -= move.bytes
        planned.add((move.study_uid, move.source))
        moves.append(move)
        return True

    if study_uids is not None:
        for uid in study_uids:
            rows = conn.execute(
                "SELECT pool, count(*), sum(size) FROM instances WHERE study_uid=? GROUP BY pool", (uid,)
            ).fetchall()
            if not rows:
                skipped.append({"study_uid": uid, "why": "no such study"})
            for pool_name, count, size in rows:
                dest = target
                if dest is None:
                    source = placement.pool(pool_name)
                    later = placement.candidates(size, tiers_after=source.tier)[0] if source else []
                    if not later:
                        skipped.append({"study_uid": uid, "source": pool_name, "why": "no later tier has room"})
                        continue
                    dest = later[0].name
                if pool_name != dest:
                    add(Move(uid, pool_name, dest, count, size, "requested"))
        return moves, skipped

    for pool in placement.in_tier_order():
        cfg = placement.configs.get(pool.name)
        if cfg is None or cfg.high_watermark is None:
            continue
        try:
            space = placement.space(pool)
        except OSError:
            continue
        if space.used_percent <= cfg.high_watermark:
            continue
        targets = placement.candidates(1, tiers_after=pool.tier)[0]
        if not space.logical:  # filesystem figures: moving to the same filesystem frees nothing
            targets = [t for t in targets if os.stat(t.root).st_dev != space.device]
        if not targets:
            skipped.append(
                {
                    "source": pool.name,
                    "why": f"above its high watermark ({space.used_percent:.1f}% >"
                    f" {cfg.high_watermark:g}%) but no later tier has room on another filesystem",
                }
            )
            continue
        to_free = space.used - int(space.capacity * cfg.low_watermark / 100)
        freed = 0
        for uid, count, size, last in conn.execute(
            "SELECT study_uid, count(*), sum(size), max(last_access) FROM instances WHERE pool=?"
            " GROUP BY study_uid ORDER BY max(last_access), study_uid",
            (pool.name,),
        ):
            if freed >= to_free:
                break
            reason = (
                f"watermark: {pool.name} at {space.used_percent:.1f}% (high {cfg.high_watermark:g}%,"
                f" low {cfg.low_watermark:g}%); least recently accessed, last {_iso(last)}"
            )
            if not add(Move(uid, pool.name, targets[0].name, count, size, reason)):
                break
            freed += size

    for i, rule in enumerate(node.config.migration.rules):
        column = "last_access" if rule.since == "last_access" else "received_at"
        cutoff = now - rule.after_days * 86400
        for uid, count, size, last in conn.execute(
            f"SELECT study_uid, count(*), sum(size), max({column}) FROM instances WHERE pool=?"
            f" GROUP BY study_uid HAVING max({column}) <= ? ORDER BY max({column}), study_uid",
            (rule.source, cutoff),
        ):
            what = "last accessed" if rule.since == "last_access" else "received"
            reason = (
                f"age: {what} {(now - last) / 86400:.1f} days ago; migration.rules[{i}] moves"
                f" {rule.source} to {rule.target} after {rule.after_days:g} days"
            )
            if not add(Move(uid, rule.source, rule.target, count, size, reason)):
                break
    return moves, skipped


def migrate(
    node: PoolsContext,
    *,
    study_uids: list[str] | None = None,
    target: str | None = None,
    dry_run: bool = True,
    stop: threading.Event | None = None,
    wait: bool = False,
    touch: bool = False,
) -> dict:
    """Plan (dry run) or run a migration; the result is a JSON-ready report.

    Raises ValueError for a bad request and MigrationBusy when another migration holds the lock
    (unless `wait`). `stop` ends the run between batches; `touch` sets the moved instances' last
    access to now (a recall is an access)."""
    if target is not None and node.placement.pool(target) is None:
        raise ValueError(f"target: no pool named {target!r}")
    started = time.monotonic()
    if dry_run:
        moves, skipped = plan(node, study_uids=study_uids, target=target)
        return _report(moves, skipped, dry_run=True)
    with migration_lock(node.config, wait=wait):
        jobs.interrupt_stale(node.index, "migrate")
        moves, skipped = plan(node, study_uids=study_uids, target=target)
        report = _report(moves, skipped, dry_run=False)
        if not moves:
            return report
        reasons = sorted({m.reason.split(":")[0] for m in moves})
        job_id = jobs.create(
            node.index,
            "migrate",
            ", ".join(reasons),
            {"study_uids": study_uids, "target": target},
            instances_total=report["instances"],
            bytes_total=report["bytes"],
        )
        mover = _Mover(node, job_id, touch)
        try:
            for move in moves:
                if stop is not None and stop.is_set():
                    break
                mover.move_study(move, stop)
        finally:
            mover.close()
        interrupted = stop is not None and stop.is_set()
        # Stopped by a shutdown: cancelled, not failed; the next run re-plans what is left.
        state = jobs.CANCELLED if interrupted else (jobs.FAILED if mover.failed else jobs.DONE)
        jobs.finish(
            node.index,
            job_id,
            state,
            "stopped: the node shut down; the next run re-plans what is left"
            if interrupted
            else (mover.errors[0] if mover.errors else None),
        )
    seconds = time.monotonic() - started
    report.update(
        job_id=job_id,
        state=state,
        moved_instances=mover.moved,
        moved_bytes=mover.moved_bytes,
        failed_instances=mover.failed,
        errors=mover.errors[: jobs.MAX_ERRORS],
        seconds=round(seconds, 3),
        mb_per_s=round(mover.moved_bytes / 1e6 / seconds, 1) if seconds > 0 else None,
    )
    log.info(
        "migration job %d %s: %d instances, %d bytes moved, %d failed in %.1fs",
        job_id,
        state,
        mover.moved,
        mover.moved_bytes,
        mover.failed,
        seconds,
    )
    return report


def _report(moves: list[Move], skipped: list[dict], dry_run: bool) -> dict:
    return {
        "dry_run": dry_run,
        "plan": [asdict(m) for m in moves],
        "skipped": skipped,
        "studies": len({m.study_uid for m in moves}),
        "instances": sum(m.instances for m in moves),
        "bytes": sum(m.bytes for m in moves),
    }


class _Mover:
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


# --- verify and recall ---------------------------------------------------------------------------


def verify(node: PoolsContext, sample: int | None = 100, pool: str | None = None) -> dict:
    """Re-read `sample` random instances (None or 0: all) and compare size and SHA-256 with the index.

    Problems are reported (and kept in the job), never repaired silently: a corrupt copy stays
    where it is, and migration refuses to move it."""
    if pool is not None and node.placement.pool(pool) is None:
        raise ValueError(f"pool: no pool named {pool!r}")
    if sample is not None and sample < 0:
        raise ValueError("sample: must be 0 (all) or more")
    started = time.monotonic()
    sql = "SELECT sop_uid, study_uid, pool, path, size, sha256 FROM instances"
    args: list = []
    if pool is not None:
        sql += " WHERE pool=?"
        args.append(pool)
    if sample:
        sql += " ORDER BY random() LIMIT ?"
        args.append(sample)
    with verification(node):
        rows = node.index.connection().execute(sql, args).fetchall()
        job_id = jobs.create(
            node.index,
            "verify",
            "requested",
            {"sample": sample, "pool": pool},
            instances_total=len(rows),
            bytes_total=sum(r["size"] for r in rows),
        )
        try:
            return _verify_rows(node, job_id, rows, started)
        except BaseException as err:  # the job must not stay `running`: say what stopped it
            jobs.finish(node.index, job_id, jobs.FAILED, error=f"interrupted: {err or type(err).__name__}")
            raise


def _verify_rows(node: PoolsContext, job_id: int, rows: list, started: float) -> dict:
    """verify's work, once its job exists."""

    def check(row) -> dict | None:
        found = node.placement.pool(row["pool"])
        path = found.file(row["path"]) if found else None
        problem = {
            "sop_uid": row["sop_uid"],
            "study_uid": row["study_uid"],
            "pool": row["pool"],
            "path": row["path"],
            "expected_sha256": row["sha256"],
        }
        if path is None:
            return {**problem, "problem": "unknown_pool"}
        try:
            size = os.stat(path).st_size
            digest = sha256_file(path)
        except FileNotFoundError:
            return {**problem, "problem": "missing"}
        except OSError as err:
            return {**problem, "problem": "unreadable", "detail": err.strerror}
        if size != row["size"] or digest != row["sha256"]:
            return {
                **problem,
                "problem": "corrupt",
                "actual_sha256": digest,
                "size": size,
                "expected_size": row["size"],
            }
        return None

    with ThreadPoolExecutor(COPY_THREADS) as pool_exec:
        problems = [p for p in pool_exec.map(check, rows) if p is not None]
    for p in problems:
        log.error("verify: instance %s in pool %s is %s (%s)", p["sop_uid"], p["pool"], p["problem"], p["path"])
    with node.index.transaction() as conn:
        jobs.progress(
            conn,
            job_id,
            done=len(rows) - len(problems),
            failed=len(problems),
            nbytes=sum(r["size"] for r in rows),
            errors=[f"{p['sop_uid']} in {p['pool']}: {p['problem']}" for p in problems],
        )
    jobs.finish(node.index, job_id, jobs.FAILED if problems else jobs.DONE)
    return {
        "job_id": job_id,
        "checked": len(rows),
        "ok": len(rows) - len(problems),
        "problems": problems,
        "bytes": sum(r["size"] for r in rows),
        "seconds": round(time.monotonic() - started, 3),
    }


def recall_study(node: PoolsContext, study_uid: str, wait: bool = False) -> dict:
    """Copy a study's instances that live on later tiers back to the first tier with room."""
    placement = node.placement
    size = (
        node.index.connection()
        .execute("SELECT coalesce(sum(size), 0) FROM instances WHERE study_uid=?", (study_uid,))
        .fetchone()[0]
    )
    first = [p for p in placement.candidates(size)[0] if p.tier == placement.tiers[0]]
    if not first:
        return {"recalled": False, "why": f"the {placement.tiers[0]} tier has no room"}
    report = migrate(node, study_uids=[study_uid], target=first[0].name, dry_run=False, wait=wait, touch=True)
    return {"recalled": report.get("moved_instances", 0) > 0, **report}


def recall_on_access(node: PoolsContext, study_uid: str) -> threading.Thread | None:
    """For retrieve (C-MOVE/C-GET): when `migration.recall_on_access` is on and the study has
    instances on a later tier, copy it back to the first tier in a background thread. Returns the
    thread, or None when there is nothing to do. Never blocks the retrieve; a busy migration lock
    just skips this recall (the next access tries again)."""
    if not node.config.migration.recall_on_access:
        return None
    first_pools = [p.name for p in node.placement.pools if p.tier == node.placement.tiers[0]]
    marks = ", ".join("?" for _ in first_pools)
    elsewhere = (
        node.index.connection()
        .execute(
            f"SELECT 1 FROM instances WHERE study_uid=? AND pool NOT IN ({marks}) LIMIT 1", (study_uid, *first_pools)
        )
        .fetchone()
    )
    if elsewhere is None:
        return None

    def run() -> None:
        try:
            result = recall_study(node, study_uid)
            log.info("recall of study %s: %s", study_uid, result.get("why") or f"{result.get('moved_instances')} moved")
        except MigrationBusy:
            log.info("recall of study %s skipped: a migration is running", study_uid)
        except Exception:  # a background recall must never take the node down
            log.exception("recall of study %s failed", study_uid)
        finally:
            node.index.close()

    thread = threading.Thread(target=run, name=f"recall-{study_uid[:16]}", daemon=True)
    thread.start()
    return thread
