"""The backup scheduler: one thread in the node's supervisor runs each target's `schedule` as a backup job."""

from __future__ import annotations

import datetime
import logging
import threading
import time

from .layout import BackupError
from .runner import BackupBusy, run_backup

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at the clock: a schedule fires within this of its time


def next_due(schedule, after: float) -> float:
    """The first time after `after` the schedule fires (local time for `daily HH:MM`)."""
    if schedule.every is not None:
        return after + schedule.every
    hour, minute = schedule.daily_at
    now = datetime.datetime.fromtimestamp(after)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due.timestamp() <= after:
        due += datetime.timedelta(days=1)
    return due.timestamp()


class BackupScheduler:
    """Like the migration scheduler: never in a worker, one per node; the backup flock keeps any second
    runner (a backups.run, the CLI) from overlapping, and a busy round is simply skipped."""

    def __init__(self, config, index):
        self.config = config
        self.index = index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-scheduler", daemon=True)
        started = time.time()
        self.due = {t.name: next_due(t.schedule, started) for t in config.backups if t.schedule is not None}

    def start(self) -> None:
        if self.due:
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()  # a running backup stops between two files, left incomplete
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        targets = {t.name: t for t in self.config.backups}
        try:
            while not self._stop.wait(TICK):
                now = time.time()
                for name, due in list(self.due.items()):
                    if now >= due and not self._stop.is_set():
                        self._run_once(name)
                        self.due[name] = next_due(targets[name].schedule, time.time())
        finally:
            self.index.close()  # this thread's connection

    def _run_once(self, name: str) -> None:
        try:
            run_backup(self.config, self.index, name, reason="schedule", stop=self._stop)
        except BackupBusy:
            log.info("scheduled backup to %s skipped: another backup is running", name)
        except BackupError as err:
            log.error("scheduled backup to %s failed: %s", name, err)
        except Exception:  # the scheduler must outlive one failed run
            log.exception("scheduled backup to %s failed", name)
