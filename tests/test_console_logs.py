"""The Log tab driven by Pilot against a real node: it follows the node's log live, filters by level, and stops
asking once it is hidden or its screen is left."""

from __future__ import annotations

import asyncio
import time

from textual.widgets import RichLog, TabbedContent

from console.app import PacsdeckConsole
from console.screens.fleet import FleetScreen
from console.widgets.log_pane import LogPane

from .conftest import dcmtk, make_node
from .test_agent_journal import UNIT, journald, start_as_unit  # noqa: F401 - fixture
from .test_console_aets import SIZE, fleet_of, node_tab, until


def shown_text(pane: LogPane) -> list[str]:
    return [strip.text for strip in pane.query_one("#log-lines", RichLog).lines]


def refused_echo(node) -> None:
    """A C-ECHO from an AE title the node does not know: the node logs a WARNING about it."""
    dcmtk("echoscu", "-to", "5", "-aet", "NOBODY", "-aec", node.ae_title, "127.0.0.1", str(node.port), timeout=30)


async def echo_until_shown(pilot, node, pane: LogPane, attempts: int = 10) -> None:
    """A refused echo, again until the tab shows its line: the node does not log every rejection (when the
    connection's close is handled before EVT_REJECTED, storage/dimse/associations.py drops the warning)."""
    for _ in range(attempts):
        await asyncio.to_thread(refused_echo, node)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if any("NOBODY" in line for line in shown_text(pane)):
                return
            await pilot.pause(0.05)
    raise AssertionError(f"no refusal in the Log tab after {attempts} refused echoes: {shown_text(pane)}")


async def polls_go_by(pilot, app, count: int = 3) -> None:
    """Wait (with a deadline) until the app polled the node `count` more times: at 0.5 s a poll, longer than
    the Log tab's follow interval, so a follow still running would have asked meanwhile."""
    seen: list = []

    def polled() -> bool:
        at = app.snapshot("n1").polled_at
        if not seen or seen[-1] != at:
            seen.append(at)
        return len(seen) > count

    await until(pilot, polled, f"{count} more polls of n1")


def test_the_log_tab_shows_a_line_the_node_writes_after_it_opened(tmp_path):
    node = make_node(tmp_path / "node", ae_title="LOGNODE", workers=1).start()
    try:
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "log")
                pane = screen.query_one(LogPane)
                await until(pilot, lambda: pane.tail is not None and pane.count > 0, "the log's first lines")
                assert pane.tail.source == "file" and pane.tail.path == str(node.dir / "node.log")
                assert not any("NOBODY" in line for line in shown_text(pane))  # written only after the tab opened
                assert any(" INFO " in line for line in shown_text(pane))
                assert app.focused is pane.query_one("#log-lines")

                await echo_until_shown(pilot, node, pane)
                assert any("WARNING" in line and "NOBODY" in line for line in shown_text(pane)), shown_text(pane)

                # l: all -> info -> warning; the fresh tail at warning shows the refusal and no INFO line.
                await pilot.press("l", "l")
                assert pane.level == "WARNING" and "warning and above" in str(pane.query_one("#log-note").content)
                await until(pilot, lambda: pane.count > 0 and pane.position is not None, "the warnings")
                assert any("NOBODY" in line for line in shown_text(pane))
                assert not any(" INFO " in line for line in shown_text(pane)), shown_text(pane)

                # Another tab: no more calls; back on the Log tab the follow goes on.
                screen.query_one(TabbedContent).active = "overview"
                await pilot.pause()
                hidden_at = pane.calls
                await polls_go_by(pilot, app)
                assert pane.calls == hidden_at
                screen.query_one(TabbedContent).active = "log"
                await until(pilot, lambda: pane.calls > hidden_at, "the follow resuming on the Log tab")

                # f pauses the follow.
                await pilot.press("f")
                assert pane.following is False and "paused" in str(pane.query_one("#log-note").content)
                await until(pilot, lambda: not pane.asking, "the last call answered")
                paused_at = pane.calls
                await polls_go_by(pilot, app)
                assert pane.calls == paused_at
                await pilot.press("f")
                await until(pilot, lambda: pane.calls > paused_at, "the follow on again")

                # Leaving the screen ends the follow: the pane and its timer are gone, no call is made.
                await pilot.press("escape")
                await until(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet screen")
                left_at = pane.calls
                await polls_go_by(pilot, app)
                assert pane.calls == left_at and not pane.is_attached
                assert not [w for w in app.workers if w.name.startswith("logs.tail") and w.is_running]

        asyncio.run(scenario())
    finally:
        node.stop()


def test_a_node_with_no_log_to_read_says_where_it_looked(tmp_path):
    node = make_node(tmp_path / "node", ae_title="NOLOG", workers=1).start()
    try:
        (node.dir / "node.log").unlink()  # the node writes on into the unlinked file: nothing logs.tail can find
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "log")
                pane = screen.query_one(LogPane)
                note = pane.query_one("#log-note")
                await until(pilot, lambda: "error" in note.classes, "the log tab's error")
                said = str(note.content)
                assert "logs.tail failed: no log to read" in said and "node.log" in said and "log.journal_unit" in said
                assert pane.tail is None and not shown_text(pane)

        asyncio.run(scenario())
    finally:
        node.stop()


def test_the_log_tab_follows_the_journal_of_a_node_run_as_a_unit(tmp_path, journald):
    node = make_node(
        tmp_path / "node",
        ae_title="JLOG",
        workers=1,
        log={"journal_unit": UNIT, "journal_namespace": journald.namespace},
    )
    try:
        start_as_unit(node, journald)
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "log")
                pane = screen.query_one(LogPane)
                await until(pilot, lambda: pane.tail is not None and pane.count > 0, "the unit's first lines")
                assert pane.tail.source == "journal" and pane.position == {"after_cursor": pane.tail.cursor}
                assert f"journal of {UNIT}" in str(pane.query_one("#log-note").content)
                await echo_until_shown(pilot, node, pane)
                assert any("WARNING" in line and "NOBODY" in line for line in shown_text(pane))

        asyncio.run(scenario())
    finally:
        node.stop()
