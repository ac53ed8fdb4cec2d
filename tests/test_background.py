"""storage/dimse/background.py: a lane runs its tasks in order on its own thread, in every process."""

from __future__ import annotations

import logging
import os
import select
import threading

from storage.dimse.background import Lane

WAIT = 10.0  # seconds a test waits for a lane before failing (never reached when it works)


def _drain(lane: Lane) -> None:
    """Return once everything submitted to `lane` so far has run."""
    done = threading.Event()
    lane.submit(done.set)
    assert done.wait(WAIT), f"lane {lane.name} did not run its tasks"


def test_tasks_run_in_submission_order_on_the_lanes_thread():
    lane = Lane("pacsdeck-test-order")
    ran: list[tuple[int, str, int]] = []
    for i in range(200):
        lane.submit(lambda i: ran.append((i, threading.current_thread().name, threading.get_ident())), i)
    _drain(lane)
    assert [i for i, _, _ in ran] == list(range(200))
    assert {name for _, name, _ in ran} == {lane.name}
    assert len({ident for _, _, ident in ran}) == 1
    assert ran[0][2] != threading.get_ident()


def test_a_failing_task_is_logged_and_the_next_ones_run(caplog):
    lane = Lane("pacsdeck-test-failing")
    ran: list[str] = []

    def fail(message: str) -> None:
        raise ValueError(message)

    with caplog.at_level(logging.ERROR, logger="storage.dimse.background"):
        lane.submit(ran.append, "before")
        lane.submit(fail, "boom in a background task")
        lane.submit(ran.append, "after")
        lane.submit(fail, "second failure")
        lane.submit(ran.append, "last")
        _drain(lane)
    assert ran == ["before", "after", "last"]
    failures = [r for r in caplog.records if r.name == "storage.dimse.background"]
    assert len(failures) == 2
    assert all(lane.name in r.getMessage() for r in failures)
    assert [str(r.exc_info[1]) for r in failures] == ["boom in a background task", "second failure"]


def test_submissions_from_many_threads_all_run():
    lane = Lane("pacsdeck-test-many")
    ran: list[tuple[int, int]] = []
    start = threading.Barrier(8)

    def submitter(n: int) -> None:
        start.wait(WAIT)
        for i in range(250):
            lane.submit(ran.append, (n, i))

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    _drain(lane)
    assert sorted(ran) == [(n, i) for n in range(8) for i in range(250)]
    for n in range(8):  # each submitter's tasks in its own order
        assert [i for m, i in ran if m == n] == list(range(250))
    lane_threads = [t for t in threading.enumerate() if t.name == lane.name]
    assert len(lane_threads) == 1  # racing first submissions started one thread, not several


def test_a_forked_child_runs_its_tasks_on_a_thread_of_its_own(tmp_path):
    lane = Lane("pacsdeck-test-fork")
    _drain(lane)  # the parent's thread exists; the child inherits none of it
    marker = tmp_path / "ran-in-child"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read_fd)
            done = threading.Event()

            def task() -> None:
                marker.write_text(f"{os.getpid()} {threading.current_thread().name}")
                done.set()

            lane.submit(task)
            code = 0 if done.wait(WAIT) else 2
            os.write(write_fd, str(code).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], WAIT * 2)
        answer = os.read(read_fd, 16) if ready else b""
    finally:
        os.close(read_fd)
        exited = os.pidfd_open(pid)  # readable once the child has exited: a wait with a deadline, not a poll
        try:
            if not select.select([exited], [], [], WAIT)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child did not exit")
        finally:
            os.close(exited)
        _, status = os.waitpid(pid, 0)
    assert answer == b"0", f"the child's task did not run (child reported {answer!r})"
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.read_text() == f"{pid} {lane.name}"
    _drain(lane)  # and the parent's lane still works
