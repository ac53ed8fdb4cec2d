"""The Routes tab, driven by Pilot against a real node: a route added in the form forwards to a real storescp,
the agent's refusal reopens the form, a destination without address cannot be ticked, read-only changes nothing."""

from __future__ import annotations

import asyncio
import sys

from textual.widgets import Checkbox, Input

from console.app import PacsdeckConsole
from console.screens.confirm import ConfirmScreen
from console.screens.node import NodeScreen
from console.screens.route_form import RouteFormScreen

from .conftest import make_node, storescu, wait_for
from .test_console_aets import SIZE, call, fleet_of, node_tab, one_study, until


def routed_node(tmp_path, scp, **kw):
    """A node that knows the sender, the storescp `FWD` (an address: a destination) and `NOADDR` (none)."""
    aets = [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "FWD", "host": "127.0.0.1", "port": scp.port, "operations": ["store"]},
        {"ae_title": "NOADDR", "host": "127.0.0.1", "operations": ["store"]},
    ]
    return make_node(tmp_path / "node", ae_title="ROUTENODE", aets=aets, workers=1, **kw).start()


def form_open(app) -> bool:
    return isinstance(app.screen, RouteFormScreen) and bool(app.screen.query("#save"))


def destination(form: RouteFormScreen, title: str) -> Checkbox:
    index = [a.ae_title for a in form.aets].index(title)
    return form.query_one(f"#dest-{index}", Checkbox)


async def fill_route(pilot, app, name: str, match: dict[str, str], destinations: list[str]) -> RouteFormScreen:
    """`a` on the Routes tab, the form filled as a person would, Add pressed: the question is up."""
    await pilot.press("a")
    await until(pilot, lambda: form_open(app), "the route form")
    form = app.screen
    form.query_one("#name", Input).value = name
    for i, (key, pattern) in enumerate(match.items()):
        form.query_one(f"#key-{i}", Input).value = key
        form.query_one(f"#pattern-{i}", Input).value = pattern
    for title in destinations:
        box = destination(form, title)
        box.focus()
        await pilot.press("space")
        assert box.value, f"{title} ticked"
    form.query_one("#save").press()
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
    return form


async def add_route_in_ui(pilot, app, pane, name: str, match: dict[str, str], destinations: list[str]) -> str:
    """The whole add, answered Yes; returns the question that was asked."""
    await fill_route(pilot, app, name, match, destinations)
    question = app.screen.question
    await pilot.press("left", "enter")  # No is the default: the arrow key moves to Add route
    await until(pilot, lambda: name in pane.routes, f"route {name} listed")
    return question


def test_a_route_added_in_the_tab_forwards_and_a_removed_one_is_gone(tmp_path, storescp_factory):
    scp = storescp_factory(ae_title="FWD")
    node = routed_node(tmp_path, scp)
    files = one_study(tmp_path, "RT")  # CT instances from STORESCU
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "routes")
                pane = screen.query_one("RoutesPane")
                await until(pilot, lambda: len(pane.aets) == 3, "the node's AEs known to the tab")
                assert "no routes" in str(pane.query_one("#routes-note").render())
                question = await add_route_in_ui(pilot, app, pane, "ct-to-fwd", {"Modality": "CT"}, ["FWD"])
                assert question == "Add route ct-to-fwd on n1: forward every new instance whose Modality=CT to FWD?"
                note = str(pane.query_one("#routes-note").render())
                assert "added route ct-to-fwd on n1: Modality=CT → FWD" in note, note
                table = pane.query_one("#routes-table")
                await until(pilot, lambda: table.row_count == 1, "the route's row")
                row = [str(c) for c in table.get_row("ct-to-fwd")]
                assert row[:3] == ["ct-to-fwd", "Modality=CT", "FWD"] and row[3].endswith("Z")

                results, proc = await asyncio.to_thread(storescu, node, files)
                assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
                await asyncio.to_thread(wait_for, lambda: len(scp.files()) == len(files), 60, 0.1, "forwarded")

                await pilot.press("d")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the removal question")
                assert app.screen.question.startswith("Remove route ct-to-fwd (Modality=CT → FWD) from n1?")
                await pilot.press("left", "enter")
                await until(pilot, lambda: not pane.routes, "the route gone from the tab")
                assert "removed route ct-to-fwd from n1" in str(pane.query_one("#routes-note").render())

        asyncio.run(scenario())
        assert call(node, "routes.list") == {"routes": []}
    finally:
        node.stop()


