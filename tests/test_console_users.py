"""The Users tab, driven by Pilot against a real node: add with a key from a file, change role, replace keys,
remove, the last admin kept; a user added there logs in through a real sshd with its role; a viewer and a
read-only console are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess

import pytest
import yaml
from textual.widgets import DataTable, Input, Select, TextArea

from agent.protocol import RPCError
from console import user_edits as edits
from console.app import PacsdeckConsole
from console.hostkeys import KnownHosts
from console.inventory import load_fleet, parse_fleet
from console.results import User, UserKey
from console.screens.confirm import ConfirmScreen
from console.screens.node import NodeScreen
from console.screens.user_form import UserFormScreen
from console.transport import open_transport
from console.widgets.users_pane import UsersPane

from .agent_support import ssh_keygen, start_sshd, stop_sshd
from .conftest import make_node
from .console_support import add_ssh_user, host_key, ssh_entry
from .test_console_aets import SIZE, call, fleet_of, node_tab, until


def fingerprint_of(pub) -> str:
    """`SHA256:…` as ssh-keygen -l prints it: the console and the agent must agree with OpenSSH."""
    done = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
    return done.stdout.split()[1]


def users_of(node) -> dict[str, dict]:
    return {u["name"]: u for u in call(node, "users.list")["users"]}


def form_open(app) -> bool:
    return isinstance(app.screen, UserFormScreen) and bool(app.screen.query("#save"))


def note_of(pane) -> str:
    return str(pane.query_one("#users-note").render())


async def confirm(pilot, app, starts: str) -> str:
    """The question must start with `starts`; Yes (No has the focus first: these change who gets in)."""
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
    question = app.screen.question
    assert question.startswith(starts), question
    await pilot.press("left", "enter")
    return question


async def pick(pilot, app, pane, name: str, key: str) -> None:
    """Put the cursor on `name`'s row and press `key`."""
    table = pane.query_one("#users-table", DataTable)
    table.move_cursor(row=[r.value for r in table.rows].index(name))
    await pilot.press(key)


@pytest.fixture
def keys_file(tmp_path, monkeypatch):
    """The authorized_keys the console's local agents write: in tmp, never the real ~/.ssh."""
    path = tmp_path / "authorized_keys"
    monkeypatch.setenv("PACSDECK_AUTHORIZED_KEYS", str(path))
    return path


