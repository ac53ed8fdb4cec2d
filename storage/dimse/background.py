"""Small tasks run after an answer has gone out, on long-lived daemon threads, in order per lane."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Lane:
    """One daemon thread running submitted calls one after another.

    Starting a thread per task made the submitter wait for the new thread's first run
    (Thread.start blocks until then), which under load cost a retrieve's requestor ~1 ms. A lane's
    thread is started once, on first use; `submit` only queues. Daemon: a task still running when
    the node stops (a destination that never answers a release) does not hold the process up.
    """

    def __init__(self, name: str):
        self.name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process the thread runs in: a forked worker starts its own
        self._lock = threading.Lock()

    def submit(self, task: Callable, *args) -> None:
        self._tasks.put((task, args))
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
                    self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            task, args = self._tasks.get()
            try:
                task(*args)
            except Exception:  # one failed task must not stop the ones behind it
                log.exception("%s: a background task failed", self.name)
