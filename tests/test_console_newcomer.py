"""Issue 17, a newcomer's first hour on the node screen: focus on every tab, a row in full, `c` on the job under the
cursor after a refresh, sparklines with a scale, what a pool holds; Pilot against a real node, or fixed snapshots."""

from __future__ import annotations

import asyncio
import dataclasses

from textual.widgets import DataTable, Label

from console.app import PacsdeckConsole
from console.screens.confirm import ConfirmScreen
from console.screens.node import PANES, NodeScreen
from console.screens.row_detail import RowDetailScreen
from console.widgets.spark import Spark, bars

from .conftest import free_port, make_node, storescu
from .test_console_aets import SIZE, call, fleet_of, one_study, row_keys, until
from .test_console_snapshots import FLEET, T0, snapshots

BARS = set("▁▂▃▄▅▆▇█")


async def open_node(pilot, app, name: str = "n1") -> NodeScreen:
    """The node screen as Enter on the fleet opens it, once the node answered."""
    await until(pilot, lambda: app.snapshot(name).status in ("up", "degraded"), f"{name} answering")
    app.open_node(name)
    await until(pilot, lambda: isinstance(app.screen, NodeScreen) and app.focused is not None, "the node screen")
    return app.screen


def focused_id(app) -> str | None:
    return app.focused.id if app.focused is not None else None


def detail_fields(app) -> dict[str, str]:
    assert isinstance(app.screen, RowDetailScreen), app.screen
    return dict(app.screen.fields)


def test_every_tab_gives_its_main_widget_the_focus_and_enter_shows_a_row_in_full(tmp_path):
    node = make_node(tmp_path / "node", ae_title="NEWNODE", workers=1).start()
    try:
        results, proc = storescu(node, one_study(tmp_path, "NEW"), aet="CT9")  # refused: CT9 is not registered
        assert "Success" not in results.values(), proc.stdout + proc.stderr
        refusal = next(a for a in call(node, "associations.recent")["associations"] if a["calling_ae"] == "CT9")
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await open_node(pilot, app)
                assert focused_id(app) == "overview-scroll"  # the arrow keys scroll the overview at once

                await pilot.press("2")
                assert focused_id(app) == "checks"
                checks = screen.query_one("#checks", DataTable)
                await until(pilot, lambda: checks.row_count > 3, "the health checks")
                await pilot.press("down")
                assert checks.cursor_row == 1  # no Tab needed first
                process = next(k for k in row_keys(checks) if k.endswith(":node_process"))
                checks.move_cursor(row=row_keys(checks).index(process))
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), "the check in full")
                fields = detail_fields(app)
                assert fields["check"] == "node_process" and "running (pid" in fields["message"]
                assert "detail: pid" in fields and "detail: rss_bytes" in fields  # beyond the table's columns
                assert app.screen.title_line == "n1: check node_process"
                await pilot.press("escape")
                await until(pilot, lambda: app.screen is screen, "back on the node screen")
                assert focused_id(app) == "checks"

                await pilot.press("3")
                assert focused_id(app) == "pools"
                pools = screen.query_one("#pools", DataTable)
                await until(pilot, lambda: "primary" in row_keys(pools), "the pools")
                await pilot.press("v")
                await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), "the pool in full")
                assert detail_fields(app)["instances"] == "0" and "filesystem used" in detail_fields(app)
                await pilot.press("escape")

                await pilot.press("4")
                assert focused_id(app) == "jobs"

                await pilot.press("5")
                assert focused_id(app) == "associations-table"
                refused = await until(
                    pilot,
                    lambda: next((k for k, a in screen.associations.items() if a.calling_ae == "CT9"), None),
                    "CT9's refusal listed",
                )
                table = screen.query_one("#associations-table", DataTable)
                table.move_cursor(row=row_keys(table).index(refused))
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), "the association in full")
                assert detail_fields(app)["reason"] == refusal["reason"]  # whole, however wide
                await pilot.press("escape")
                await until(pilot, lambda: app.screen is screen, "back on the node screen")
                assert table.cursor_row == row_keys(table).index(refused)  # Enter did not move or act

                for key, pane in zip("67890", PANES, strict=False):  # the managing tabs: their FOCUS widget
                    await pilot.press(key)
                    assert app.focused is screen.query_one(pane.FOCUS), (pane.TITLE, app.focused)
                await pilot.press("1")
                assert focused_id(app) == "overview-scroll"

        asyncio.run(scenario())
    finally:
        node.stop()


