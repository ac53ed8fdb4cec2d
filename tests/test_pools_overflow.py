"""Placement and overflow: a full primary sends new instances to the archive; all full answers 0xA700."""

from __future__ import annotations

import json

import pytest

from storage import synthetic

from .conftest import pacsdeck, storescu, tmpfs
from .test_store import assert_index_matches_disk


def _files(tmp_path, count: int, size: int = 64):
    return synthetic.write_study(tmp_path / "study", next(synthetic.studies(1)), count, rows=size, cols=size)


def _outcomes(node, files) -> list[str]:
    results, _ = storescu(node, files)
    return [results[str(f)] for f in files]


def test_logical_capacity_overflows_to_archive_then_out_of_resources(node_factory, tmp_path):
    files = _files(tmp_path, 14)
    size = files[0].stat().st_size  # all the same size; the stored file differs only in its header
    node = node_factory(
        pools=[
            {"name": "primary", "path": "pools/primary", "tier": "primary", "capacity": int(4.5 * size)},
            {
                "name": "archive",
                "path": "pools/archive",
                "tier": "archive",
                "capacity": int(10.5 * size),
                "reserve": int(2 * size),
            },
        ]
    ).start()
    outcome = _outcomes(node, files)
    ok = outcome.count("Success")
    assert outcome[:ok] == ["Success"] * ok and ok < len(files), outcome
    assert all("OutOfResources" in r for r in outcome[ok:]), outcome
    rows = assert_index_matches_disk(node)
    pools = [r["pool"] for r in sorted(rows, key=lambda r: r["received_at"])]
    n_primary = pools.count("primary")
    assert pools == ["primary"] * n_primary + ["archive"] * (len(pools) - n_primary)  # primary first, then overflow
    stored = {p: sum(r["size"] for r in rows if r["pool"] == p) for p in ("primary", "archive")}
    one = rows[0]["size"]
    assert stored["primary"] <= 4.5 * size < stored["primary"] + one  # full: the next one did not fit
    assert stored["archive"] <= 8.5 * size < stored["archive"] + one  # the reserve stays free
    assert "overflow: the primary tier has no room; new instances go to pool archive" in node.log_text()
    assert "no pool could store it" in node.log_text() or "OutOfResources" in outcome[-1]
    stats = json.loads(pacsdeck("node", "pools", "--config", str(node.config), "--json").stdout)
    assert stats["overflow"] is True
    assert [(p["name"], p["accepting"]) for p in stats["pools"]] == [("primary", False), ("archive", False)]


@pytest.fixture
def two_small_tmpfs(tmp_path):
    """Two real 1 MiB filesystems."""
    with tmpfs(tmp_path / "fast", "1m") as fast, tmpfs(tmp_path / "slow", "1m") as slow:
        yield [fast, slow]


def test_full_filesystem_overflows_to_archive_then_out_of_resources(node_factory, tmp_path, two_small_tmpfs):
    fast, slow = two_small_tmpfs
    node = node_factory(
        pools=[
            {"name": "primary", "path": str(fast / "primary"), "tier": "primary"},
            {"name": "archive", "path": str(slow / "archive"), "tier": "archive"},
        ]
    ).start()
    files = _files(tmp_path, 80, size=128)  # 80 x ~33 KB: more than both filesystems together
    outcome = _outcomes(node, files)
    ok = outcome.count("Success")
    assert 0 < ok < len(files) and outcome[:ok] == ["Success"] * ok, outcome
    assert all("OutOfResources" in r for r in outcome[ok:]), outcome
    rows = assert_index_matches_disk(node)
    pools = [r["pool"] for r in sorted(rows, key=lambda r: r["received_at"])]
    n_primary = pools.count("primary")
    assert n_primary > 10 and len(pools) - n_primary > 10
    assert pools == ["primary"] * n_primary + ["archive"] * (len(pools) - n_primary)
    assert node.temp_files() == []
    assert "overflow" in node.log_text()