def test_a_bad_match_key_reopens_the_form_and_an_ae_without_address_cannot_be_picked(tmp_path, storescp_factory):
    scp = storescp_factory(ae_title="FWD")
    node = routed_node(tmp_path, scp)
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "routes")
                pane = screen.query_one("RoutesPane")
                await until(pilot, lambda: len(pane.aets) == 3, "the node's AEs known to the tab")
                first = await fill_route(pilot, app, "bad", {"NotAKeyword": "x"}, ["FWD"])
                await pilot.press("left", "enter")
                await until(pilot, lambda: form_open(app) and app.screen is not first, "the form again")
                form = app.screen
                error = str(form.query_one("#form-error").render())
                assert "NotAKeyword" in error and "not a DICOM keyword" in error, error
                assert form.query_one("#key-0").has_class("invalid") and form.focused is form.query_one("#key-0")
                assert form.query_one("#name", Input).value == "bad" and destination(form, "FWD").value
                # The box without an address takes no tick: it cannot have the focus, a click does nothing.
                box = destination(form, "NOADDR")
                assert box.disabled and not box.focusable and "NOADDR  no address" in str(box.label)
                await pilot.click(box)
                assert not box.value

                # Nothing ticked: the form says so itself; an empty match is said as "everything".
                destination(form, "FWD").value = False
                form.query_one("#key-0", Input).value = ""
                form.query_one("#pattern-0", Input).value = ""
                form.query_one("#save").press()
                await pilot.pause()
                assert form_open(app) and "tick at least one" in str(form.query_one("#form-error").render())
                destination(form, "FWD").value = True
                form.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                assert "EVERY new instance" in app.screen.question and "matches everything" in app.screen.question
                await pilot.press("enter")  # No: nothing is added
                await until(pilot, lambda: isinstance(app.screen, NodeScreen), "back on the node screen")

        asyncio.run(scenario())
        assert call(node, "routes.list") == {"routes": []}
        refused = call(node, "audit.recent", {"method": "routes.add"})["entries"]
        assert [e["result"] for e in refused] == ["invalid_params"]
    finally:
        node.stop()


def test_readonly_adds_and_removes_nothing(tmp_path, storescp_factory):
    scp = storescp_factory(ae_title="FWD")
    node = routed_node(tmp_path, scp)
    call(node, "routes.add", {"name": "kept", "match": {}, "destinations": ["FWD"]})
    before = call(node, "routes.list")
    app = PacsdeckConsole(fleet_of(node, tmp_path), readonly=True)
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "routes")
                pane = screen.query_one("RoutesPane")
                await until(pilot, lambda: "kept" in pane.routes, "the route listed")
                assert [str(c) for c in pane.query_one("#routes-table").get_row("kept")][1] == "everything"
                shown = {b.binding.action for b in screen.active_bindings.values() if b.enabled}
                assert not shown & {"add", "remove"}, shown
                assert not screen.query("#route-add, #route-remove")
                await pilot.press("a", "d")
                await pilot.pause()
                assert isinstance(app.screen, NodeScreen)  # no form, no question
                pane.remove()  # even called directly, the app's one door refuses it
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
                await pilot.press("left", "enter")
                note = pane.query_one("#routes-note")
                await until(pilot, lambda: "read-only" in str(note.render()), "the refusal")

        asyncio.run(scenario())
        assert call(node, "routes.list") == before
    finally:
        node.stop()


def test_a_role_that_may_not_see_routes_is_told_so(tmp_path, storescp_factory):
    """routes.* are admin-only, reads included: an operator's session gets one clear line, not an empty list."""
    scp = storescp_factory(ae_title="FWD")
    node = routed_node(tmp_path, scp)
    call(node, "users.add", {"name": "opal", "role": "operator"})
    agent = [sys.executable, "-m", "pacsdeck.cli", "agent", "stdio", "--as", "opal"]
    app = PacsdeckConsole(fleet_of(node, tmp_path, agent_command=agent))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "routes")
                note = screen.query_one("RoutesPane").query_one("#routes-note")
                await until(pilot, lambda: "refused" in str(note.render()), "the refusal")
                text = str(note.render())
                assert text == "routes.list refused: your role (operator) may not do this; it needs admin", text

        asyncio.run(scenario())
    finally:
        node.stop()
