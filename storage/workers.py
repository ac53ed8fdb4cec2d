"""Worker processes: several copies of the SCP share the port, so ingest is not bound to one GIL."""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 60


class Servable(Protocol):
    """What a worker does with the node it inherited: serve on the shared socket, then stop (storage/node.py)."""

    def serve(self, listening=None) -> None: ...

    def stop(self) -> None: ...


class NodeAlreadyRunning(RuntimeError):
    """Another `pacsdeck node run` holds this node folder."""


def hold_node_lock(config: NodeConfig):
    """An exclusive lock on the node folder for as long as the returned file stays open.

    The file holds the PID of the node's main (supervisor) process, for the agent and for people.
    """
    path = config.node_dir / "node.lock"
    fh = open(path, "a+")  # noqa: SIM115 - the lock lasts as long as the caller keeps it open
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise NodeAlreadyRunning(f"another node is running on {config.node_dir} (lock {path})") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def running_node_pid(node_dir) -> int | None:
    """The PID of the node serving this folder, or None when none runs (nobody holds the lock)."""
    path = os.path.join(node_dir, "node.lock")
    try:
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return int(fh.read().strip() or 0) or None
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None
    except (FileNotFoundError, ValueError):
        return None


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the supervisor dies, even by kill -9."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until a signal handler sets `stop`. CPython runs handlers only in the
    main thread, at its next bytecode: when the kernel hands SIGTERM to another of our threads, a
    main thread parked in an untimed wait never ran it (a node took 30 s to stop in tests). Waking
    each second bounds that."""
    while not stop.wait(1.0):
        pass


def _worker(node: Servable, listening, ready_fd: int, parent: int) -> None:
    """Runs in the child: serve until SIGTERM. Never returns."""
    code = 0
    try:
        _die_with_parent(parent)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
        node.serve(listening)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        wait_for_signal(stop)
        node.stop()
    except BaseException:  # report, then leave without running the parent's cleanup
        log.exception("worker %d failed", os.getpid())
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def serve_in_workers(node: Servable, count: int, announce: Callable[[], None]) -> int:
    """Bind the port, fork `count` workers that accept on it, announce once all serve, stop them
    on SIGTERM/SIGINT.

    If a worker dies the others are stopped and the exit code is 1, so a service manager restarts
    the node (and its recovery runs again) instead of serving with part of its capacity.
    """
    from storage.dimse.scp import listen

    parent = os.getpid()
    listening = listen(node)  # bound here, once: a port already in use fails the node at start
    read_fd, write_fd = os.pipe()
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _worker(node, listening, write_fd, parent)
        children.append(pid)
    os.close(write_fd)

    stopping = threading.Event()

    def on_signal(*_) -> None:  # os.wait() resumes after handlers (PEP 475): stop the workers here
        stopping.set()
        _stop_all(children)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    ready = b""
    while len(ready) < count:
        chunk = os.read(read_fd, count)
        if not chunk:  # every write end closed: a worker died before it listened
            break
        ready += chunk
    os.close(read_fd)
    if len(ready) < count:
        log.error("only %d of %d workers started", len(ready), count)
        _stop_all(children)
        return 1
    announce()

    code = 0
    alive = set(children)
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        if not stopping.is_set():
            log.error("worker %d exited (status %d); stopping the node", pid, status)
            code = 1
            stopping.set()
            _stop_all(list(alive))
    return code


def _stop_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