def test_a_user_is_added_with_a_key_file_changed_rekeyed_and_removed_and_the_last_admin_stays(tmp_path, keys_file):
    node = make_node(tmp_path / "node", ae_title="USERNODE", workers=1).start()
    alice_pub = ssh_keygen(tmp_path / "alice")  # ssh-keygen writes alice.pub beside it
    bob_pub = ssh_keygen(tmp_path / "bob")
    laptop_pub = ssh_keygen(tmp_path / "laptop", "rsa")
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "users")
                pane = screen.query_one(UsersPane)
                await until(pilot, lambda: pane.listed, "users.list answered")
                assert "no users yet" in note_of(pane)

                # Add alice: the key from a .pub file the console reads; a missing file is told first.
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the add form")
                form = app.screen
                assert not form.query("#password")  # nothing logs in with one
                form.query_one("#name", Input).value = "alice"
                form.query_one("#role", Select).value = "operator"
                form.query_one("#key_file", Input).value = str(tmp_path / "nope.pub")
                form.query_one("#save").press()
                await until(pilot, lambda: "no such file" in str(form.query_one("#form-error").render()), "the error")
                assert form.query_one("#key_file").has_class("invalid") and app.screen is form
                form.query_one("#key_file", Input).value = str(tmp_path / "alice.pub")
                form.query_one("#save").press()
                fp_alice = fingerprint_of(tmp_path / "alice.pub")
                question = await confirm(pilot, app, "Add user alice (operator) on n1 with 1 key?")
                assert f"ssh-ed25519 {fp_alice}" in question
                await until(pilot, lambda: "alice" in pane.users, "alice listed")
                assert [k.fingerprint for k in pane.users["alice"].ssh_keys] == [f"ssh-ed25519 {fp_alice}"]
                row = [str(c) for c in pane.query_one("#users-table", DataTable).get_row("alice")]
                assert row[1] == "operator" and fp_alice in row[2] and row[3] == "–", row
                assert "added alice (operator) on n1 with 1 key" in note_of(pane)

                # Add bob, the only admin user, with his key pasted.
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the add form")
                app.screen.query_one("#name", Input).value = "bob"
                app.screen.query_one("#role", Select).value = "admin"
                app.screen.query_one("#keys", TextArea).text = f"# bob's workstation\n{bob_pub}\n"
                app.screen.query_one("#save").press()
                await confirm(pilot, app, "Add user bob (admin) on n1 with 1 key?")
                await until(pilot, lambda: "bob" in pane.users, "bob listed")

                # Demoting the last admin is refused in one line, and nothing changes.
                await pick(pilot, app, pane, "bob", "r")
                await until(pilot, lambda: form_open(app), "the role form")
                app.screen.query_one("#role", Select).value = "viewer"
                app.screen.query_one("#save").press()
                await confirm(pilot, app, "Change bob's role on n1 from admin to viewer?")
                await until(pilot, lambda: "last admin" in note_of(pane), "the refusal")
                assert note_of(pane) == "bob is the last admin; make another user admin first"
                assert isinstance(app.screen, NodeScreen)

                # alice becomes admin, then gets two keys instead of her one.
                await pick(pilot, app, pane, "alice", "r")
                await until(pilot, lambda: form_open(app), "the role form")
                app.screen.query_one("#role", Select).value = "admin"
                app.screen.query_one("#save").press()
                await confirm(pilot, app, "Change alice's role on n1 from operator to admin?")
                await until(pilot, lambda: pane.users["alice"].role == "admin", "alice promoted")

                await pick(pilot, app, pane, "alice", "k")
                await until(pilot, lambda: form_open(app), "the keys form")
                app.screen.query_one("#keys", TextArea).text = laptop_pub
                app.screen.query_one("#key_file", Input).value = str(tmp_path / "bob.pub")
                app.screen.query_one("#save").press()
                await confirm(pilot, app, "Replace alice's 1 key on n1 with 2 keys?")
                await until(pilot, lambda: len(pane.users["alice"].ssh_keys) == 2, "alice's two keys")
                assert [k.type for k in pane.users["alice"].ssh_keys] == ["ssh-rsa", "ssh-ed25519"]

                # Remove alice: her authorized_keys lines go; then bob is the last admin again and stays.
                await pick(pilot, app, pane, "alice", "d")
                await confirm(pilot, app, "Remove user alice (admin) from n1? Its 2 authorized_keys lines go too.")
                await until(pilot, lambda: "alice" not in pane.users, "alice gone")
                await pick(pilot, app, pane, "bob", "d")
                await confirm(pilot, app, "Remove user bob (admin) from n1?")
                await until(pilot, lambda: "last admin" in note_of(pane), "the refusal")
                assert "bob" in pane.users

        asyncio.run(scenario())
        assert {n: u["role"] for n, u in users_of(node).items()} == {"bob": "admin"}
        lines = keys_file.read_text().splitlines()
        assert len(lines) == 1 and lines[0].endswith("pacsdeck:bob") and bob_pub.split()[1] in lines[0]
        assert alice_pub.split()[1] not in keys_file.read_text() and laptop_pub.split()[1] not in keys_file.read_text()
        entries = call(node, "audit.recent", {"limit": 50})["entries"]
        done = [(e["user"], e["method"], e["params"].get("name"), e["result"]) for e in reversed(entries)]
        me = call(node, "rpc.whoami")["user"]  # the local account the console's agent runs as
        assert done == [
            (me, "users.add", "alice", "ok"),
            (me, "users.add", "bob", "ok"),
            (me, "users.update", "bob", "conflict"),
            (me, "users.update", "alice", "ok"),
            (me, "users.update", "alice", "ok"),
            (me, "users.remove", "alice", "ok"),
            (me, "users.remove", "bob", "conflict"),
        ]
    finally:
        node.stop()


