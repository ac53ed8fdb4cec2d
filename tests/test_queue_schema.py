"""The index upgrade to schema 3 (the queue) and the config's queue section."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from storage.config.settings import ConfigError, QueueConfig, load_config
from storage.index import jobs
from storage.index.database import Index
from storage.index.schema import SCHEMA_VERSION

V2_JOBS = """
    CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}', instances_total INTEGER NOT NULL DEFAULT 0,
        instances_done INTEGER NOT NULL DEFAULT 0, instances_failed INTEGER NOT NULL DEFAULT 0,
        bytes_total INTEGER NOT NULL DEFAULT 0, bytes_done INTEGER NOT NULL DEFAULT 0,
        errors TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL, updated_at REAL NOT NULL);
"""


def test_version_2_index_gains_the_queue_columns_and_interrupted_jobs_fail(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    conn = sqlite3.connect(path)
    conn.executescript(f"""
        DROP TABLE jobs; DROP TABLE job_items; DROP TABLE routes; DROP TABLE routes_version; {V2_JOBS}
        INSERT INTO jobs (kind, state, created_at, updated_at) VALUES ('migrate', 'done', 1, 1);
        INSERT INTO jobs (kind, state, created_at, updated_at) VALUES ('migrate', 'interrupted', 2, 2);
        INSERT INTO jobs (kind, state, created_at, updated_at) VALUES ('verify', 'running', 3, 3);
        PRAGMA user_version = 2;
    """)
    conn.close()
    index = Index(path)
    conn = index.connection()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rows = [dict(r) for r in conn.execute("SELECT state, attempts, max_attempts, last_error FROM jobs ORDER BY id")]
    assert rows == [
        {"state": "done", "attempts": 1, "max_attempts": 1, "last_error": None},
        {
            "state": "failed",
            "attempts": 1,
            "max_attempts": 1,
            "last_error": "interrupted: the process running it stopped",
        },
        {
            "state": "failed",
            "attempts": 1,
            "max_attempts": 1,
            "last_error": "interrupted: the process running it stopped",
        },
    ]
    # The new tables work, and routes_version follows every edit.
    with index.transaction() as tx:
        tx.execute(
            "INSERT INTO routes (name, match, destinations, created_at, updated_at) VALUES ('a', '{}', '[]', 0, 0)"
        )
        tx.execute("DELETE FROM routes")
    assert conn.execute("SELECT version FROM routes_version").fetchone()[0] == 2
    index.close()
    Index(path).close()  # opening an index that is already upgraded changes nothing


def test_version_3_index_gains_the_tls_column_of_registered_aets(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    conn = sqlite3.connect(path)
    conn.executescript("""
        DROP TABLE aets;
        CREATE TABLE aets (ae_title TEXT PRIMARY KEY, host TEXT, port INTEGER, description TEXT NOT NULL DEFAULT '',
            operations TEXT NOT NULL, move_destination INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            updated_at REAL NOT NULL);
        INSERT INTO aets VALUES ('CT1', '10.0.0.2', 104, '', '["store"]', 0, 1, 1);
        PRAGMA user_version = 3;
    """)
    conn.close()
    index = Index(path)
    assert index.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert index.aet("CT1")["tls"] is False
    with index.transaction() as tx:
        index.put_aet(tx, "CT1", "10.0.0.2", 104, "", ["store"], False, tls=True)
    assert index.aet("CT1")["tls"] is True
    index.close()


def test_jobs_that_die_running_fail_with_the_reason(tmp_path):
    index = Index(tmp_path / "index.sqlite")
    job = jobs.create(index, "migrate", "interval", {})
    assert jobs.get(index, job)["state"] == jobs.RUNNING
    assert jobs.interrupt_stale(index, "migrate") == 1
    row = jobs.get(index, job)
    assert (row["state"], row["last_error"]) == ("failed", "interrupted: the process running it stopped")


def test_backoff_doubles_up_to_the_cap():
    assert [jobs.backoff(n, 10, 60) for n in range(1, 6)] == [10, 20, 40, 60, 60]


def _config(tmp_path, queue) -> object:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"pools": [{"name": "primary", "path": "p"}], "queue": queue}))
    return load_config(path, create_dirs=True)


def test_queue_section(tmp_path):
    assert _config(tmp_path, None).queue == QueueConfig()
    cfg = _config(
        tmp_path,
        {
            "backoff_base": "30s",
            "backoff_max": "1h",
            "max_attempts": 5,
            "concurrency": 2,
            "associations": 2,
            "timeout": 10,
        },
    ).queue
    assert (cfg.backoff_base, cfg.backoff_max, cfg.max_attempts, cfg.concurrency, cfg.associations, cfg.timeout) == (
        30,
        3600,
        5,
        2,
        2,
        10,
    )
    assert _config(tmp_path, {"backoff_base": 0.2, "backoff_max": 0.5}).queue.backoff_base == 0.2


@pytest.mark.parametrize(
    "queue, message",
    [
        ([1], "queue: must be a mapping"),
        ({"retries": 3}, "queue: unknown key(s) retries"),
        ({"backoff_base": "soon"}, "queue.backoff_base: seconds or like"),
        ({"backoff_base": 0}, "queue.backoff_base: seconds from 0.05"),
        ({"backoff_max": True}, "queue.backoff_max: seconds"),
        ({"max_attempts": 0}, "queue.max_attempts: an integer from 1 to 1000"),
        ({"concurrency": "4"}, "queue.concurrency: an integer from 1 to 64"),
        ({"associations": 9}, "queue.associations: an integer from 1 to 8"),
        ({"timeout": 0.5}, "queue.timeout: seconds from 1"),
        ({"backoff_base": 60, "backoff_max": 30}, "queue.backoff_max: must not be below backoff_base"),
    ],
)
def test_queue_section_errors_name_the_field(tmp_path, queue, message):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, queue)
    assert message in str(err.value)
