"""Snapshot tests of the Users tab and of its add form, on the fixed fleet of tests/test_console_snapshots.py
(no polling). Update with `--snapshot-update` after a deliberate change."""

from __future__ import annotations

import dataclasses

from console.app import PacsdeckConsole
from console.screens.user_form import UserFormScreen

from .test_console_snapshots import EVENTS, FLEET, HISTORY, RAW_A, SIZE, open_node, snapshots


def key(key_type: str, digest: str) -> dict:
    return {"type": key_type, "fingerprint": f"{key_type} SHA256:{digest}"}


USERS = {
    "users": [
        {
            "name": "ada",
            "role": "admin",
            "has_password": False,
            "ssh_keys": [key("ssh-ed25519", "0itLybGehi8VuuDqAk4pETpQRftxxCPszQw55dl3p8Q")],
            "created_at": "2026-05-01T08:00:00Z",
            "updated_at": "2026-05-01T08:00:00Z",
        },
        {
            "name": "olga",
            "role": "operator",
            "has_password": True,  # made before passwords were dropped
            "ssh_keys": [
                key("ssh-rsa", "Zx2bq7WkQy0c1m8sJcT6b3gB0q4vH2eLwR9uN5aPz1k"),
                key("ssh-ed25519", "b0hWq3c9dT1nX7yE2kR5uJ8vL4mP6sA0fG1iK9oZ2wQ"),
            ],
            "created_at": "2026-03-12T09:15:00Z",
            "updated_at": "2026-05-20T14:30:00Z",
        },
        {
            "name": "vic",
            "role": "viewer",
            "has_password": False,
            "ssh_keys": [],
            "created_at": "2026-05-21T10:00:00Z",
            "updated_at": "2026-05-21T10:00:00Z",
        },
    ]
}


def console(readonly: bool = False) -> PacsdeckConsole:
    snaps = [
        dataclasses.replace(s, raw={**RAW_A, "users.list": USERS}) if s.name == "clinic-a" else s for s in snapshots()
    ]
    return PacsdeckConsole(FLEET, readonly=readonly, snapshots=snaps, events=EVENTS, history=HISTORY)


def test_node_screen_users(snap_compare):
    assert snap_compare(console(), run_before=open_node("clinic-a", "users"), terminal_size=SIZE)


def test_the_add_user_form(snap_compare):
    open_users = open_node("clinic-a", "users")

    async def run_before(pilot):
        await open_users(pilot)
        await pilot.press("a")
        for _ in range(200):  # the form mounted with its first field focused: a few frames on a busy machine
            if isinstance(pilot.app.screen, UserFormScreen) and pilot.app.screen.focused is not None:
                break
            await pilot.pause(0.02)
        pilot.app.screen.focused.cursor_blink = False  # a blinking cursor is caught on or off: keep it on
        await pilot.pause()

    assert snap_compare(console(), run_before=run_before, terminal_size=SIZE)
