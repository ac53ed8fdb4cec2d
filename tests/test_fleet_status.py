"""`pacsdeck fleet status` and the snapshot logic under it, against a real fleet: local nodes (one running,
one stopped), a node behind a real sshd, and an ssh entry on a closed port."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import yaml

from console.hostkeys import KnownHosts
from console.snapshot import (
    CRITICAL,
    DEGRADED,
    DOWN,
    INFO,
    STATUSES,
    UNREACHABLE,
    UP,
    WARNING,
    NodeSnapshot,
    events,
    fleet_exit_code,
    poll,
    poll_fleet,
)
from console.transport import open_transport

from .conftest import pacsdeck, require_tool, wait_for
from .console_support import fleet_files, unreachable_entry  # noqa: F401 - fixture
from .qr_support import send_files

ROW_KEYS = {
    "name",
    "site",
    "tags",
    "status",
    "reason",
    "polled_at",
    "latency_ms",
    "version",
    "ae_title",
    "port",
    "primary_used_pct",
    "archive_used_pct",
    "disk_free_bytes",
    "instances",
    "ingest_rate",
    "queue_pending",
    "queue_failed",
    "oldest_pending_age_s",
    "backup_age_s",
    "worst_check",
    "checks",
    "pools",
}
RANK = {"ok": 0, "unknown": 0, "warn": 1, "crit": 2}


def entries(files) -> list[dict]:
    return yaml.safe_load(files.path.read_text())["nodes"]


def expected_live_status(row: dict) -> str:
    """What a node that answers and listens must be, judged from the checks it reported."""
    worst = max((RANK[c["status"]] for c in row["checks"]), default=0)
    return DEGRADED if worst or row["queue_failed"] else UP


def queue_counts(node) -> dict | None:
    """queue.list asked directly through `agent call`, or None where the agent has no queue yet."""
    result = pacsdeck("agent", "call", "queue.list", "--config", str(node.config))
    if result.returncode != 0:
        assert "unknown method" in result.stderr, result.stderr
        return None
    return json.loads(result.stdout)["counts"]


def agent_result(node, method: str) -> dict:
    result = pacsdeck("agent", "call", method, "--config", str(node.config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_fleet_status_json_shape_and_exit_code(fleet_files):
    files = fleet_files
    files.nodes["beta"].stop()
    files.write(entries(files) + [unreachable_entry("ghost", files.key)])
    result = pacsdeck("fleet", "status", "--fleet", str(files.path), "--json")
    doc = json.loads(result.stdout)
    assert set(doc) == {"schema_version", "time", "fleet", "exit_code", "counts", "nodes"}
    assert doc["schema_version"] == 1 and doc["fleet"] == str(files.path)
    assert result.returncode == doc["exit_code"] == 2  # a node down and one unreachable
    rows = {r["name"]: r for r in doc["nodes"]}
    assert [r["name"] for r in doc["nodes"]] == ["alpha", "beta", "gamma", "ghost"]  # fleet order
    assert all(set(r) == ROW_KEYS for r in rows.values())
    assert doc["counts"] == {s: sum(1 for r in rows.values() if r["status"] == s) for s in STATUSES}

    for name in ("alpha", "gamma"):  # running: one locally, one through sshd
        row, node = rows[name], files.nodes[name]
        assert row["status"] == expected_live_status(row), row["reason"]
        assert (row["ae_title"], row["port"]) == (name.upper(), node.port)
        assert row["version"] and row["instances"] == 0 and row["latency_ms"] >= 0
        judged = {p["name"]: p["used_percent"] for p in agent_result(node, "pools.list")["pools"]}
        # The node's own judgement (what its watermarks use), not the filesystem's fill level.
        assert abs(row["primary_used_pct"] - judged["primary"]) < 0.5, (row["primary_used_pct"], judged)
        assert abs(row["archive_used_pct"] - judged["archive"]) < 0.5, (row["archive_used_pct"], judged)
        assert row["disk_free_bytes"] > 0 and [p["name"] for p in row["pools"]] == ["primary", "archive"]
        assert row["ingest_rate"] is None  # one poll: no rate
        counts = queue_counts(node)
        assert row["queue_pending"] == (counts and counts["pending"])
        assert row["queue_failed"] == (counts and counts["failed"])
        assert row["polled_at"].endswith("Z")
    assert rows["alpha"]["site"] == "Clinic A" and rows["gamma"]["tags"] == ["ssh"]

    beta = rows["beta"]
    assert beta["status"] == DOWN and "not running" in beta["reason"] and beta["ae_title"] == "BETA"
    ghost = rows["ghost"]
    assert ghost["status"] == UNREACHABLE and "connection refused" in ghost["reason"]
    assert ghost["version"] is None and ghost["checks"] == []


def test_fleet_status_human_table(fleet_files):
    files = fleet_files
    files.nodes["beta"].stop()
    files.write(entries(files) + [unreachable_entry("ghost", files.key)])
    result = pacsdeck("fleet", "status", "--fleet", str(files.path))
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:3] == ["node", "site", "status"] and "AE:port" in header and "worst" in header
    row = {line.split()[0]: line for line in lines[1:-1]}
    assert set(row) == {"alpha", "beta", "gamma", "ghost"}
    assert f"ALPHA:{files.nodes['alpha'].port}" in row["alpha"]
    assert " down " in row["beta"] and "not running" in row["beta"]
    assert " unreachable " in row["ghost"] and "connection refused" in row["ghost"]
    assert lines[-1].startswith("4 nodes: ") and lines[-1].endswith("exit 2")
    assert result.stderr == ""  # paramiko's noise stays out of cron mail


def test_exit_code_follows_the_worst_node(fleet_files, tmp_path):
    files = fleet_files
    files.write([e for e in entries(files) if e["name"] == "alpha"])
    result = pacsdeck("fleet", "status", "--fleet", str(files.path), "--json", "--ingest-sample", "0.5")
    (row,) = json.loads(result.stdout)["nodes"]
    assert row["ingest_rate"] == 0.0  # two polls, nothing sent in between
    worst = max((RANK[c["status"]] for c in row["checks"]), default=0)
    assert result.returncode == {0: 0 if not row["queue_failed"] else 1, 1: 1, 2: 2}[worst]

    # A node whose config is gone: the agent answers, the node is down with the agent's reason.
    files.write([{"name": "lost", "transport": "local", "config": str(tmp_path / "nowhere" / "node.yaml")}])
    result = pacsdeck("fleet", "status", "--fleet", str(files.path), "--json")
    (row,) = json.loads(result.stdout)["nodes"]
    assert result.returncode == 2 and row["status"] == DOWN and "nowhere" in row["reason"]


def test_poll_fleet_is_not_held_up_by_a_hung_node(fleet_files, tmp_path):
    files = fleet_files
    # "hung": an agent command that never answers, with a long call timeout; poll_fleet's bound wins.
    files.write(
        [e for e in entries(files) if e["name"] == "alpha"]
        + [{"name": "hung", "transport": "local", "agent_command": ["sleep", "60"], "call_timeout": 60}]
    )
    transports = files.transports()
    snaps = poll_fleet(files.fleet, transports, timeout=3)
    by = {s.name: s for s in snaps}
    assert by["alpha"].status in (UP, DEGRADED)
    assert by["hung"].status == UNREACHABLE and by["hung"].reason == "no answer within 3 s"
    transports["hung"].close()  # ends the sleeping process, which ends the stuck poll


def test_events_and_ingest_rate_between_polls(fleet_files):
    require_tool("storescu")
    files = fleet_files
    alpha = files.nodes["alpha"]
    entry = files.fleet.node("alpha")
    t = open_transport(entry, KnownHosts(files.known_hosts))
    files.opened.append(t)
    first = poll(entry, t)
    assert first.status in (UP, DEGRADED) and first.instances == 0
    ct = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    assert send_files(alpha, [ct]) == [ct]
    second = poll(entry, t, first)
    assert second.instances == 1
    assert second.ingest_rate == pytest.approx(1 / (second.polled_at - first.polled_at), rel=0.05)
    alpha.stop()
    # The agent caches its listening probe for a second: the next poll or the one after sees it.
    down = wait_for(lambda: (s := poll(entry, t, second)).status == DOWN and s, what="alpha down")
    (went,) = [e for e in events(second, down) if "is down" in e.text]
    assert went.severity == CRITICAL and went.node == "alpha" and "not running" in went.text
    assert events(down, poll(entry, t, down)) == []  # still down: nothing new to say
    alpha.start()
    back = wait_for(lambda: (s := poll(entry, t, down)).status != DOWN and s, what="alpha back")
    assert back.status in (UP, DEGRADED)
    (again,) = [e for e in events(down, back) if "alpha is" in e.text]
    assert again.severity == (INFO if back.status == UP else WARNING)


def test_exit_code_rules():
    def snap(status, worst=None):
        return NodeSnapshot(name="n", site="", tags=(), status=status, reason=None, polled_at=0.0, worst_check=worst)

    assert fleet_exit_code([snap(UP), snap(UP)]) == 0
    assert fleet_exit_code([snap(UP), snap(DEGRADED, "clock: warning")]) == 1
    assert fleet_exit_code([snap(UP), snap(DEGRADED, "disk: critical")]) == 2
    for bad in (DOWN, UNREACHABLE, "untrusted"):
        assert fleet_exit_code([snap(DEGRADED, "clock: warning"), snap(bad)]) == 2
    assert fleet_exit_code([]) == 0
