"""Verification: re-read stored instances, compare size and SHA-256 with the index; report problems, never repair."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from storage.index import jobs

from .mover import COPY_THREADS, sha256_file

if TYPE_CHECKING:
    from .context import PoolsContext

log = logging.getLogger(__name__)

VERIFY_LOCK_NAME = "verify.lock"  # in the node folder: held (shared) by every running verification


@dataclass(frozen=True)
class Problem:
    """One instance whose file does not match the index."""

    sop_uid: str
    study_uid: str
    pool: str
    path: str
    expected_sha256: str
    problem: Literal["unknown_pool", "missing", "unreadable", "corrupt"]
    detail: str | None = None  # unreadable: the OS's reason (strerror, which may be None)
    # corrupt: what the file holds instead
    actual_sha256: str | None = None
    size: int | None = None
    expected_size: int | None = None


@dataclass(frozen=True)
class VerifyReport:
    """What one verification checked and found; its job keeps the same figures."""

    job_id: int
    checked: int
    ok: int
    problems: tuple[Problem, ...]
    bytes: int
    seconds: float


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


def verify(node: PoolsContext, sample: int | None = 100, pool: str | None = None) -> VerifyReport:
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


def _check(node: PoolsContext, row) -> Problem | None:
    """One instance's file against its row: None when size and SHA-256 match."""
    found = node.placement.pool(row["pool"])
    path = found.file(row["path"]) if found else None
    where = {
        "sop_uid": row["sop_uid"],
        "study_uid": row["study_uid"],
        "pool": row["pool"],
        "path": row["path"],
        "expected_sha256": row["sha256"],
    }
    if path is None:
        return Problem(**where, problem="unknown_pool")
    try:
        size = os.stat(path).st_size
        digest = sha256_file(path)
    except FileNotFoundError:
        return Problem(**where, problem="missing")
    except OSError as err:
        return Problem(**where, problem="unreadable", detail=err.strerror)
    if size != row["size"] or digest != row["sha256"]:
        return Problem(**where, problem="corrupt", actual_sha256=digest, size=size, expected_size=row["size"])
    return None


def _verify_rows(node: PoolsContext, job_id: int, rows: list, started: float) -> VerifyReport:
    """verify's work, once its job exists."""
    with ThreadPoolExecutor(COPY_THREADS) as pool_exec:
        problems = tuple(p for p in pool_exec.map(lambda row: _check(node, row), rows) if p is not None)
    for p in problems:
        log.error("verify: instance %s in pool %s is %s (%s)", p.sop_uid, p.pool, p.problem, p.path)
    with node.index.transaction() as conn:
        jobs.progress(
            conn,
            job_id,
            done=len(rows) - len(problems),
            failed=len(problems),
            nbytes=sum(r["size"] for r in rows),
            errors=[f"{p.sop_uid} in {p.pool}: {p.problem}" for p in problems],
        )
    jobs.finish(node.index, job_id, jobs.FAILED if problems else jobs.DONE)
    return VerifyReport(
        job_id=job_id,
        checked=len(rows),
        ok=len(rows) - len(problems),
        problems=problems,
        bytes=sum(r["size"] for r in rows),
        seconds=time.monotonic() - started,
    )
