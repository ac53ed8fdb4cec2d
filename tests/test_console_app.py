"""The console app driven by Pilot against a real fleet: two local nodes and one behind a real loopback sshd."""

from __future__ import annotations

import asyncio
import json
import time

import yaml

from console.app import PacsdeckConsole
from console.hostkeys import KnownHosts, fingerprint
from console.screens.node import NodeScreen
from console.screens.trust import TrustScreen
from console.widgets.fleet_table import FleetTable

from .agent_support import agent_env
from .conftest import REPO
from .console_support import fleet_files, host_key, restart_sshd_with_new_key, until  # noqa: F401 - fixture
from .results import check_cli

POLL = 0.5
ANSWERED = ("up", "degraded")  # the agent answered and the node listens (a test box may warn on a check)
SIZE = (180, 45)


def fast(files, known_hosts=None, **changes) -> None:
    """Rewrite the fixture's fleet.yaml with short poll intervals (and any per-node changes)."""
    doc = yaml.safe_load(files.path.read_text())
    for entry in doc["nodes"]:
        entry["poll_interval"] = POLL
        entry.update(changes.get(entry["name"], {}))
    files.write(doc["nodes"], known_hosts=known_hosts)


def statuses(app) -> dict[str, str]:
    return {name: app.snapshot(name).status for name in app.nodes}


def cells(table: FleetTable, name: str) -> dict[str, str]:
    """One row of the fleet table as column key -> the text on screen."""
    return {c.key.value: str(v) for c, v in zip(table.columns.values(), table.get_row(name), strict=False)}


def run(scenario) -> None:
    asyncio.run(scenario())


def test_rows_filter_sort_and_a_killed_node(fleet_files):
    # beta polls every second: node.status caches its port probe for up to a second, so "within two polls"
    # holds for intervals of a second and more.
    fast(fleet_files, beta={"poll_interval": 1.0})
    app = PacsdeckConsole(fleet_files.fleet)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(FleetTable)
            await until(
                pilot, lambda: all(s in ANSWERED for s in statuses(app).values()), "every node answering", timeout=60
            )
            assert sorted(table.shown) == ["alpha", "beta", "gamma"]
            # The table redraws on the next message after the app took the snapshot in.
            await until(
                pilot,
                lambda: (
                    cells(table, "gamma")["ae"] == f"GAMMA:{fleet_files.nodes['gamma'].port}"
                    and cells(table, "gamma")["status"] in ANSWERED
                ),
                "gamma's row filled",
            )

            # Filter by site words, by tag, by status; Esc clears.
            await pilot.press("slash", *"clinic")
            await until(pilot, lambda: sorted(table.shown) == ["alpha", "beta"], "filter 'clinic'")
            await pilot.press(*["backspace"] * 6, *"ssh")
            await until(pilot, lambda: table.shown == ["gamma"], "filter by tag 'ssh'")
            await pilot.press("escape")
            await until(pilot, lambda: len(table.shown) == 3, "filter cleared")

            # Sort: `s` cycles to the next column (status -> version ...); a header click picks one,
            # a second click reverses it.
            await pilot.press("s")
            assert app.screen.sort_column == "version"
            await pilot.click(FleetTable, offset=(2, 0))  # the `node` header
            await until(pilot, lambda: table.shown == ["alpha", "beta", "gamma"], "sorted by node")
            await pilot.click(FleetTable, offset=(2, 0))
            await until(pilot, lambda: table.shown == ["gamma", "beta", "alpha"], "sorted by node, reversed")

            # Kill beta's node process: within two of beta's polls it is down; the others keep polling.
            killed_at = time.time()
            fleet_files.nodes["beta"].kill9()
            seen: list[str] = []

            def beta_polls_after_kill():
                snap = app.snapshot("beta")
                if snap.polled_at > killed_at and (not seen or seen[-1][0] != snap.polled_at):
                    seen.append((snap.polled_at, snap.status))
                return any(status in ("down", "unreachable") for _, status in seen)

            await until(pilot, beta_polls_after_kill, "beta down after kill -9")
            first_down = next(i for i, (_, status) in enumerate(seen) if status in ("down", "unreachable"))
            assert first_down <= 1, seen  # the first or second poll after the kill
            assert "not running" in app.snapshot("beta").reason or "listening" in app.snapshot("beta").reason
            mark = {n: app.snapshot(n).polled_at for n in ("alpha", "gamma")}
            await until(
                pilot, lambda: all(app.snapshot(n).polled_at > mark[n] for n in mark), "alpha and gamma polled again"
            )
            assert statuses(app)["alpha"] in ANSWERED and statuses(app)["gamma"] in ANSWERED
            assert any(e.node == "beta" and e.severity == "critical" for e in app.event_log)
            await until(
                pilot,
                lambda: (
                    cells(table, "beta")["status"] in ("down", "unreachable") and cells(table, "beta")["reason"] != "–"
                ),
                "beta's row says down, and why",
            )

            # The node screen of a live node: tabs filled from the agent, Esc goes back.
            table.move_cursor(row=table.shown.index("alpha"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen), "node screen")
            screen = app.screen
            await until(
                pilot,
                lambda: "pools.list" in screen.details and "associations.recent" in screen.details,
                "node details",
            )
            assert [p["name"] for p in screen.details["pools.list"]["pools"]] == ["primary", "archive"]
            assert screen.query_one("#pools").row_count == 2
            await pilot.press("p")  # the migration plan (a dry run) is not an action, it is shown
            await until(pilot, lambda: "plan" in screen.details, "migration plan")
            assert screen.details["plan"]["dry_run"] is True
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, NodeScreen), "back to the fleet")

            # The command palette goes to a node by name.
            from textual.command import CommandList, CommandPalette

            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette), "command palette")
            await pilot.press(*"go to node gamma")
            await until(
                pilot,
                lambda: (
                    "gamma" in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
                    if app.screen.query_one(CommandList).option_count
                    else False
                ),
                "the palette's hit",
            )
            await pilot.press("down", "enter")
            await until(
                pilot,
                lambda: isinstance(app.screen, NodeScreen) and app.screen.node_name == "gamma",
                "gamma's node screen from the palette",
            )

    run(scenario)


