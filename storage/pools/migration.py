"""Migration between pools, the entry point: the migration lock, migrate() (plan, then move as one job) and recall."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, NotRequired, TypedDict

from storage.index import jobs

from .mover import Mover
from .plan import MigrationReport, MigrationRun, plan, why_nothing

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig

    from .context import PoolsContext

log = logging.getLogger(__name__)

LOCK_NAME = "migration.lock"  # in the node folder: held by whoever moves files between pools


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


def migrate(
    node: PoolsContext,
    *,
    study_uids: list[str] | None = None,
    target: str | None = None,
    dry_run: bool = True,
    stop: threading.Event | None = None,
    wait: bool = False,
    touch: bool = False,
) -> MigrationReport:
    """Plan (dry run) or run a migration; the report has the plan, and what the run did.

    Raises ValueError for a bad request and MigrationBusy when another migration holds the lock
    (unless `wait`). `stop` ends the run between batches; `touch` sets the moved instances' last
    access to now (a recall is an access)."""
    if target is not None and node.placement.pool(target) is None:
        raise ValueError(f"target: no pool named {target!r}")
    started = time.monotonic()
    if dry_run:
        moves, skipped = plan(node, study_uids=study_uids, target=target)
        return MigrationReport(
            dry_run=True,
            plan=tuple(moves),
            skipped=tuple(skipped),
            reason=None if moves else why_nothing(node, skipped, study_uids=study_uids),
        )
    with migration_lock(node.config, wait=wait):
        jobs.interrupt_stale(node.index, "migrate")
        moves, skipped = plan(node, study_uids=study_uids, target=target)
        report = MigrationReport(dry_run=False, plan=tuple(moves), skipped=tuple(skipped))
        if not moves:
            return replace(report, reason=why_nothing(node, skipped, study_uids=study_uids))
        reasons = sorted({m.reason.split(":")[0] for m in moves})
        job_id = jobs.create(
            node.index,
            "migrate",
            ", ".join(reasons),
            {"study_uids": study_uids, "target": target},
            instances_total=report.instances,
            bytes_total=report.bytes,
        )
        mover = Mover(node, job_id, touch)
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
    run = MigrationRun(
        job_id=job_id,
        state=state,
        moved_instances=mover.moved,
        moved_bytes=mover.moved_bytes,
        failed_instances=mover.failed,
        errors=tuple(mover.errors[: jobs.MAX_ERRORS]),
        seconds=seconds,
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
    return replace(report, run=run)


class Recall(TypedDict):
    """recall_study's answer: whether instances came back, and why not or what the migration did."""

    recalled: bool
    why: NotRequired[str]  # nothing was tried
    report: NotRequired[MigrationReport]


def recall_study(node: PoolsContext, study_uid: str, wait: bool = False) -> Recall:
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
    return {"recalled": report.run is not None and report.run.moved_instances > 0, "report": report}


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
            run = result["report"].run if "report" in result else None
            log.info("recall of study %s: %s", study_uid, result.get("why") or f"{run and run.moved_instances} moved")
        except MigrationBusy:
            log.info("recall of study %s skipped: a migration is running", study_uid)
        except Exception:  # a background recall must never take the node down
            log.exception("recall of study %s failed", study_uid)
        finally:
            node.index.close()

    thread = threading.Thread(target=run, name=f"recall-{study_uid[:16]}", daemon=True)
    thread.start()
    return thread
