"""The AE roll-out from the console: nodes marked with space, one AE from the form, the dry run, batches that
stop at the unreachable node, then the same AE again once it is unmarked. Real node folders and agents."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from textual.widgets import DataTable, Input

from console.app import PacsdeckConsole
from console.inventory import load_fleet
from console.screens.confirm import ConfirmScreen
from console.screens.fleet import FleetScreen
from console.screens.rollout import RolloutScreen

from .conftest import make_node, pacsdeck
from .test_console_aets import SIZE, form_open, until


@pytest.fixture
def site(tmp_path):
    """alpha and gamma: node folders (their agents need only the index); ghost: a local entry whose agent
    command does not exist (unreachable); target: a running node that lets alpha and gamma echo it."""
    known = [{"ae_title": name.upper(), "host": "127.0.0.1"} for name in ("alpha", "gamma")]
    target = make_node(tmp_path / "target", ae_title="TARGET", aets=known).start()
    nodes = {name: make_node(tmp_path / name, ae_title=name.upper(), aets=[]) for name in ("alpha", "gamma")}
    entries = [
        {"name": "alpha", "transport": "local", "config": str(nodes["alpha"].config), "poll_interval": 1},
        {"name": "ghost", "transport": "local", "agent_command": [str(tmp_path / "no-such-agent")], "call_timeout": 5},
        {"name": "gamma", "transport": "local", "config": str(nodes["gamma"].config), "poll_interval": 1},
    ]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"known_hosts": str(tmp_path / "known_hosts"), "nodes": entries}))
    yield {"fleet": load_fleet(path), "nodes": nodes, "target": target}
    target.stop()


def registered(node) -> dict[str, dict]:
    done = pacsdeck("agent", "call", "aets.list", "--config", str(node.config))
    assert done.returncode == 0, done.stderr
    return {a["ae_title"]: a for a in json.loads(done.stdout)["aets"]}


def states(screen: RolloutScreen) -> dict[str, str]:
    return {n.name: n.state for n in screen.nodes}


async def mark(pilot, app, *names: str) -> None:
    fleet = app.screen
    assert isinstance(fleet, FleetScreen)
    for name in names:
        fleet.table.move_cursor(row=fleet.table.shown.index(name))
        await pilot.press("space")
    await until(pilot, lambda: fleet.marked == set(names), f"{names} marked")


async def roll_out(pilot, app, port: int) -> RolloutScreen:
    """`A`, the form filled in with TARGET, Register: the roll-out screen once its dry run is read."""
    await pilot.press("A")
    await until(pilot, lambda: form_open(app), "the AE form")
    app.screen.query_one("#ae_title", Input).value = "TARGET"
    app.screen.query_one("#host", Input).value = "127.0.0.1"
    app.screen.query_one("#port", Input).value = str(port)
    app.screen.query_one("#save").press()
    await until(pilot, lambda: isinstance(app.screen, RolloutScreen), "the roll-out screen")
    screen = app.screen
    await until(pilot, lambda: screen.phase == "planned", "the dry run", timeout=60)
    return screen


async def apply(pilot, app, screen: RolloutScreen) -> None:
    await pilot.press("a")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
    assert "stopping at the first node that fails" in str(app.screen.query_one(".question").render())
    await pilot.press("right", "enter")  # No has the focus first; the arrow moves to Apply
    await until(pilot, lambda: screen.phase == "done", "the roll-out", timeout=90)


def test_a_console_rollout_stops_at_the_unreachable_node_then_completes(site):
    alpha, gamma = site["nodes"]["alpha"], site["nodes"]["gamma"]
    port = site["target"].port
    app = PacsdeckConsole(site["fleet"])

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot("ghost").status == "unreachable", "ghost polled")
            await mark(pilot, app, "alpha", "ghost", "gamma")
            screen = await roll_out(pilot, app, port)
            # The dry run: a diff for every node it can read, the reason for the one it cannot, nothing changed.
            plans = {n.name: n for n in screen.nodes}
            assert [c.action for c in plans["alpha"].plan] == ["add"] == [c.action for c in plans["gamma"].plan]
            assert plans["ghost"].error is not None
            table = screen.query_one("#rollout-table", DataTable)
            assert str(table.get_row("alpha")[1]).startswith("add TARGET")
            assert str(table.get_row("ghost")[1]).startswith("cannot plan: aets.list")
            note = str(screen.query_one("#rollout-note").render())
            assert "nothing changed" in note and "stop at ghost" in note
            assert registered(alpha) == registered(gamma) == {}

            await apply(pilot, app, screen)
            assert states(screen) == {"alpha": "changed", "ghost": "failed", "gamma": "not attempted"}
            assert "stopped at ghost" in str(screen.query_one("#rollout-note").render())
            assert set(registered(alpha)) == {"TARGET"} and registered(gamma) == {}
            assert screen.nodes[0].echoes[0]["ok"], screen.nodes[0].echoes  # the target answers alpha's echo

            # Unmark ghost and roll the same AE out again: alpha has it already, gamma gets it.
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet screen")
            fleet = app.screen
            fleet.table.move_cursor(row=fleet.table.shown.index("ghost"))
            await pilot.press("space")  # toggles it off
            await until(pilot, lambda: app.screen.rollout_targets() == ["alpha", "gamma"], "alpha and gamma marked")
            screen = await roll_out(pilot, app, port)
            assert [c.action for n in screen.nodes for c in n.plan] == ["already there", "add"]
            await apply(pilot, app, screen)
            assert states(screen) == {"alpha": "unchanged", "gamma": "changed"}

    asyncio.run(scenario())
    assert set(registered(gamma)) == {"TARGET"}
    assert registered(gamma)["TARGET"]["port"] == port
    # Each change went through the node's agent: it is in that node's audit log.
    params = '{"method": "aets.add"}'
    done = pacsdeck("agent", "call", "audit.recent", "--params", params, "--config", str(gamma.config))
    assert [e["params"].get("ae_title") for e in json.loads(done.stdout)["entries"]] == ["TARGET"]


def test_a_bad_value_in_the_rollout_form_comes_back_with_the_field_named(site):
    app = PacsdeckConsole(site["fleet"])

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await mark(pilot, app, "alpha")
            await pilot.press("A")
            await until(pilot, lambda: form_open(app), "the AE form")
            app.screen.query_one("#ae_title", Input).value = "TARGET"
            app.screen.query_one("#port", Input).value = "70000"
            app.screen.query_one("#save").press()
            await until(
                pilot,
                lambda: form_open(app) and "port" in str(app.screen.query_one("#form-error").render()),
                "the form again, with the port named",
            )

    asyncio.run(scenario())
    assert registered(site["nodes"]["alpha"]) == {}


def test_a_readonly_console_offers_no_rollout(site):
    app = PacsdeckConsole(site["fleet"], readonly=True)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await mark(pilot, app, "alpha")
            shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
            assert "roll_out" not in shown
            await pilot.press("A")
            await pilot.pause()
            assert isinstance(app.screen, FleetScreen)  # no form

    asyncio.run(scenario())
