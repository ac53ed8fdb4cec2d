"""The migration scheduler: one thread in one process of the node runs the rules on a timer and on watermarks."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .migration import MigrationBusy, migrate

if TYPE_CHECKING:
    from .context import PoolsContext
    from .plan import MigrationReport

log = logging.getLogger(__name__)

# How often pool usage is compared with the high watermarks. Reading pool_usage and a statvfs per
# pool costs well under a millisecond, so a crossing is acted on within this many seconds.
WATCH_SECONDS = 2.0


class MigrationScheduler:
    """Runs in the supervisor (several workers) or the node process (one worker): never in a
    worker, so there is one per node. The migration flock guards against any second runner (a
    `node migrate` from the command line, the agent, a recall): whoever holds it moves files,
    the others skip this round."""

    def __init__(self, node: PoolsContext):
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="migration-scheduler", daemon=True)
        self.last_report: MigrationReport | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()  # a running migration ends after its current batch
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.node.config.migration.interval
        next_rules = time.monotonic() + interval
        try:
            while not self._stop.wait(WATCH_SECONDS):
                due = time.monotonic() >= next_rules
                if not (due or self._watermark_crossed()):
                    continue
                self._run_once("interval" if due else "watermark")
                if due:
                    next_rules = time.monotonic() + interval
        finally:
            self.node.index.close()  # this thread's connection

    def _watermark_crossed(self) -> bool:
        placement = self.node.placement
        try:
            usage = placement.usage()
            for pool in placement.pools:
                cfg = placement.configs.get(pool.name)
                if (
                    cfg is not None
                    and cfg.high_watermark is not None
                    and placement.space(pool, usage).used_percent > cfg.high_watermark
                ):
                    return True
        except Exception as err:  # noqa: BLE001 - a transient index or disk error: look again later
            log.warning("migration scheduler: cannot read pool usage: %s", err)
        return False

    def _run_once(self, why: str) -> None:
        try:
            report = migrate(self.node, dry_run=False, stop=self._stop)
        except MigrationBusy:
            log.info("migration (%s) skipped: another migration holds the lock", why)
            return
        except Exception:  # the scheduler must outlive one failed run
            log.exception("migration (%s) failed", why)
            return
        self.last_report = report
        if report.run is None and report.skipped:
            # Above a watermark with nowhere to go: say so, but not every WATCH_SECONDS.
            self._stop.wait(min(60.0, self.node.config.migration.interval))
