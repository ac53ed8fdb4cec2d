"""Snapshot test of the Log tab on fixed lines (the fixed fleet of tests/test_console_snapshots.py, no polling).
Update with `--snapshot-update` after a deliberate change."""

from __future__ import annotations

import dataclasses

from textual.widgets import RichLog

from console.app import PacsdeckConsole
from console.widgets.log_pane import LogPane

from .test_console_aets import until
from .test_console_snapshots import EVENTS, FLEET, HISTORY, RAW_A, SIZE, open_node, snapshots


def _line(time, level, logger, message) -> dict:
    return {"time": time, "level": level, "logger": logger, "message": message}


LOGS = {
    "lines": [
        _line(
            "2026-05-20T14:00:00.120Z", "INFO", "storage.node", "pacsdeck 0.1.0 node CLINICA listening on 0.0.0.0:104"
        ),
        _line("2026-05-20T14:02:11.504Z", "INFO", "storage.dimse.forward", "queue: job 12 (1.2.3 to ARCHIVE) done"),
        _line(
            "2026-05-20T14:05:42.871Z",
            "WARNING",
            "storage.dimse.associations",
            "association rejected: calling 'CT9' called 'CLINICA' from 10.1.0.9: calling AE title 'CT9' is not "
            "registered; add it with aets.add",
        ),
        _line(
            "2026-05-20T14:06:03.002Z", "ERROR", "storage.dimse.scp", "cannot store 1.2.3.4.5: No space left on device"
        ),
        _line(None, None, None, "Traceback (most recent call last):"),
        _line(None, None, None, '  File "storage/pools/write.py", line 88, in write'),
        _line(None, None, None, "OSError: [Errno 28] No space left on device"),
        _line("2026-05-20T14:06:03.010Z", "WARNING", "storage.pools", "primary: full, new instances go to archive"),
        _line("2026-05-20T14:10:00.000Z", "DEBUG", "storage.workers", "worker 2 alive"),
    ],
    "source": "file",
    "path": "/var/lib/pacsdeck/node.log",
    "end": 4096,
    "cursor": None,
    "truncated": True,
}


def console() -> PacsdeckConsole:
    snaps = [
        dataclasses.replace(s, raw={**RAW_A, "logs.tail": LOGS}) if s.name == "clinic-a" else s for s in snapshots()
    ]
    return PacsdeckConsole(FLEET, snapshots=snaps, events=EVENTS, history=HISTORY)


def test_node_screen_log(snap_compare):
    open_log = open_node("clinic-a", "log")

    async def run_before(pilot):
        await open_log(pilot)
        pane = pilot.app.screen.query_one(LogPane)
        await until(pilot, lambda: len(pane.query_one(RichLog).lines) >= len(LOGS["lines"]), "the fixed lines shown")
        await pilot.pause()

    assert snap_compare(console(), run_before=run_before, terminal_size=SIZE)
