"""users.*: forced-command lines in authorized_keys, no passwords, and the last admin that must stay."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .agent_support import agent_env, agents, ssh_keygen  # noqa: F401 - fixture
from .conftest import make_node

PASSWORD = "correct horse battery staple"


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node")


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "home" / ".ssh" / "authorized_keys"


@pytest.fixture
def admin(node, agents, keys_file):
    agent = agents(node.config, env=agent_env(keys_file, PACSDECK_LOG_LEVEL="DEBUG"))
    assert agent.call("rpc.whoami")["role"] == "admin"
    return agent


def _node_bytes(node) -> bytes:
    return b"".join(p.read_bytes() for p in node.dir.rglob("*") if p.is_file())


def test_a_password_is_refused_since_nothing_logs_in_with_one(node, admin):
    """Nothing in pacsdeck checks a password (the agent is reached over SSH keys or locally): one given is
    refused naming the field, nothing is created or stored, and the audit row shows it as ***."""
    for params in ({"password": PASSWORD}, {"password": None}):
        err = admin.error("users.add", {"name": "alice", "role": "operator", **params})
        assert (err.kind, err.data["field"]) == ("invalid_params", "password"), err.message
        assert "nothing in pacsdeck logs in with a password" in err.message and "ssh_keys" in err.message
    assert admin.call("users.list")["users"] == []
    admin.call("users.add", {"name": "alice", "role": "operator"})
    err = admin.error("users.update", {"name": "alice", "password": PASSWORD})
    assert (err.kind, err.data["field"]) == ("invalid_params", "password")
    published = {m["name"]: m["params"]["properties"] for m in admin.call("rpc.discover")["methods"]}
    assert "password" not in published["users.add"] and "password" not in published["users.update"]
    entries = admin.call("audit.recent", {"user": admin.call("rpc.whoami")["user"], "method": "users.add"})["entries"]
    assert entries[-1]["params"]["password"] == "***" and entries[-1]["result"] == "invalid_params"
    admin.close()
    assert PASSWORD.encode() not in _node_bytes(node)  # index, WAL, logs: nowhere
    assert [tuple(r) for r in node.rows("SELECT password_hash FROM users")] == [(None,)]


def test_a_user_made_with_a_password_earlier_still_says_so_and_keeps_it(node, admin):
    """has_password stays in users.list for scripts: true only for a user created before passwords were
    dropped; its stored hash is left alone by a change of role."""
    admin.call("users.add", {"name": "olda", "role": "viewer"})
    with node.db() as db:  # what an older agent left behind
        db.execute("UPDATE users SET password_hash='scrypt$n=16384,r=8,p=1$c2FsdA==$aGFzaA==' WHERE name='olda'")
    admin.call("users.add", {"name": "newt", "role": "viewer"})
    listed = {u["name"]: u["has_password"] for u in admin.call("users.list")["users"]}
    assert listed == {"newt": False, "olda": True}
    assert admin.call("users.update", {"name": "olda", "role": "operator"})["user"]["has_password"] is True
    assert node.rows("SELECT password_hash FROM users WHERE name='olda'")[0][0].startswith("scrypt$")


def test_keys_become_forced_command_lines(node, admin, keys_file, tmp_path):
    keys_file.parent.mkdir(parents=True)
    unrelated = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBWb6f8X3Sln4e3fCz0zA0iNeLm2XbEj8e9mLhz2Z2W1 ops@laptop"
    other_node = (
        'restrict,command="/usr/bin/pacsdeck agent stdio --config /srv/other/node.yaml --as alice" '
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBWb6f8X3Sln4e3fCz0zA0iNeLm2XbEj8e9mLhz2Z2W1 pacsdeck:alice"
    )
    keys_file.write_text(f"# managed by hand\n{unrelated}\n{other_node}\n")

    ed = ssh_keygen(tmp_path / "ed")
    rsa = ssh_keygen(tmp_path / "rsa", "rsa")
    ecdsa = ssh_keygen(tmp_path / "ec", "ecdsa")
    user = admin.call("users.add", {"name": "alice", "role": "viewer", "ssh_keys": [ed, rsa, ecdsa]})["user"]
    assert [k["type"] for k in user["ssh_keys"]] == ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"]
    assert all(k["fingerprint"].split()[1].startswith("SHA256:") for k in user["ssh_keys"])

    exe = Path(sys.executable).parent / "pacsdeck"
    command = f"{exe} agent stdio --config {node.config} --as alice"
    expected = [f'restrict,command="{command}" {" ".join(k.split()[:2])} pacsdeck:alice' for k in (ed, rsa, ecdsa)]
    lines = keys_file.read_text().splitlines()
    assert lines == ["# managed by hand", unrelated, other_node, *expected]
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert "test@pacsdeck" not in keys_file.read_text()  # the key's own comment is not carried over

    admin.call("users.add", {"name": "bob", "role": "viewer", "ssh_keys": [ed]})
    admin.call("users.update", {"name": "alice", "ssh_keys": [rsa]})
    lines = keys_file.read_text().splitlines()
    assert [ln for ln in lines if ln.endswith("pacsdeck:alice") and str(node.config) in ln] == [expected[1]]
    assert sum(ln.endswith("pacsdeck:bob") for ln in lines) == 1

    admin.call("users.remove", {"name": "alice"})
    lines = keys_file.read_text().splitlines()
    assert lines[:3] == ["# managed by hand", unrelated, other_node]  # others untouched
    assert not any("--as alice" in ln and str(node.config) in ln for ln in lines)
    assert len(lines) == 4 and lines[3].endswith("pacsdeck:bob")
    assert not list(keys_file.parent.glob(".authorized_keys.*"))  # no temp files left


def _keygen(path: Path, key_type: str, bits: int) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-b", str(bits), "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path.with_suffix(".pub").read_text().strip()


def test_keys_are_parsed_not_judged_by_shape(admin, keys_file, tmp_path):
    """A key cut short, padded, on the wrong curve or RSA under 2048 bits would be a dead line in
    authorized_keys: each is refused naming its index, and nothing is written."""
    good = ssh_keygen(tmp_path / "ed")
    ed_type, ed_b64 = good.split()[:2]
    blob = base64.b64decode(ed_b64)
    ec384 = _keygen(tmp_path / "ec384", "ecdsa", 384)
    ec521 = _keygen(tmp_path / "ec521", "ecdsa", 521)
    rsa2048 = _keygen(tmp_path / "rsa2048", "rsa", 2048)
    bad = {
        "ssh-ed25519 key": f"{ed_type} {ed_b64[:-4]}",  # still valid base64, 3 bytes of the key gone
        "ssh-ed25519 key (the key data": f"{ed_type} {base64.b64encode(blob + b'0000').decode()}",
        "ecdsa-sha2-nistp256 key": f"ecdsa-sha2-nistp256 {ec384.split()[1]}",
        "ecdsa-sha2-nistp521 key": f"ecdsa-sha2-nistp521 {ec521.split()[1][:-8]}",
        "ssh-rsa key": f"ssh-rsa {rsa2048.split()[1][:-12]}",
        "1024 bits; at least 2048": _keygen(tmp_path / "rsa1024", "rsa", 1024),
    }
    for why, key in bad.items():
        err = admin.error("users.add", {"name": "alice", "role": "viewer", "ssh_keys": [good, key]})
        assert err.kind == "invalid_params" and err.data["field"] == "ssh_keys[1]", (why, err.message)
        assert err.message.startswith("ssh_keys[1]: ") and why in err.message, err.message
    assert admin.call("users.list")["users"] == [] and not keys_file.exists()

    user = admin.call("users.add", {"name": "alice", "role": "viewer", "ssh_keys": [ec384, ec521, rsa2048]})["user"]
    assert [k["type"] for k in user["ssh_keys"]] == ["ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"]
    err = admin.error("users.update", {"name": "alice", "ssh_keys": [bad["ssh-ed25519 key"]]})
    assert err.message.startswith("ssh_keys[0]: not a valid ssh-ed25519 key (")
    assert len(admin.call("users.list")["users"][0]["ssh_keys"]) == 3  # unchanged
    assert len(keys_file.read_text().splitlines()) == 3


def test_last_admin_cannot_be_removed_or_demoted(admin):
    admin.call("users.add", {"name": "ada", "role": "admin"})
    err = admin.error("users.remove", {"name": "ada"})
    assert err.kind == "conflict" and "last admin" in err.message
    assert admin.error("users.update", {"name": "ada", "role": "operator"}).kind == "conflict"
    admin.call("users.add", {"name": "bob", "role": "admin"})
    admin.call("users.update", {"name": "ada", "role": "viewer"})
    assert admin.error("users.remove", {"name": "bob"}).kind == "conflict"
    admin.call("users.update", {"name": "ada", "role": "admin"})
    admin.call("users.remove", {"name": "bob"})
    assert {u["name"]: u["role"] for u in admin.call("users.list")["users"]} == {"ada": "admin"}


def test_conflicts_and_missing_users(admin):
    admin.call("users.add", {"name": "alice", "role": "viewer"})
    assert admin.error("users.add", {"name": "alice", "role": "admin"}).kind == "conflict"
    assert admin.error("users.update", {"name": "ghost", "role": "admin"}).kind == "not_found"
    assert admin.error("users.remove", {"name": "ghost"}).kind == "not_found"
    assert admin.error("users.update", {"name": "alice"}).kind == "invalid_params"


def test_unwritable_key_file_creates_no_user(node, agents, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    agent = agents(node.config, env=agent_env(blocker / "authorized_keys"))
    key = ssh_keygen(tmp_path / "k")
    err = agent.error("users.add", {"name": "alice", "role": "viewer", "ssh_keys": [key]})
    assert err.kind == "unavailable" and "not-a-dir" in err.message
    assert agent.call("users.list")["users"] == []


def test_unsafe_config_path_is_not_put_in_a_command(tmp_path, agents):
    node = make_node(tmp_path / "my node")  # a space would split the forced command
    keys_file = tmp_path / "authorized_keys"
    agent = agents(node.config, env=agent_env(keys_file))
    err = agent.error("users.add", {"name": "alice", "role": "viewer", "ssh_keys": [ssh_keygen(tmp_path / "k")]})
    assert err.kind == "unavailable" and "config path" in err.message
    assert not keys_file.exists()
    assert agent.call("users.add", {"name": "bob", "role": "viewer"})["user"]["name"] == "bob"  # no key: fine
