"""Snapshot tests of the Routes and Audit tabs and of the route form, on the fixed fleet of
tests/test_console_snapshots.py (no polling). Update with `--snapshot-update` after a deliberate change."""

from __future__ import annotations

import dataclasses

from console.app import PacsdeckConsole

from .test_console_aets_snapshots import AETS
from .test_console_snapshots import EVENTS, FLEET, HISTORY, RAW_A, SIZE, open_node, snapshots

NO_ADDRESS = {
    "ae_title": "MODALITY7",
    "host": None,
    "port": None,
    "description": "a sender the node never calls",
    "operations": ["store"],
    "move_destination": False,
    "tls": False,
    "created_at": "2026-05-02T08:00:00Z",
    "updated_at": "2026-05-02T08:00:00Z",
}
ROUTES = {
    "routes": [
        {
            "name": "ct-to-viewer",
            "match": {"Modality": "CT", "calling_ae": "CT1"},
            "destinations": ["VIEWER"],
            "created_at": "2026-05-21T09:00:00Z",
            "updated_at": "2026-05-21T09:00:00Z",
        },
        {
            "name": "everything-offsite",
            "match": {},
            "destinations": ["VIEWER", "CT1"],
            "created_at": "2026-05-22T10:30:00Z",
            "updated_at": "2026-05-22T10:30:00Z",
        },
    ]
}
AUDIT = {
    "entries": [
        {
            "id": 3,
            "at": "2026-05-22T10:30:00Z",
            "user": "alice",
            "method": "routes.add",
            "params": {"name": "everything-offsite", "match": {}, "destinations": ["VIEWER", "CT1"]},
            "result": "ok",
            "message": "",
        },
        {
            "id": 2,
            "at": "2026-05-22T10:29:41Z",
            "user": "bob",
            "method": "routes.add",
            "params": {"name": "x", "match": {}, "destinations": ["VIEWER"]},
            "result": "forbidden",
            "message": "routes.add needs the admin role; bob is operator",
        },
        {
            "id": 1,
            "at": "2026-05-21T08:59:00Z",
            "user": "local:root",
            "method": "users.add",
            "params": {"name": "alice", "role": "admin", "password": "***"},
            "result": "ok",
            "message": "",
        },
    ]
}


def console(readonly: bool = False) -> PacsdeckConsole:
    raw = {**RAW_A, "aets.list": {"aets": [*AETS["aets"], NO_ADDRESS]}, "routes.list": ROUTES, "audit.recent": AUDIT}
    snaps = [dataclasses.replace(s, raw=raw) if s.name == "clinic-a" else s for s in snapshots()]
    return PacsdeckConsole(FLEET, readonly=readonly, snapshots=snaps, events=EVENTS, history=HISTORY)


def test_node_screen_routes(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "routes"), terminal_size=SIZE)


def test_node_screen_routes_readonly(snap_compare):
    assert snap_compare(console(readonly=True), run_before=open_node("clinic-a", "routes"), terminal_size=SIZE)


def test_the_route_form(snap_compare):
    open_routes = open_node("clinic-a", "routes")

    async def run_before(pilot):
        await open_routes(pilot)
        await pilot.press("a")
        await pilot.pause()
        pilot.app.screen.query_one("#name").cursor_blink = False  # a blink under load would change the picture
        await pilot.pause()

    assert snap_compare(console(), run_before=run_before, terminal_size=SIZE)


def test_node_screen_audit(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "audit"), terminal_size=SIZE)