def test_a_user_added_in_the_tab_logs_in_over_ssh_with_its_role(tmp_path, monkeypatch):
    """carol, added as viewer from the console, reaches the node through a real sshd: rpc.whoami says
    carol/viewer and a change is forbidden."""
    server = start_sshd(tmp_path / "sshd")
    node = make_node(tmp_path / "node", ae_title="SSHUSERS", workers=1).start()
    monkeypatch.setenv("PACSDECK_AUTHORIZED_KEYS", str(server.authorized_keys))  # the file this sshd reads
    ssh_keygen(tmp_path / "carol")
    app = PacsdeckConsole(fleet_of(node, tmp_path))
    try:

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "users")
                pane = screen.query_one(UsersPane)
                await until(pilot, lambda: pane.listed, "users.list answered")
                await pilot.press("a")
                await until(pilot, lambda: form_open(app), "the add form")
                app.screen.query_one("#name", Input).value = "carol"
                app.screen.query_one("#keys", TextArea).text = str(tmp_path / "carol.pub")  # a path, pasted
                await pilot.press("enter")  # Enter in a field sends the form; the role is viewer unless chosen
                await confirm(pilot, app, "Add user carol (viewer) on n1 with 1 key?")
                await until(pilot, lambda: "carol" in pane.users, "carol listed")

        asyncio.run(scenario())
        known = KnownHosts(tmp_path / "carol_known_hosts")
        known.trust("127.0.0.1", server.port, host_key(server))
        entry = parse_fleet({"nodes": [ssh_entry("as-carol", server, tmp_path / "carol", node.config)]}).nodes[0]
        transport = open_transport(entry, known)
        try:
            who = transport.call("rpc.whoami")
            assert (who["user"], who["role"]) == ("carol", "viewer")
            with pytest.raises(RPCError) as refused:
                transport.call("aets.add", {"ae_title": "CAROL", "host": "127.0.0.1", "port": 104})
            assert refused.value.kind == "forbidden" and refused.value.data["role"] == "viewer"
        finally:
            transport.close()
        assert "CAROL" not in [a["ae_title"] for a in call(node, "aets.list")["aets"]]
    finally:
        node.stop()
        stop_sshd(server)


def test_a_viewer_session_is_told_users_need_admin_not_shown_an_error(tmp_path):
    server = start_sshd(tmp_path / "sshd")
    node = make_node(tmp_path / "node", ae_title="VIEWUSERS", workers=1).start()
    try:
        add_ssh_user(server, node, "vic", "viewer", tmp_path / "vic")
        known_hosts = tmp_path / "known_hosts"
        KnownHosts(known_hosts).trust("127.0.0.1", server.port, host_key(server))
        fleet_file = tmp_path / "fleet.yaml"
        entry = ssh_entry("n1", server, tmp_path / "vic", node.config, poll_interval=0.5)
        fleet_file.write_text(yaml.safe_dump({"known_hosts": str(known_hosts), "nodes": [entry]}))
        app = PacsdeckConsole(load_fleet(fleet_file))

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "users")
                pane = screen.query_one(UsersPane)
                await until(pilot, lambda: "needs admin" in note_of(pane), "the refusal of users.list")
                assert note_of(pane).startswith("users.list needs admin; you are viewer."), note_of(pane)
                assert pane.query_one("#users-table", DataTable).row_count == 0
                keys = (("a", "users.add"), ("r", "users.update"), ("k", "users.update"), ("d", "users.remove"))
                for key, method in keys:
                    await pilot.press(key)
                    want = f"{method} refused: your role (viewer) may not do this; it needs admin"
                    await until(pilot, lambda want=want: note_of(pane) == want, f"the refusal of {method}")
                    assert isinstance(app.screen, NodeScreen)  # no form to fill in for nothing

        asyncio.run(scenario())
        assert list(users_of(node)) == ["vic"]
    finally:
        node.stop()
        stop_sshd(server)


def test_readonly_has_no_user_actions_and_changes_nothing(tmp_path, keys_file):
    node = make_node(tmp_path / "node", ae_title="ROUSERS", workers=1).start()
    try:
        call(node, "users.add", {"name": "ada", "role": "admin", "ssh_keys": [ssh_keygen(tmp_path / "ada")]})
        before = users_of(node)
        app = PacsdeckConsole(fleet_of(node, tmp_path), readonly=True)

        async def scenario():
            async with app.run_test(size=SIZE) as pilot:
                screen = await node_tab(pilot, app, "users")
                pane = screen.query_one(UsersPane)
                await until(pilot, lambda: "ada" in pane.users, "ada listed")
                shown = {b.binding.action for b in screen.active_bindings.values() if b.enabled}
                assert not shown & UsersPane.MUTATING, shown
                assert not pane.query("Button")
                await pilot.press("a", "r", "k", "d")
                await pilot.pause(0.5)
                assert isinstance(app.screen, NodeScreen)  # no form, no question
                pane.remove()  # even called directly, the app's one door refuses it
                await confirm(pilot, app, "Remove user ada (admin) from n1?")
                await until(pilot, lambda: "read-only" in note_of(pane), "the refusal")

        asyncio.run(scenario())
        assert users_of(node) == before
    finally:
        node.stop()