def test_a_hanging_node_holds_up_nothing(fleet_files):
    """An ssh node whose port accepts TCP but never answers: its row waits out connect_timeout while the
    other rows keep refreshing and the UI keeps answering keys."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
    try:
        doc = yaml.safe_load(fleet_files.path.read_text())
        alpha = next(e for e in doc["nodes"] if e["name"] == "alpha")
        hanging = {
            "name": "hanging",
            "site": "Nowhere",
            "transport": "ssh",
            "host": "127.0.0.1",
            "port": silent.getsockname()[1],
            "key": str(fleet_files.key),
            "connect_timeout": 4,
            "call_timeout": 4,
            "poll_interval": POLL,
        }
        fleet_files.write([{**alpha, "poll_interval": POLL}, hanging])
        app = PacsdeckConsole(fleet_files.fleet)

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                table = app.screen.query_one(FleetTable)
                polls = set()

                def alpha_polled_while_hanging() -> bool:
                    polls.add(app.snapshot("alpha").polled_at)
                    return app.snapshot("hanging").status == "polling" and len(polls - {None}) >= 3

                await until(pilot, alpha_polled_while_hanging, "three polls of alpha during the hang")
                await pilot.press("slash", *"nowhere")  # the UI answers keys meanwhile
                await until(pilot, lambda: table.shown == ["hanging"], "filter during the hang")
                await pilot.press("escape")
                await until(pilot, lambda: app.snapshot("hanging").status == "unreachable", "hanging unreachable")
                assert "does not answer as an SSH server" in app.snapshot("hanging").reason  # the row says why
                assert app.snapshot("alpha").status in ANSWERED

        run(scenario)
    finally:
        silent.close()


def test_unknown_host_is_trusted_through_the_modal(fleet_files, tmp_path):
    empty = tmp_path / "fresh_known_hosts"  # pacsdeck has never seen gamma's sshd
    fast(fleet_files, known_hosts=empty)
    key = host_key(fleet_files.sshd)
    app = PacsdeckConsole(fleet_files.fleet)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(FleetTable)
            await until(
                pilot,
                lambda: statuses(app)["gamma"] == "untrusted" and statuses(app)["alpha"] in ANSWERED,
                "gamma untrusted, alpha answering",
            )
            assert "host key" in app.snapshot("gamma").reason
            assert KnownHosts(empty).lookup("127.0.0.1", fleet_files.sshd.port) is None
            table.move_cursor(row=table.shown.index("gamma"))
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, TrustScreen), "trust dialog")
            offer = app.screen.offer
            assert (offer.host, offer.port, offer.key_type) == ("127.0.0.1", fleet_files.sshd.port, "ssh-ed25519")
            assert offer.fingerprint == fingerprint(key) and not offer.changed
            facts = str(app.screen.query_one("#key-facts").render())
            assert fingerprint(key) in facts
            await pilot.click("#trust")
            await until(pilot, lambda: statuses(app)["gamma"] in ANSWERED, "gamma up after trust")
            pinned = KnownHosts(empty).lookup("127.0.0.1", fleet_files.sshd.port)
            assert pinned is not None and fingerprint(pinned) == fingerprint(key)

    run(scenario)


def test_changed_host_key_offers_no_trust(fleet_files):
    fast(fleet_files)
    restart_sshd_with_new_key(fleet_files.sshd)  # same port, new key: the pinned one no longer matches
    new_key = host_key(fleet_files.sshd)
    before = fleet_files.known_hosts.read_text()
    app = PacsdeckConsole(fleet_files.fleet)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(FleetTable)
            await until(pilot, lambda: statuses(app)["gamma"] == "untrusted", "gamma refused")
            table.move_cursor(row=table.shown.index("gamma"))
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, TrustScreen), "host key dialog")
            dialog = app.screen
            assert dialog.offer.changed and dialog.offer.fingerprint == fingerprint(new_key)
            assert not dialog.query("#trust"), "a changed key must offer no Trust button"
            assert "--replace" in str(dialog.query_one("#key-warning").render())
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, TrustScreen), "dialog closed")
            await pilot.pause(2 * POLL)
            assert statuses(app)["gamma"] == "untrusted"

    run(scenario)
    assert fleet_files.known_hosts.read_text() == before


def audited_methods(node) -> list[str]:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pacsdeck.cli",
            "agent",
            "call",
            "audit.recent",
            "--params",
            json.dumps({"limit": 200}),
            "--config",
            str(node.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
        env=agent_env(node.dir / "authorized_keys"),
    )
    assert result.returncode == 0, result.stderr
    check_cli(["agent", "call", "audit.recent"], result)
    return [e["method"] for e in json.loads(result.stdout)["entries"]]


def test_readonly_hides_every_mutating_action(fleet_files):
    fast(fleet_files)
    app = PacsdeckConsole(fleet_files.fleet, readonly=True)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(FleetTable)
            await until(pilot, lambda: statuses(app)["alpha"] in ANSWERED, "alpha answering")
            table.move_cursor(row=table.shown.index("alpha"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen), "node screen")
            screen = app.screen
            shown = {b.binding.action for b in screen.active_bindings.values() if b.enabled}
            assert not shown & {"retry_job", "cancel_job", "run_migration"}, shown
            assert "plan_migration" in shown  # reading the plan is not an action
            assert not screen.query("#run-migration, #retry-job, #cancel-job")
            await pilot.press("m", "e", "c")  # nothing happens: no confirm dialog, no call
            await pilot.pause(POLL)
            assert isinstance(app.screen, NodeScreen)
            app.action_toggle_readonly()  # the palette cannot lift --readonly
            assert app.readonly

    run(scenario)
    methods = audited_methods(fleet_files.nodes["alpha"])
    assert not {"pools.migrate", "queue.retry", "queue.cancel"} & set(methods), methods


def test_queue_retry_from_the_ui_reaches_the_node(fleet_files, tmp_path):
    from storage import synthetic

    from .agent_support import agent_call
    from .conftest import free_port, require_tool, start_listener, storescu, terminate, wait_for

    alpha = fleet_files.nodes["alpha"]
    env = agent_env(alpha.dir / "authorized_keys")
    # One attempt, so a forward to a port where nothing listens fails for good at once.
    alpha.stop()
    cfg = yaml.safe_load(alpha.config.read_text())
    cfg["queue"] = {"backoff_base": 0.1, "backoff_max": 0.2, "max_attempts": 1, "timeout": 3}
    alpha.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    alpha.start()
    dest_port = free_port()

    def call(method: str, params: dict) -> dict:
        result = agent_call(alpha.config, method, json.dumps(params), env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    call("aets.add", {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port, "operations": ["store"]})
    call("routes.add", {"name": "everything", "match": {}, "destinations": ["DEST"]})
    spec = next(synthetic.studies(1, prefix="QRT"))
    files = synthetic.write_study(tmp_path / "study", spec, 1, rows=32, cols=32)
    results, proc = storescu(alpha, files)
    assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
    failed = wait_for(lambda: call("queue.list", {"state": "failed"})["jobs"], what="a failed forward job")
    job_id = failed[0]["id"]

    fast(fleet_files)
    app = PacsdeckConsole(fleet_files.fleet)
    received = tmp_path / "received"
    received.mkdir()
    receivers = []

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(FleetTable)
            await until(pilot, lambda: app.snapshot("alpha").queue_failed == 1, "alpha's failed job in the table")
            assert app.snapshot("alpha").status == "degraded"
            table.move_cursor(row=table.shown.index("alpha"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen), "node screen")
            screen = app.screen
            screen.query_one("TabbedContent").active = "queues"
            jobs = screen.query_one("#jobs")
            await until(pilot, lambda: jobs.row_count >= 1, "the jobs table")
            jobs.move_cursor(row=[r.value for r in jobs.rows].index(str(job_id)))
            # Now the destination listens: the retried forward can succeed.
            receivers.append(
                start_listener(
                    [require_tool("storescp"), "-aet", "DEST", "+B", "-od", str(received), str(dest_port)], dest_port
                )
            )
            await pilot.press("e")
            await until(
                pilot, lambda: call("queue.list", {})["counts"].get("done", 0) >= 1, "the retried job done", timeout=30
            )

            # Cancel, after the confirmation: a new forward fails while the destination is down again.
            terminate(receivers.pop())
            more = synthetic.write_study(
                tmp_path / "study2", next(synthetic.studies(1, prefix="QRC")), 1, rows=32, cols=32
            )
            assert set(storescu(alpha, more)[0].values()) == {"Success"}
            second = wait_for(lambda: call("queue.list", {"state": "failed"})["jobs"], what="a second failed job")
            second_id = second[0]["id"]
            await until(pilot, lambda: str(second_id) in [r.value for r in jobs.rows], "the new job on screen")
            jobs.move_cursor(row=[r.value for r in jobs.rows].index(str(second_id)))
            await pilot.press("c")
            await until(pilot, lambda: app.screen.query("#yes"), "the confirmation")
            await pilot.click("#yes")
            await until(pilot, lambda: call("queue.list", {"state": "cancelled"})["jobs"], "the job cancelled")
            assert call("queue.list", {"state": "cancelled"})["jobs"][0]["id"] == second_id

    try:
        run(scenario)
    finally:
        for proc in receivers:
            terminate(proc)
    assert [f for f in received.iterdir() if f.is_file()], "the retried forward reached the destination"
    assert {"queue.retry", "queue.cancel"} <= set(audited_methods(alpha))


# --- the commands: `pacsdeck console` and `pacsdeck up` -------------------------------------------


def test_console_command_names_the_bad_fleet_field(tmp_path):
    from .conftest import pacsdeck

    bad = tmp_path / "fleet.yaml"
    bad.write_text("nodes:\n  - name: a\n    transport: ssh\n    host: 127.0.0.1\n    port: 70000\n")
    result = pacsdeck("console", "--fleet", str(bad))
    assert result.returncode == 3  # as fleet status and fleet trust say of a bad fleet file
    assert "nodes[0].port" in result.stderr and "1-65535" in result.stderr
    missing = pacsdeck("console", "--fleet", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 3 and "nope.yaml" in missing.stderr


class Terminal:
    """A real pseudo-terminal running a command: what `pacsdeck up` needs to draw its TUI."""

    def __init__(self, argv: list[str], env: dict | None = None, size: tuple[int, int] = (140, 40)):
        import fcntl
        import os
        import pty
        import struct
        import subprocess
        import termios
        import threading

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, start_new_session=True
        )
        os.close(slave)
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import os

        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output.extend(data)

    def type(self, keys: bytes) -> None:
        import os

        os.write(self.master, keys)

    def wait(self, timeout: float = 60) -> int:
        import os

        try:
            return self.proc.wait(timeout=timeout)
        finally:
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by PID: the command this test started
            self.proc.wait()


def up_command(node_dir) -> list[str]:
    import sys

    return [sys.executable, "-m", "pacsdeck.cli", "up", "--dir", str(node_dir)]


def test_up_runs_the_node_under_the_console_and_stops_it_on_exit(tmp_path):
    from .conftest import NodeHandle, free_port, port_open, wait_for

    # A new folder with only a node.yaml (loopback, a free port), as `node init` allows: `up` initialises it.
    node = NodeHandle(dir=tmp_path / "box", port=free_port(), ae_title="BOX")
    node.dir.mkdir()
    node.config.write_text(
        yaml.safe_dump(
            {
                "ae_title": "BOX",
                "port": node.port,
                "bind": "127.0.0.1",
                "workers": 1,
                "pools": [
                    {"name": "primary", "path": "pools/primary", "tier": "primary"},
                    {"name": "archive", "path": "pools/archive", "tier": "archive"},
                ],
            }
        )
    )
    term = Terminal(up_command(node.dir))
    try:
        wait_for(lambda: port_open(node.port), what="the node started by `pacsdeck up`")
        wait_for(lambda: b"box" in term.output and b"Filter" in term.output, what="the console on screen")
        wait_for(lambda: f"BOX:{node.port}".encode() in term.output, what="the node's row, polled")
        term.type(b"q")
        assert term.wait(timeout=60) == 0, bytes(term.output[-2000:])
        wait_for(lambda: not port_open(node.port), what="the node stopped with the console")
        assert not _locked(node.dir)
    finally:
        term.kill()
        stop_left_node(node.dir)  # only when an assertion above failed: nothing runs there otherwise
    # The new box got its demo studies over DICOM, from the DEMO AE registered for that.
    assert node.rows("SELECT count(*) AS n FROM instances")[0]["n"] == 12
    assert node.rows("SELECT count(DISTINCT study_uid) AS n FROM instances")[0]["n"] == 3
    assert [r["calling_ae"] for r in node.rows("SELECT calling_ae FROM associations")] == ["DEMO"]


def test_up_killed_takes_its_node_down(tmp_path):
    """kill -9 of `pacsdeck up` runs no cleanup of its own: the node still stops (its lifeline pipe closed)."""
    import os
    import signal

    from .conftest import make_node, port_open, wait_for

    node = make_node(tmp_path / "box", ae_title="BOX", workers=2)  # initialised, not running
    term = Terminal(up_command(node.dir))
    try:
        wait_for(lambda: port_open(node.port) and b"Filter" in term.output, what="the node and console of `up`")
        assert _locked(node.dir)
        os.kill(term.proc.pid, signal.SIGKILL)
        term.proc.wait(timeout=10)
        wait_for(
            lambda: not _locked(node.dir) and not port_open(node.port),
            timeout=30,
            what="the node stopped after `up` was killed",
        )
        assert "has ended: stopping" in (node.dir / "node.log").read_text()
    finally:
        term.kill()
        stop_left_node(node.dir)


def stop_left_node(node_dir) -> None:
    """After a test failed half-way: stop the node our `up` started, if it still runs (by its lock's PID)."""
    import os
    import signal

    from storage.workers import running_node_pid

    from .conftest import wait_for

    pid = running_node_pid(node_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: running_node_pid(node_dir) is None, what="the left-over node stopped")


def _locked(node_dir) -> bool:
    from storage.workers import running_node_pid

    return running_node_pid(node_dir) is not None


def test_up_leaves_a_node_it_did_not_start_running(tmp_path):
    from .conftest import make_node, port_open, wait_for

    node = make_node(tmp_path / "box", ae_title="BOX").start()
    try:
        term = Terminal(up_command(node.dir))
        try:
            wait_for(lambda: b"box" in term.output and b"Filter" in term.output, what="the console on screen")
            term.type(b"q")
            assert term.wait(timeout=60) == 0, bytes(term.output[-2000:])
        finally:
            term.kill()
        assert node.proc.poll() is None and port_open(node.port), "the node that was running still runs"
    finally:
        node.stop()
