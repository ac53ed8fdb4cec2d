"""Pool limits and the migration section of node.yaml, and the index upgrade that adds pool_usage and jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.config.settings import ConfigError, parse_config
from storage.index.database import Index
from storage.index.schema import SCHEMA_VERSION


def _config(tmp_path: Path, pools: list[dict], **extra):
    return parse_config({"pools": pools, **extra}, tmp_path / "node.yaml", create_dirs=True)


def test_pool_limits_parse_units_and_percentages(tmp_path):
    cfg = _config(
        tmp_path,
        [
            {
                "name": "primary",
                "path": "p",
                "tier": "primary",
                "capacity": "500GB",
                "reserve": "5%",
                "high_watermark": 90,
                "low_watermark": "80%",
            },
            {"name": "archive", "path": "a", "tier": "archive", "capacity": "2TiB", "reserve": "10GB"},
        ],
        migration={
            "interval": "15m",
            "recall_on_access": True,
            "rules": [{"from": "primary", "to": "archive", "after_days": 90, "since": "received"}],
        },
    )
    primary, archive = cfg.pools
    assert (primary.capacity, primary.reserve_percent, primary.high_watermark, primary.low_watermark) == (
        500 * 10**9,
        5.0,
        90.0,
        80.0,
    )
    assert (archive.capacity, archive.reserve_bytes, archive.high_watermark) == (2 * 2**40, 10**10, None)
    assert cfg.migration.interval == 900 and cfg.migration.recall_on_access
    [rule] = cfg.migration.rules
    assert (rule.source, rule.target, rule.after_days, rule.since) == ("primary", "archive", 90.0, "received")


@pytest.mark.parametrize(
    "pool_extra, migration, message",
    [
        ({"capacity": "lots"}, None, "pools[0].capacity: a size in bytes or like 500GB"),
        ({"capacity": -5}, None, "pools[0].capacity: must not be negative"),
        ({"reserve": "150%"}, None, "pools[0].reserve: a percentage from 0 to 100"),
        ({"capacity": 1000, "reserve": 1000}, None, "pools[0].reserve: 1000 bytes leaves nothing"),
        ({"high_watermark": 90}, None, "pools[0].low_watermark: required when the other watermark is set"),
        ({"high_watermark": 70, "low_watermark": 80}, None, "pools[0].low_watermark: must be below high_watermark"),
        ({}, {"interval": "soon"}, "migration.interval: seconds or like 15m"),
        (
            {},
            {"rules": [{"from": "tape", "to": "primary", "after_days": 1}]},
            "migration.rules[0].from: not a pool name",
        ),
        ({}, {"rules": [{"from": "primary", "to": "primary", "after_days": 1}]}, "migration.rules[0].to: must differ"),
        ({}, {"rules": [{"from": "primary", "to": "archive", "after_days": -1}]}, "migration.rules[0].after_days"),
        (
            {},
            {"rules": [{"from": "primary", "to": "archive", "after_days": 1, "since": "birth"}]},
            "migration.rules[0].since: last_access or received",
        ),
        ({}, {"every": 5}, "migration: unknown key(s) every"),
    ],
)
def test_bad_values_name_the_field(tmp_path, pool_extra, migration, message):
    pools = [
        {"name": "primary", "path": "p", "tier": "primary", **pool_extra},
        {"name": "archive", "path": "a", "tier": "archive"},
    ]
    extra = {"migration": migration} if migration is not None else {}
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, pools, **extra)
    assert message in str(err.value)


def test_old_index_gets_pool_usage_counted_on_upgrade(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    conn = sqlite3.connect(path)
    # Make it look like a version 1 index with rows and without the new tables.
    conn.executescript("""
        DROP TRIGGER pool_usage_insert; DROP TRIGGER pool_usage_delete; DROP TRIGGER pool_usage_update;
        DROP TABLE pool_usage; DROP TABLE jobs; PRAGMA user_version = 1;
    """)
    for i, (pool, size) in enumerate([("primary", 10), ("primary", 20), ("archive", 5)]):
        conn.execute(
            "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid, transfer_syntax, pool,"
            " path, size, sha256, received_at, last_access) VALUES (?, '1', '1', '1', '1', ?, ?, ?, '', 0, 0)",
            (f"1.{i}", pool, f"f{i}", size),
        )
    conn.commit()
    conn.close()
    index = Index(path)
    conn = index.connection()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    usage = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM pool_usage")}
    assert usage == {"primary": (2, 30), "archive": (1, 5)}
    # and the triggers keep it exact from here on
    conn.execute("UPDATE instances SET pool='archive' WHERE sop_uid='1.0'")
    conn.execute("DELETE FROM instances WHERE sop_uid='1.1'")
    usage = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM pool_usage")}
    assert usage == {"primary": (0, 0), "archive": (2, 15)}
