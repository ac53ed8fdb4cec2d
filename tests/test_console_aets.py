"""The AE titles tab and the one-key fix of a refused sender, driven by Pilot against a real node and DCMTK."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

import yaml
from textual.widgets import Checkbox, DataTable, Input, TabbedContent

from console.app import PacsdeckConsole
from console.inventory import load_fleet
from console.screens.aet_form import AetFormScreen
from console.screens.confirm import ConfirmScreen
from console.screens.node import NodeScreen
from storage import synthetic

from .agent_support import agent_call, agent_env
from .conftest import make_node, storescu
from .console_support import until

SIZE = (180, 45)


def fleet_of(node, tmp_path, **entry) -> object:
    """A fleet file with this one local node, polled twice a second."""
    doc = {
        "known_hosts": str(tmp_path / "known_hosts"),
        "nodes": [{"name": "n1", "transport": "local", "config": str(node.config), "poll_interval": 0.5, **entry}],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_fleet(path)


def call(node, method: str, params: dict | None = None, as_user: str | None = None) -> dict:
    done = agent_call(
        node.config,
        method,
        json.dumps(params or {}),
        as_user=as_user,
        env=agent_env(node.dir / "authorized_keys"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def titles(node) -> list[str]:
    return [a["ae_title"] for a in call(node, "aets.list")["aets"]]


async def node_tab(pilot, app, tab: str) -> NodeScreen:
    """The node screen of `n1` on `tab`, once the node answered."""
    await until(pilot, lambda: app.snapshot("n1").status in ("up", "degraded"), "n1 answering")
    app.open_node("n1")
    await until(
        pilot, lambda: isinstance(app.screen, NodeScreen) and app.screen.query(TabbedContent), "the node screen"
    )
    screen = app.screen
    screen.query_one(TabbedContent).active = tab
    await pilot.pause()
    return screen


def form_open(app) -> bool:
    return isinstance(app.screen, AetFormScreen) and bool(app.screen.query("#save"))


def row_keys(table: DataTable) -> list[str]:
    return [r.value for r in table.rows]


def one_study(tmp_path, prefix: str):
    return synthetic.write_study(tmp_path / prefix, next(synthetic.studies(1, prefix=prefix)), 1, rows=32, cols=32)


def test_a_refused_storescu_is_registered_with_one_key_and_enter(tmp_path):
    node = make_node(tmp_path / "node", ae_title="FIXNODE", workers=1).start()
    try:
        files = one_study(tmp_path, "FIX")
        results, proc = storescu(node, files, aet="CT9")
        assert "Success" not in results.values(), proc.stdout + proc.stderr  # refused: CT9 is not registered
        app = PacsdeckConsole(fleet_of(node, tmp_path))
        pressed: list[str] = []

        async def press(pilot, *keys: str) -> None:
            pressed.extend(keys)
            await pilot.press(*keys)

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "associations")
                table = screen.query_one("#associations-table", DataTable)
                refused = await until(
                    pilot,
                    lambda: next((k for k, a in screen.associations.items() if a.calling_ae == "CT9"), None),
                    "CT9's rejected association on screen",
                )
                assert screen.associations[refused].result == "rejected"
                assert "not registered" in screen.associations[refused].reason
                table.move_cursor(row=row_keys(table).index(refused))
                await pilot.pause()
                await press(pilot, "a")
                await until(pilot, lambda: form_open(app), "the add form")
                form = app.screen
                assert form.query_one("#ae_title", Input).value == "CT9"
                assert form.query_one("#host", Input).value == "127.0.0.1"
                assert form.query_one("#port", Input).value == ""  # a store-only sender needs no port
                ticked = [op for op in ("store", "find", "move", "get") if form.query_one(f"#op-{op}", Checkbox).value]
                assert ticked == ["store"]
                await press(pilot, "enter")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                assert "Register CT9 on n1" in app.screen.question and "store" in app.screen.question
                await press(pilot, "enter")
                await until(pilot, lambda: "CT9" in screen.query_one("AetsPane").aets, "CT9 in the AE titles tab")
                # How long this takes is measured by bench/console_fix.py, never asserted here (no timing in tests).
                assert pressed == ["a", "enter", "enter"]
                aets = screen.query_one("#aets-table", DataTable)
                await until(pilot, lambda: "CT9" in row_keys(aets), "CT9's row")
                last = str(aets.get_row("CT9")[6])
                assert "rejected" in last, last  # the AE's last association, as the node logged it

        asyncio.run(scenario())
        registered = next(a for a in call(node, "aets.list")["aets"] if a["ae_title"] == "CT9")
        assert registered["host"] == "127.0.0.1" and registered["operations"] == ["store"]
        results, proc = storescu(node, files, aet="CT9")
        assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
        assert proc.returncode == 0  # Success: status 0x0000 for every file
        audited = [e["method"] for e in call(node, "audit.recent", {"limit": 50})["entries"]]
        assert "aets.add" in audited
    finally:
        node.stop()


def test_an_ae_added_in_the_tab_answers_echo_and_a_removed_one_is_gone(tmp_path, storescp_factory):
    node = make_node(tmp_path / "node", ae_title="ECHONODE", workers=1).start()
    scp = storescp_factory(ae_title="ECHOME")
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "aets")
                pane = screen.query_one("AetsPane")
                await until(pilot, lambda: "STORESCU" in pane.aets, "the registered AEs listed")
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the add form")
                form = app.screen
                form.query_one("#ae_title", Input).value = "ECHOME"
                form.query_one("#host", Input).value = "127.0.0.1"
                form.query_one("#port", Input).value = "70000"  # the agent refuses it: the form says so
                form.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                await pilot.press("enter")
                await until(
                    pilot,
                    lambda: form_open(app) and app.screen is not form,
                    "the form again, with the agent's words",
                )
                error = str(app.screen.query_one("#form-error").render())
                assert "port" in error and "65535" in error, error
                assert app.screen.query_one("#port").has_class("invalid")
                app.screen.query_one("#port", Input).value = str(scp.port)
                app.screen.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                await pilot.press("enter")
                table = pane.query_one("#aets-table", DataTable)
                await until(pilot, lambda: "ECHOME" in row_keys(table), "ECHOME listed")
                table.move_cursor(row=row_keys(table).index("ECHOME"))
                await pilot.press("E")
                note = pane.query_one("#aets-note")
                await until(pilot, lambda: "echo ECHOME: ok" in str(note.render()), "the echo answered", timeout=30)
                assert "ms" in str(note.render())

                # Edit: only what changed is sent, and the question says old → new (No is the default).
                await pilot.press("u")
                await until(pilot, lambda: form_open(app), "the edit form")
                assert app.screen.query_one("#ae_title", Input).disabled  # the title is the key, not a field
                app.screen.query_one("#description", Input).value = "the test's storescp"
                app.screen.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the change question")
                assert app.screen.question == "Change ECHOME on n1: description – → the test's storescp?"
                await pilot.press("right", "enter")
                await until(
                    pilot,
                    lambda: pane.aets.get("ECHOME") and pane.aets["ECHOME"].description == "the test's storescp",
                    "the new description listed",
                )

                # Remove: the question says what goes, No is the default; the arrow key moves to Yes.
                await pilot.press("d")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the removal question")
                assert "Remove ECHOME" in app.screen.question
                await pilot.press("left", "enter")
                await until(pilot, lambda: "ECHOME" not in row_keys(table), "ECHOME gone from the tab")

        asyncio.run(scenario())
        assert "ECHOME" not in titles(node)
        results, proc = storescu(node, one_study(tmp_path, "GONE"), aet="ECHOME")
        assert "Success" not in results.values(), proc.stdout + proc.stderr  # refused at once
        echo = json.loads(
            agent_call(node.config, "aets.echo", json.dumps({"ae_title": "ECHOME"}), env=agent_env(tmp_path)).stdout
        )
        assert echo["error"]["data"]["kind"] == "not_found"
    finally:
        node.stop()


def test_readonly_refuses_every_ae_change(tmp_path):
    node = make_node(tmp_path / "node", ae_title="RONODE", workers=1).start()
    try:
        storescu(node, one_study(tmp_path, "RO"), aet="CT7")  # a refusal the fix key could act on
        before = titles(node)
        app = PacsdeckConsole(fleet_of(node, tmp_path), readonly=True)

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "aets")
                pane = screen.query_one("AetsPane")
                await until(pilot, lambda: pane.aets, "the AE titles listed")
                shown = {b.binding.action for b in screen.active_bindings.values() if b.enabled}
                assert not shown & {"add", "edit", "remove", "register_calling_ae"}, shown
                assert "echo" in shown  # an echo changes nothing on the node
                assert not screen.query("#aet-add, #aet-edit, #aet-remove")
                await pilot.press("a", "u", "d")
                screen.query_one(TabbedContent).active = "associations"
                await until(pilot, lambda: screen.associations, "the associations listed")
                await pilot.press("a")
                await pilot.pause(0.5)
                assert isinstance(app.screen, NodeScreen)  # no form, no question
                pane.add()  # even called directly, the app's one door refuses it
                await until(pilot, lambda: form_open(app), "the form")
                app.screen.query_one("#ae_title", Input).value = "CT7"
                app.screen.query_one("#host", Input).value = "127.0.0.1"
                app.screen.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
                await pilot.press("enter")
                await until(pilot, lambda: "read-only" in str(pane.query_one("#aets-note").render()), "the refusal")

        asyncio.run(scenario())
        assert titles(node) == before
    finally:
        node.stop()


def test_a_role_that_may_not_is_told_so(tmp_path):
    """An operator's session (agent --as) may echo but not add: the agent's `forbidden` as one clear line."""
    node = make_node(tmp_path / "node", ae_title="ROLENODE", workers=1).start()
    try:
        call(node, "users.add", {"name": "opal", "role": "operator"})
        agent = [sys.executable, "-m", "pacsdeck.cli", "agent", "stdio", "--as", "opal"]
        app = PacsdeckConsole(fleet_of(node, tmp_path, agent_command=agent))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "aets")
                pane = screen.query_one("AetsPane")
                await until(pilot, lambda: pane.aets, "the AE titles listed")
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the form")
                app.screen.query_one("#ae_title", Input).value = "CT5"
                app.screen.query_one("#host", Input).value = "127.0.0.1"
                app.screen.query_one("#port", Input).value = "104"
                app.screen.query_one("#save").press()
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
                await pilot.press("enter")
                note = pane.query_one("#aets-note")
                await until(pilot, lambda: "refused" in str(note.render()), "the refusal")
                text = str(note.render())
                assert "operator" in text and "admin" in text, text
                assert isinstance(app.screen, NodeScreen)

        asyncio.run(scenario())
        assert "CT5" not in titles(node)
    finally:
        node.stop()


# --- the words and params the tab builds (no node needed) ---------------------------------------------


def test_an_edit_sends_only_what_changed_and_the_question_says_old_and_new():
    from console import aet_edits as edits
    from console.results import Aet

    old = Aet("CT1", host="10.0.0.20", port=104, operations=("store",))
    draft = dataclasses.replace(edits.draft_of(old), port=11112, operations=("store", "find"))
    params = edits.update_params(old, draft)
    assert params == {"ae_title": "CT1", "port": 11112, "operations": ["store", "find"]}
    assert edits.describe_update(old, params, "site-b") == (
        "Change CT1 on site-b: port 104 → 11112; operations store → store, find?"
    )
    assert edits.update_params(old, edits.draft_of(old)) == {"ae_title": "CT1"}  # nothing to send


def test_only_a_refusal_for_an_unregistered_calling_ae_gets_the_fix():
    from agent.protocol import FORBIDDEN, RPCError
    from console import aet_edits as edits
    from console.results import Association

    refused = Association(
        calling_ae="CT9",
        peer_host="10.1.0.9",
        result="rejected",
        reason="calling AE title 'CT9' is not registered; add it with aets.add",
    )
    draft = edits.from_refusal(refused)
    assert (draft.ae_title, draft.host, draft.port, draft.operations) == ("CT9", "10.1.0.9", 104, ("store",))
    # An agent whose aets.add takes an AE without a port (rpc.discover says so) gets none.
    portless = edits.from_refusal(refused, port_required=False)
    assert portless.port is None and "port" not in edits.add_params(portless)
    wrong_called = dataclasses.replace(refused, reason="called AE title 'X' is not ours ('PACS')")
    assert edits.from_refusal(wrong_called) is None
    assert edits.from_refusal(dataclasses.replace(refused, result="released")) is None
    forbidden = RPCError(FORBIDDEN, "aets.add needs the admin role; …", {"required_role": "admin", "role": "viewer"})
    assert edits.refusal("aets.add CT9", forbidden) == (
        "aets.add CT9 refused: your role (viewer) may not do this; it needs admin"
    )


def test_a_refusal_is_a_fleet_event_and_one_key_there_registers_the_sender(tmp_path):
    node = make_node(tmp_path / "node", ae_title="EVNODE", workers=1).start()
    try:
        files = one_study(tmp_path, "EV")
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: app.snapshot("n1").status in ("up", "degraded"), "n1 answering")
                results, proc = await asyncio.to_thread(storescu, node, files, aet="CT8")
                assert "Success" not in results.values(), proc.stdout + proc.stderr
                event = await until(
                    pilot,
                    lambda: next((e for e in app.event_log if "CT8 was refused by n1" in e.text), None),
                    "the refusal in the events panel",
                )
                assert event.text == "CT8 was refused by n1: not registered" and event.severity == "warning"
                await until(
                    pilot,
                    lambda: (
                        "register_refused"
                        in {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
                    ),
                    "the fix key in the footer",
                )
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the add form, from the fleet screen")
                assert app.screen.query_one("#ae_title", Input).value == "CT8"
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                await pilot.press("enter")
                await until(pilot, lambda: "CT8" in app.screen.query_one("AetsPane").aets, "CT8 registered")

        asyncio.run(scenario())
        results, proc = storescu(node, files, aet="CT8")
        assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
    finally:
        node.stop()


def test_only_refusals_newer_than_the_last_poll_are_events():
    from console.results import Association
    from console.snapshot import NodeSnapshot, events

    def snap(*refusals: Association) -> NodeSnapshot:
        return NodeSnapshot("site-b", "", (), "up", None, polled_at=1.0, refusals=refusals)

    old = Association(id=5, calling_ae="CT1", result="rejected", reason="calling AE title 'CT1' is not registered")
    new = Association(id=7, calling_ae="CT9", result="rejected", reason="calling AE title 'CT9' is not registered")
    other = Association(id=8, calling_ae="MR2", result="rejected", reason="called AE title 'X' is not ours")
    assert events(None, snap(old)) == []  # what was refused before the console started is history, not news
    told = events(snap(old), snap(other, new, old))
    assert [e.text for e in told] == [
        "CT9 was refused by site-b: not registered",
        "MR2 was refused by site-b: called AE title 'X' is not ours",
    ]
    assert told[0].association == new and told[0].severity == "warning"
    assert events(snap(other, new, old), snap(other, new, old)) == []


def test_number_keys_switch_the_node_screens_tabs_wherever_the_focus_is(tmp_path):
    node = make_node(tmp_path / "node", ae_title="TABNODE", workers=1).start()
    try:
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "overview")
                tabs = screen.query_one(TabbedContent)
                for key, tab in (("6", "aets"), ("5", "associations"), ("3", "storage"), ("1", "overview")):
                    await pilot.press(key)
                    await until(pilot, lambda tab=tab: tabs.active == tab, f"the {tab} tab after {key}")

        asyncio.run(scenario())
    finally:
        node.stop()
