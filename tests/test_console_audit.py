"""The Audit tab, driven by Pilot against a real node: the console's own change shows up with its user and
method, the filters narrow it (and are kept across refreshes), a refused call is a row coloured as an error."""

from __future__ import annotations

import asyncio
import json
import os
import pwd

from textual.widgets import DataTable, Input, TabbedContent

from console.app import PacsdeckConsole

from .agent_support import agent_call, agent_env
from .test_console_aets import SIZE, call, fleet_of, node_tab, until
from .test_console_routes import add_route_in_ui, routed_node

ME = f"local:{pwd.getpwuid(os.geteuid()).pw_name}"  # who a local session is, for the agent


async def apply(pilot, pane, user: str, method: str) -> None:
    """Type the filters and Enter, as a person would; returns once the pane shows that filter's answer."""
    pane.query_one("#audit-user", Input).value = user
    field = pane.query_one("#audit-method", Input)
    field.value = method
    field.focus()
    old = pane.entries
    await pilot.press("enter")
    await until(pilot, lambda: pane.entries is not old, f"the entries for user {user!r} method {method!r}")


def test_the_audit_tab_shows_the_consoles_own_change_and_filters_it(tmp_path, storescp_factory):
    scp = storescp_factory(ae_title="FWD")
    node = routed_node(tmp_path, scp)
    call(node, "users.add", {"name": "opal", "role": "operator"})
    params = json.dumps({"ae_title": "CT5", "host": "127.0.0.1", "port": 104})
    tried = agent_call(node.config, "aets.add", params, as_user="opal", env=agent_env(node.dir / "authorized_keys"))
    assert tried.returncode != 0 and "forbidden" in tried.stdout + tried.stderr  # audited too: who tried, the refusal
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "routes")
                routes = screen.query_one("RoutesPane")
                await until(pilot, lambda: len(routes.aets) == 3, "the node's AEs known to the tab")
                await add_route_in_ui(pilot, app, routes, "audited", {"Modality": "CT"}, ["FWD"])

                screen.query_one(TabbedContent).active = "audit"
                await pilot.pause()
                pane = screen.query_one("AuditPane")
                table = pane.query_one("#audit-table", DataTable)
                mine = await until(
                    pilot,
                    lambda: next((e for e in pane.entries if e.method == "routes.add"), None),
                    "the console's routes.add in the Audit tab",
                )
                assert (mine.user, mine.result) == (ME, "ok") and mine.params["name"] == "audited"
                row = [str(c) for c in table.get_row(str(mine.id))]
                assert row[1:4] == [ME, "routes.add", "ok"] and "name=audited" in row[4], row
                assert screen.focused is table  # the tab opens on its table
                refused = next(e for e in pane.entries if e.user == "opal")
                assert (refused.method, refused.result) == ("aets.add", "forbidden")
                failed, ok = table.get_row(str(refused.id))[3], table.get_row(str(mine.id))[3]
                assert failed.style and not ok.style  # the refused call is coloured as an error (app.tcss)
                assert {"users.add", "aets.add", "routes.add"} <= {e.method for e in pane.entries}

                # As a person would: `/` to the filters, Tab to the method, type it, Enter.
                old = pane.entries
                await pilot.press("slash")
                assert screen.focused is pane.query_one("#audit-user")
                await pilot.press("tab", *"routes.add", "enter")
                await until(pilot, lambda: pane.entries is not old, "the entries of routes.add")
                assert [e.id for e in pane.entries] == [mine.id] and table.row_count == 1
                assert "1 entry with method routes.add" in str(pane.query_one("#audit-note").render())
                # A refresh asks with the filter kept (the screen asks the pane's DETAILS every time).
                call(node, "aets.remove", {"ae_title": "NOADDR"})
                asked = screen.details.get("audit.recent")
                screen.refresh_details()
                await until(pilot, lambda: screen.details.get("audit.recent") is not asked, "the refresh answered")
                assert [e.id for e in pane.entries] == [mine.id]
                await pilot.press("escape")  # out of the filter, back on the table; the screen stays
                assert screen.focused is table and app.screen is screen

                await apply(pilot, pane, "opal", "")
                assert [e.id for e in pane.entries] == [refused.id]
                await apply(pilot, pane, ME, "")
                assert {e.user for e in pane.entries} == {ME} and mine.id in [e.id for e in pane.entries]
                assert "aets.remove" in {e.method for e in pane.entries}
                await apply(pilot, pane, "nobody", "")
                assert table.row_count == 0
                assert "no entries with user nobody" in str(pane.query_one("#audit-note").render())

        asyncio.run(scenario())
    finally:
        node.stop()
