"""Snapshot tests of the console's screens, fed fixed snapshots (no polling) at a fixed terminal size.

Update them after a deliberate change of the layout with `pytest tests/test_console_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing.
"""

from __future__ import annotations

from pathlib import Path

from console.app import PacsdeckConsole
from console.inventory import parse_fleet
from console.snapshot import Event, NodeSnapshot

SIZE = (180, 40)
T0 = 1_780_000_000.0  # a fixed moment: times on screen never depend on when the test runs

FLEET = parse_fleet(
    {
        "known_hosts": "/nonexistent/known_hosts",
        "nodes": [
            {
                "name": "clinic-a",
                "site": "Clinic A",
                "tags": ["ct", "mr"],
                "transport": "local",
                "config": "/srv/a/node.yaml",
            },
            {"name": "clinic-b", "site": "Clinic B", "transport": "local", "config": "/srv/b/node.yaml"},
            {"name": "hospital-c", "site": "Hospital C", "host": "10.0.0.3", "user": "pacsdeck"},
            {"name": "imaging-d", "site": "Imaging D", "host": "10.0.0.4", "user": "pacsdeck"},
            {"name": "lab-e", "site": "Lab E", "host": "10.0.0.5", "user": "pacsdeck"},
        ],
    },
    source=Path("/fleet.yaml"),
)

CHECKS = [
    {
        "name": "cpu_load",
        "status": "ok",
        "value": 0.4,
        "unit": None,
        "threshold": "warn 2, crit 4",
        "message": "5-minute load 0.80 on 2 CPUs",
    },
    {
        "name": "pool:primary:filesystem",
        "status": "warn",
        "value": 86.0,
        "unit": "%",
        "threshold": "warn 85%, crit 95%",
        "message": "primary is 86% full; migrate or add space",
    },
    {
        "name": "backup_age",
        "status": "ok",
        "value": 20.0,
        "unit": "h",
        "threshold": "warn 30 h",
        "message": "last 20 h ago",
    },
]
RAW_A = {
    "node.status": {
        "version": "0.1.0",
        "listening": True,
        "node": {"ae_title": "CLINICA", "port": 11112, "config": "/srv/a/node.yaml"},
        "process": {"pid": 4242, "workers": 2, "uptime_s": 93_600},
        "counts": {"studies": 310},
    },
    "pools.list": {
        "overflow": False,
        "pools": [
            {
                "name": "primary",
                "tier": "primary",
                "instances": 52_000,
                "indexed_bytes": 880 * 2**30,
                "used": 880 * 2**30,
                "capacity": 1024 * 2**30,
                "capacity_is_logical": True,
                "used_percent": 86.0,
                "disk_used": 1100 * 2**30,
                "disk_free": 900 * 2**30,
                "disk_total": 2048 * 2**30,
                "high_watermark": 85,
                "low_watermark": 70,
                "accepting": True,
                "above_high_watermark": True,
            },
            {
                "name": "archive",
                "tier": "archive",
                "instances": 410_000,
                "indexed_bytes": 5 * 2**40,
                "used": 6 * 2**40,
                "capacity": 16 * 2**40,
                "capacity_is_logical": False,
                "used_percent": 37.5,
                "disk_used": 6 * 2**40,
                "disk_free": 10 * 2**40,
                "disk_total": 16 * 2**40,
                "high_watermark": None,
                "low_watermark": None,
                "accepting": True,
            },
        ],
    },
    "queue.list": {
        "counts": {"pending": 3, "running": 0, "done": 120, "failed": 1, "cancelled": 0},
        "oldest_pending_age_s": 95.0,
        "jobs": [
            {
                "id": 17,
                "kind": "forward",
                "state": "failed",
                "attempts": 10,
                "max_attempts": 10,
                "destination": "VIEWER",
                "items_done": 2,
                "items_total": 40,
                "next_attempt_at": None,
                "last_error": "connection refused",
            },
            {
                "id": 18,
                "kind": "forward",
                "state": "pending",
                "attempts": 2,
                "max_attempts": 10,
                "destination": "ARCHIVE2",
                "items_done": 0,
                "items_total": 12,
                "next_attempt_at": "2026-05-28T20:27:00Z",
                "last_error": "timed out",
            },
            {
                "id": 16,
                "kind": "forward",
                "state": "done",
                "attempts": 3,
                "max_attempts": 10,
                "destination": "VIEWER",
                "items_done": 40,
                "items_total": 40,
                "next_attempt_at": None,
                "last_error": "connection refused",  # a node from before issue 17 keeps it: shown as previous
            },
        ],
    },
    "associations.recent": {
        "associations": [
            {
                "id": 9,
                "started_at": "2026-05-28T20:20:01Z",
                "calling_ae": "CT1",
                "called_ae": "CLINICA",
                "peer_host": "10.1.0.7",
                "peer_port": 51000,
                "result": "released",
                "instances": 240,
                "reason": None,
            },
            {
                "id": 8,
                "started_at": "2026-05-28T20:19:40Z",
                "calling_ae": "CT9",
                "called_ae": "CLINICA",
                "peer_host": "10.1.0.9",
                "peer_port": 50022,
                "result": "rejected",
                "instances": 0,
                "reason": "calling AE title 'CT9' is not registered; add it with aets.add",
            },
        ]
    },
}


