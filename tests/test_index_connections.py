"""storage/index/database.py: a thread's connection goes to the next thread once the first has ended, clean."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from storage.index.database import Index

WAIT = 10.0


def _in_thread(fn, *args):
    """Run fn in a new thread, wait for it to end (its thread locals are released then), return its result."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = err

    t = threading.Thread(target=run)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite")
    yield idx
    idx.close()


def _log_entry(calling: str) -> dict:
    return {
        "started_at": 1.0,
        "ended_at": 2.0,
        "calling_ae": calling,
        "called_ae": "NODE",
        "peer_host": "127.0.0.1",
        "peer_port": 104,
        "result": "accepted",
        "reason": "",
        "instances": 0,
        "failures": 0,
        "bytes": 0,
    }


def test_an_ended_threads_connection_goes_to_the_next_thread(index):
    first = _in_thread(index.connection)
    second = _in_thread(index.connection)
    assert second is first
    _in_thread(index.log_association, _log_entry("REUSED"))  # and it still works
    assert index.connection() is not first  # the main thread (alive) has its own
    rows = index.connection().execute("SELECT calling_ae FROM associations").fetchall()
    assert [r[0] for r in rows] == ["REUSED"]


def test_two_live_threads_never_share_a_connection(index):
    _in_thread(index.connection)  # one idle connection waiting in the pool
    both = threading.Barrier(2)
    got: list = []

    def hold() -> None:
        conn = index.connection()
        got.append(conn)
        both.wait(WAIT)  # both threads hold theirs at the same time
        assert index.connection() is conn  # a thread keeps its own for its whole life

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert len(got) == 2 and got[0] is not got[1]
    assert index.connection() not in got  # nor with the living main thread


def test_a_thread_ending_inside_a_transaction_leaves_no_lock_and_no_row(index, tmp_path):
    def begin_and_die() -> sqlite3.Connection:
        conn = index.connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO associations (started_at, calling_ae, result) VALUES (1, 'UNCOMMITTED', 'x')")
        assert conn.in_transaction
        return conn

    conn = _in_thread(begin_and_die)
    assert not conn.in_transaction  # rolled back when its lease was dropped
    # Another connection, waiting for no lock at all, writes at once.
    other = sqlite3.connect(tmp_path / "index.sqlite", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO associations (started_at, calling_ae, result) VALUES (2, 'OTHER', 'x')")
        other.execute("COMMIT")
        names = [r[0] for r in other.execute("SELECT calling_ae FROM associations")]
    finally:
        other.close()
    assert names == ["OTHER"]

    def next_thread_writes() -> list[str]:
        with index.transaction() as c:
            c.execute("INSERT INTO associations (started_at, calling_ae, result) VALUES (3, 'NEXT', 'x')")
        return [r[0] for r in index.connection().execute("SELECT calling_ae FROM associations ORDER BY id")]

    assert _in_thread(next_thread_writes) == ["OTHER", "NEXT"]


def test_close_in_a_thread_closes_its_connection_instead_of_pooling_it(index):
    def use_and_close() -> sqlite3.Connection:
        conn = index.connection()
        conn.execute("SELECT 1")
        index.close()
        return conn

    closed = _in_thread(use_and_close)
    with pytest.raises(sqlite3.ProgrammingError):
        closed.execute("SELECT 1")
    fresh = _in_thread(index.connection)
    assert fresh is not closed
    assert fresh.execute("SELECT count(*) FROM associations").fetchone()[0] == 0


def test_a_thread_that_closed_and_reopened_pools_only_the_open_one(index):
    def close_then_reopen() -> tuple:
        first = index.connection()
        index.close()
        return first, index.connection()

    first, second = _in_thread(close_then_reopen)
    assert second is not first
    assert _in_thread(index.connection) is second