def test_cancel_acts_on_the_job_it_named_after_newer_jobs_arrive_above_it(tmp_path):
    down = free_port()  # nothing listens: every forward to DEST stays pending, retried with its last error
    aets = [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "DEST", "host": "127.0.0.1", "port": down, "operations": ["store"]},
    ]
    node = make_node(tmp_path / "node", ae_title="JOBNODE", workers=1, aets=aets).start()
    try:
        for prefix in ("JA", "JB", "JC", "JD"):
            results, proc = storescu(node, one_study(tmp_path, prefix))
            assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
        uids = sorted({s["StudyInstanceUID"] for s in call(node, "studies.find", {})["studies"]})
        assert len(uids) == 4

        def send(uid: str) -> int:
            return call(node, "studies.send", {"StudyInstanceUID": uid, "destination": "DEST"})["job_id"]

        chosen = send(uids[0])
        app = PacsdeckConsole(fleet_of(node, tmp_path))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await open_node(pilot, app)
                await pilot.press("4")
                jobs = screen.query_one("#jobs", DataTable)
                await until(pilot, lambda: row_keys(jobs) == [str(chosen)], "the one job listed")
                await until(
                    pilot,
                    lambda: "refused" in str(jobs.get_row(str(chosen))[-1]),
                    "its first attempt's error",
                )
                newer = [send(uids[1]), send(uids[2])]
                await until(pilot, lambda: len(row_keys(jobs)) == 3, "the newer jobs listed above it")
                assert row_keys(jobs)[0] == str(newer[-1])
                assert row_keys(jobs)[jobs.cursor_row] == str(chosen)  # the cursor stayed on its job

                await pilot.press("v")
                await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), "the job in full")
                fields = detail_fields(app)
                assert fields["id"] == str(chosen) and "refused" in fields["last error"]
                assert fields["study"] == uids[0] and fields["reason"] == "requested"
                await pilot.press("escape")
                await until(pilot, lambda: app.screen is screen, "back on the node screen")

                await pilot.press("c")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                assert app.screen.question == f"Cancel job {chosen} on n1?"
                newest = send(uids[3])  # and one more arrives while the question is open
                await until(pilot, lambda: str(newest) in row_keys(jobs), "the newest job listed behind the dialog")
                assert app.focused.id == "no"  # No first; the arrow key moves to the other button
                await pilot.press("left")
                assert app.focused.id == "yes"
                await pilot.press("enter")
                await until(pilot, lambda: "cancelled" in str(jobs.get_row(str(chosen))[2]), "the named job cancelled")

        asyncio.run(scenario())
        states = {j["id"]: j["state"] for j in call(node, "queue.list")["jobs"]}
        assert states[chosen] == "cancelled"
        assert [jid for jid, state in states.items() if state == "cancelled"] == [chosen]
    finally:
        node.stop()


def test_confirm_right_then_enter_picks_the_other_button():
    answers: list[bool | None] = []
    app = PacsdeckConsole(FLEET, snapshots=snapshots())

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            for keys in (["right", "enter"], ["right", "right", "enter"], ["left", "enter"]):
                app.push_screen(ConfirmScreen("Cancel job 1 on clinic-a?", "Cancel job"), answers.append)
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
                await pilot.press(*keys)
                await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the answer")

    asyncio.run(scenario())
    assert answers == [True, False, True]  # No first: one arrow is Yes, two are No again


# --- fixed snapshots: no node ------------------------------------------------------------------------------


