"""Snapshot tests of a row shown in full (Enter on a row of the node screen), on the fixed fleet of
tests/test_console_snapshots.py (no polling). Update with `--snapshot-update` after a deliberate change."""

from __future__ import annotations

from .test_console_snapshots import SIZE, console, open_node


def row_in_full(tab: str, table: str, row: int):
    open_tab = open_node("clinic-a", tab)

    async def run_before(pilot):
        await open_tab(pilot)
        pilot.app.screen.query_one(f"#{table}").move_cursor(row=row)
        await pilot.press("enter")
        await pilot.pause()

    return run_before


def test_a_refused_association_in_full(snap_compare):
    assert snap_compare(console(), run_before=row_in_full("associations", "associations-table", 1), terminal_size=SIZE)


def test_a_failed_job_in_full(snap_compare):
    assert snap_compare(console(), run_before=row_in_full("queues", "jobs", 0), terminal_size=SIZE)
