"""The one-key fix of a refused sender on a node reached through a real loopback sshd: refused, with the
role's words, for an operator's key; done for an admin's key, and the sender's next store is accepted."""

from __future__ import annotations

import asyncio

from textual.widgets import Input

from console.app import PacsdeckConsole
from console.screens.confirm import ConfirmScreen

from .conftest import storescu
from .console_support import add_ssh_user, fleet_files, ssh_entry  # noqa: F401 - fleet_files is a fixture
from .test_console_aets import SIZE, call, form_open, one_study, titles, until


async def fix_from_the_event(pilot, app, node, files, calling: str) -> None:
    """`calling` refused by gamma once the console watches (events are changes between polls), the refusal
    as a fleet event, then `a`, Enter, Enter."""
    await until(pilot, lambda: app.snapshot("gamma").status in ("up", "degraded"), "gamma answering")
    results, proc = await asyncio.to_thread(storescu, node, files, aet=calling)
    assert "Success" not in results.values(), proc.stdout + proc.stderr
    await until(
        pilot,
        lambda: any(f"{calling} was refused by gamma" in e.text for e in app.event_log),
        "the refusal in the events panel",
    )
    fleet = app.screen
    fleet.table.move_cursor(row=fleet.table.shown.index("gamma"))
    await until(
        pilot,
        lambda: "register_refused" in {b.binding.action for b in app.screen.active_bindings.values() if b.enabled},
        "the fix key",
    )
    await pilot.press("a")
    await until(pilot, lambda: form_open(app), "the filled-in form")
    assert app.screen.query_one("#ae_title", Input).value == calling
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
    await pilot.press("enter")


def test_the_fix_over_ssh_is_refused_for_an_operator_and_done_for_an_admin(fleet_files, tmp_path):
    gamma = fleet_files.nodes["gamma"]
    files = one_study(tmp_path, "SSH")
    before = titles(gamma)
    app = PacsdeckConsole(fleet_files.fleet)

    async def as_operator():
        async with app.run_test(size=SIZE) as pilot:
            await fix_from_the_event(pilot, app, gamma, files, "CT6")
            pane = app.screen.query_one("AetsPane")
            await until(pilot, lambda: "refused" in str(pane.query_one("#aets-note").render()), "the refusal")
            assert str(pane.query_one("#aets-note").render()) == (
                "aets.add CT6 refused: your role (operator) may not do this; it needs admin"
            )

    asyncio.run(as_operator())
    assert titles(gamma) == before

    # An admin's key for gamma: the same three keys register the sender.
    admin_key = tmp_path / "admin_ed25519"
    add_ssh_user(fleet_files.sshd, gamma, "boss", "admin", admin_key)
    fleet = fleet_files.write(
        [
            {"name": "alpha", "transport": "local", "config": str(fleet_files.nodes["alpha"].config)},
            ssh_entry("gamma", fleet_files.sshd, admin_key, gamma.config, poll_interval=1),
        ]
    )
    app = PacsdeckConsole(fleet)

    async def as_admin():
        async with app.run_test(size=SIZE) as pilot:
            await fix_from_the_event(pilot, app, gamma, files, "CT6")
            await until(pilot, lambda: "CT6" in app.screen.query_one("AetsPane").aets, "CT6 registered")

    asyncio.run(as_admin())
    results, proc = storescu(gamma, files, aet="CT6")
    assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
    audited = call(gamma, "audit.recent", {"method": "aets.add"})["entries"]
    assert [(e["user"], e["result"]) for e in audited[:2]] == [("boss", "ok"), ("console", "forbidden")]
