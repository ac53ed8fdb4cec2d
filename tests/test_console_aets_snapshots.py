"""Snapshot tests of the AE titles tab and of the form the one-key fix opens, on the fixed fleet of
tests/test_console_snapshots.py (no polling). Update with `--snapshot-update` after a deliberate change."""

from __future__ import annotations

import dataclasses

from console.app import PacsdeckConsole

from .test_console_snapshots import EVENTS, FLEET, HISTORY, RAW_A, SIZE, open_node, snapshots

AETS = {
    "aets": [
        {
            "ae_title": "CT1",
            "host": "10.1.0.7",
            "port": 104,
            "description": "CT scanner, room 1",
            "operations": ["store"],
            "move_destination": False,
            "tls": False,
            "created_at": "2026-05-01T08:00:00Z",
            "updated_at": "2026-05-01T08:00:00Z",
        },
        {
            "ae_title": "VIEWER",
            "host": "10.1.0.20",
            "port": 11112,
            "description": "reading room workstation",
            "operations": ["store", "find", "move", "get"],
            "move_destination": True,
            "tls": True,
            "created_at": "2026-05-01T08:00:00Z",
            "updated_at": "2026-05-20T14:30:00Z",
        },
    ]
}


def console(readonly: bool = False) -> PacsdeckConsole:
    snaps = [
        dataclasses.replace(s, raw={**RAW_A, "aets.list": AETS}) if s.name == "clinic-a" else s for s in snapshots()
    ]
    return PacsdeckConsole(FLEET, readonly=readonly, snapshots=snaps, events=EVENTS, history=HISTORY)


def test_node_screen_ae_titles(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "aets"), terminal_size=SIZE)


def test_the_fix_form_of_a_refused_sender(snap_compare):
    open_associations = open_node("clinic-a", "associations")

    async def run_before(pilot):
        await open_associations(pilot)
        table = pilot.app.screen.query_one("#associations-table")
        table.move_cursor(row=[r.value for r in table.rows].index("8"))  # CT9, refused: not registered
        await pilot.press("a")
        await pilot.pause()

    assert snap_compare(console(), run_before=run_before, terminal_size=SIZE)