# --- the words, params and key checks the tab uses (no node needed) -------------------------------------


def test_keys_are_read_from_text_and_files_and_bad_ones_are_told_plainly(tmp_path):
    pub = ssh_keygen(tmp_path / "k")
    assert edits.parse_keys(f"\n# mine\n{pub}\n{pub}\n") == (pub,)  # comments skipped, duplicates once
    assert edits.read_key_file(str(tmp_path / "k.pub")) == (pub,)
    assert edits.fingerprint(pub) == fingerprint_of(tmp_path / "k.pub")
    (tmp_path / "empty.pub").write_text("\n")
    (tmp_path / "opts.pub").write_text(f'restrict,command="x" {pub}\n')
    (tmp_path / "cut.pub").write_text(pub.split()[0] + " AAAAC3Nza\n")
    (tmp_path / "swapped.pub").write_text("ssh-rsa " + pub.split()[1] + "\n")
    problems = {
        "nope.pub": "nope.pub: no such file",
        "": "is a folder",
        "k": "this is a private key; give the public key (the .pub file) instead",
        "empty.pub": "holds no public key",
        "opts.pub": "without authorized_keys options",
        "cut.pub": "key data is not valid",
        "swapped.pub": "the key data is a ssh-ed25519 key, not ssh-rsa",
    }
    for name, why in problems.items():
        with pytest.raises(edits.KeyProblem) as err:
            edits.read_key_file(str(tmp_path / name))
        assert why in str(err.value), (name, str(err.value))
    with pytest.raises(edits.KeyProblem, match="pasted key, line 2: not an OpenSSH public key"):
        edits.parse_keys(f"{pub}\nhello world", "pasted key")
    # A path pasted where a key was asked is read as the file it names; a file's contents are keys only.
    assert edits.parse_keys(f"{tmp_path / 'k.pub'}\n{pub}", "pasted key", read_paths=True) == (pub,)
    with pytest.raises(edits.KeyProblem, match="looks like a file's path, not a key"):
        edits.parse_keys(str(tmp_path / "k.pub"), "pasted key")


def test_the_questions_say_what_changes_and_refusals_are_one_line():
    from agent.protocol import CONFLICT, FORBIDDEN

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBWb6f8X3Sln4e3fCz0zA0iNeLm2XbEj8e9mLhz2Z2W1 ops@laptop"
    fp = edits.fingerprint(key)
    bob = User("bob", "viewer", ssh_keys=(UserKey("ssh-ed25519", f"ssh-ed25519 {fp}"),) * 2)
    draft = edits.UserDraft("alice", "operator", (key,))
    assert edits.add_params(draft) == {"name": "alice", "role": "operator", "ssh_keys": [key]}
    assert edits.describe_add(draft, "n1") == f"Add user alice (operator) on n1 with 1 key?\n  ssh-ed25519 {fp}"
    assert "with no key? It cannot log in" in edits.describe_add(edits.UserDraft("eve"), "n1")
    assert edits.describe_role(bob, "admin", "n1") == "Change bob's role on n1 from viewer to admin?"
    assert edits.describe_keys(bob, (key,), "n1") == f"Replace bob's 2 keys on n1 with 1 key?\n  ssh-ed25519 {fp}"
    assert edits.describe_keys(bob, (), "n1") == "Remove bob's 2 keys on n1? bob can no longer log in over SSH."
    assert edits.describe_remove(bob, "n1") == "Remove user bob (viewer) from n1? Its 2 authorized_keys lines go too."
    assert edits.keys_cell(bob) == f"2: ssh-ed25519 {fp[:19]}…, ssh-ed25519 {fp[:19]}…"
    assert edits.keys_cell(dataclasses.replace(bob, ssh_keys=bob.ssh_keys[:1])) == f"1: ssh-ed25519 {fp}"
    last = RPCError(CONFLICT, "bob is the last admin; make another user admin first", {"field": "role"})
    assert edits.refusal("users.update", "bob", last) == "bob is the last admin; make another user admin first"
    forbidden = RPCError(
        FORBIDDEN, "users.list needs the admin role; vic is a viewer", {"required_role": "admin", "role": "viewer"}
    )
    assert edits.list_refusal(forbidden).startswith("users.list needs admin; you are viewer.")
    assert edits.refusal("users.add", "eve", forbidden) == (
        "users.add eve refused: your role (viewer) may not do this; it needs admin"
    )