def test_an_ingest_rate_of_zero_is_an_empty_sparkline_and_both_labels_give_their_scale():
    free = 41.2 * 2**30
    history = {"clinic-a": [(T0 - 300 + 10 * i, 0.0, free + (30 - i) * 2**20) for i in range(31)]}
    app = PacsdeckConsole(FLEET, snapshots=snapshots(), history=history)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            app.open_node("clinic-a")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen), "the node screen")
            await pilot.press("2")
            await pilot.pause()
            screen = app.screen
            ingest = str(screen.query_one("#ingest-label", Label).render())
            assert ingest == "ingest, instances/s — now 0.0, max 0.0 over 5m"
            spark = screen.query_one("#ingest-spark", Spark)
            assert spark.data and not BARS & set(str(spark.render())), "0/s drew bars"
            free_label = str(screen.query_one("#free-label", Label).render())
            assert free_label == "free disk space — now 41.2 GiB, min 41.2 GiB over 5m"

    asyncio.run(scenario())


def test_bars_start_at_the_floor_and_a_series_of_noise_stays_level():
    assert bars([0.0], 4, 2, floor=0.0) == ["    ", "    "]  # one poll at 0/s: nothing (Textual drew it full)
    assert bars([0.0, 0.0, 0.0], 3, 1, floor=0.0) == ["   "]
    assert bars([0.0, 5.0, 10.0], 3, 1, floor=0.0) == [" ▄█"]
    assert bars([0.0, 0.1], 2, 1, floor=0.0) == [" █"]  # the data's max tops the scale
    assert bars([0.0, 0.1, 10.0], 3, 1, floor=0.0)[0][1] == "▁"  # a small rate still shows
    gib = 2**30
    noisy = [40 * gib + n * 4096 for n in (3, 0, 2, 1)]  # a few kilobytes either way
    assert set("".join(bars(noisy, 4, 3, least=gib))) == {"█"}  # level, not swinging full to empty
    assert bars([40 * gib, 39.5 * gib], 2, 1, least=gib) == ["█▄"]  # half a GiB less: half as high


def test_the_storage_tab_says_what_each_pool_holds_apart_from_its_filesystem_and_why_a_plan_is_empty():
    snaps = snapshots()
    raw = dict(snaps[0].raw)
    raw["pools.list"] = {
        "overflow": False,
        "pools": [
            {
                "name": "primary",
                "tier": "primary",
                "instances": 12,
                "indexed_bytes": 1_600_000,
                "used": int(22.9 * 2**30),
                "capacity": 252 * 2**30,
                "capacity_is_logical": False,
                "used_percent": 9.1,
                "disk_used": int(22.9 * 2**30),
                "disk_free": int(78.5 * 2**30),
                "disk_total": 252 * 2**30,
                "high_watermark": 90,
                "low_watermark": 80,
                "accepting": True,
            }
        ],
    }
    why = "nothing to move: no migration rules configured (migration.rules in node.yaml)"
    raw["pools.migrate"] = {"dry_run": True, "plan": [], "skipped": [], "studies": 0, "instances": 0, "bytes": 0}
    raw["pools.migrate"]["reason"] = why
    snaps[0] = dataclasses.replace(snaps[0], raw=raw)
    app = PacsdeckConsole(FLEET, snapshots=snaps)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            app.open_node("clinic-a")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen), "the node screen")
            await pilot.press("3")
            table = app.screen.query_one("#pools", DataTable)
            await until(pilot, lambda: table.row_count == 1, "the pool")
            labels = [str(c.label) for c in table.columns.values()]
            row = dict(zip(labels, (str(c) for c in table.get_row("primary")), strict=True))
            assert (row["holds"], row["instances"], row["capacity"]) == ("1.5 MiB", "12", "filesystem")
            assert (row["filesystem used"], row["free"], row["size"]) == ("22.9 GiB", "78.5 GiB", "252.0 GiB")

            await pilot.press("p")  # an empty plan says why
            note = app.screen.query_one("#plan-note")
            await until(pilot, lambda: why in str(note.render()), "the plan note")
            assert str(note.render()) == f"plan: 0 studies, 0 instances, 0 B; 0 skipped — {why}"

    asyncio.run(scenario())