def snapshots() -> list[NodeSnapshot]:
    def snap(name, site, tags, status, reason, **kw):
        return NodeSnapshot(name=name, site=site, tags=tags, status=status, reason=reason, polled_at=T0, **kw)

    return [
        snap(
            "clinic-a",
            "Clinic A",
            ("ct", "mr"),
            "degraded",
            "pool:primary:filesystem: primary is 86% full",
            latency_ms=1.4,
            version="0.1.0",
            ae_title="CLINICA",
            port=11112,
            primary_used_pct=86.0,
            archive_used_pct=37.5,
            disk_free_bytes=144 * 2**30,
            instances=462_000,
            ingest_rate=12.5,
            queue_pending=3,
            queue_failed=1,
            oldest_pending_age_s=95.0,
            backup_age_s=72_000.0,
            worst_check="pool:primary:filesystem: warning",
            checks=CHECKS,
            raw=RAW_A,
        ),
        snap(
            "clinic-b",
            "Clinic B",
            (),
            "up",
            None,
            latency_ms=0.9,
            version="0.1.0",
            ae_title="CLINICB",
            port=11112,
            primary_used_pct=41.0,
            archive_used_pct=12.0,
            instances=80_000,
            ingest_rate=0.0,
            queue_pending=0,
            queue_failed=0,
            backup_age_s=3_600.0,
        ),
        snap(
            "hospital-c",
            "Hospital C",
            (),
            "down",
            "node not running: nothing listens on port 104",
            version="0.1.0",
            ae_title="HOSPC",
            port=104,
        ),
        snap("imaging-d", "Imaging D", (), "unreachable", "connection refused"),
        snap("lab-e", "Lab E", (), "untrusted", "unknown host key for 10.0.0.5:22 (ssh-ed25519 SHA256:Zm9v…)"),
    ]


EVENTS = [
    Event(
        at=T0 - 300,
        node="clinic-a",
        severity="warning",
        text="pool:primary:filesystem crossed its watermark (warning): primary is 86% full",
    ),
    Event(at=T0 - 120, node="hospital-c", severity="critical", text="hospital-c is down: node not running"),
    Event(at=T0 - 60, node="clinic-b", severity="info", text="clinic-b is up again (was unreachable)"),
]
HISTORY = {"clinic-a": [(T0 - 10 * (30 - i), float((i * 7) % 23), (150 - i * 0.2) * 2**30) for i in range(30)]}


def console(readonly: bool = False) -> PacsdeckConsole:
    return PacsdeckConsole(FLEET, readonly=readonly, snapshots=snapshots(), events=EVENTS, history=HISTORY)


def test_fleet_screen(snap_compare):
    assert snap_compare(console(), terminal_size=SIZE)


def test_fleet_screen_filtered_by_status(snap_compare):
    assert snap_compare(console(), press=["slash", *"down", "enter"], terminal_size=SIZE)


def open_node(name: str, tab: str | None = None):
    async def run_before(pilot):
        table = pilot.app.screen.query_one("#fleet")
        table.move_cursor(row=table.shown.index(name))
        await pilot.press("enter")
        if tab:
            pilot.app.screen.query_one("TabbedContent").active = tab
        await pilot.pause()

    return run_before


def test_node_screen_overview(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a"), terminal_size=SIZE)


def test_node_screen_health(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "health"), terminal_size=SIZE)


def test_node_screen_storage(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "storage"), terminal_size=SIZE)


def test_node_screen_queues_readonly(snap_compare):
    assert snap_compare(console(readonly=True), run_before=open_node("clinic-a", "queues"), terminal_size=SIZE)


def test_help_screen(snap_compare):
    assert snap_compare(console(), press=["question_mark"], terminal_size=SIZE)
