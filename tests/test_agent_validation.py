"""Injection in AE titles, user names, hosts and keys: invalid_params naming the field; nothing run or written."""

from __future__ import annotations

import json

import pytest

from .agent_support import agent_call, agent_env, agents, ssh_keygen  # noqa: F401 - fixture
from .conftest import make_node


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node")


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "ssh" / "authorized_keys"


@pytest.fixture
def admin(node, agents, keys_file):
    agent = agents(node.config, env=agent_env(keys_file))
    assert agent.call("rpc.whoami")["role"] == "admin"  # up, with its tables created
    return agent


def _evil(canary) -> dict[str, str]:
    return {
        "semicolon": f"CT1;touch {canary}",
        "subshell": f"$(touch {canary})",
        "backtick": f"`touch {canary}`",
        "newline": f"CT1\ntouch {canary}",
        "dash": "-oProxyCommand=x",
        "dotdot": "../../etc/passwd",
        "10kb": "A" * 10240,
    }


def _snapshot(node, keys_file) -> tuple:
    return (
        [tuple(r) for r in node.rows("SELECT * FROM aets ORDER BY ae_title")],
        [tuple(r) for r in node.rows("SELECT * FROM users ORDER BY name")],
        keys_file.exists() and keys_file.read_bytes(),
    )


def test_injection_in_each_field_is_refused(node, admin, keys_file, tmp_path):
    canary = tmp_path / "pwned"
    good_key = ssh_keygen(tmp_path / "k")
    key_type, key_b64 = good_key.split()[:2]

    def in_key(bad: str) -> str:
        """In the comment of a real key (the comment is dropped, but still must be clean); '-' leads."""
        return f"{bad}{good_key}" if bad.startswith("-") else f"{key_type} {key_b64} {bad}"

    admin.call("users.add", {"name": "keep", "role": "admin"})  # the users table exists from here on
    before = _snapshot(node, keys_file)
    targets = [
        ("aets.add", "ae_title", lambda bad: {"ae_title": bad, "host": "127.0.0.1", "port": 104}),
        ("aets.add", "host", lambda bad: {"ae_title": "CT1", "host": bad, "port": 104}),
        ("aets.update", "host", lambda bad: {"ae_title": "STORESCU", "host": bad}),
        ("aets.remove", "ae_title", lambda bad: {"ae_title": bad}),
        ("aets.echo", "ae_title", lambda bad: {"ae_title": bad}),
        ("users.add", "name", lambda bad: {"name": bad, "role": "viewer", "ssh_keys": [good_key]}),
        ("users.add", "ssh_keys[0]", lambda bad: {"name": "eve", "role": "viewer", "ssh_keys": [in_key(bad)]}),
        ("users.update", "ssh_keys[1]", lambda bad: {"name": "keep", "ssh_keys": [good_key, in_key(bad)]}),
        ("users.remove", "name", lambda bad: {"name": bad}),
    ]
    for method, field, build in targets:
        for label, bad in _evil(canary).items():
            err = admin.error(method, build(bad))
            assert err.kind == "invalid_params", (method, field, label, err.message)
            assert err.data["field"] == field, (method, field, label, err.data)
            assert err.message.startswith(f"{field}:"), err.message
    assert not canary.exists()
    assert _snapshot(node, keys_file) == before
    refused = admin.call("audit.recent", {"limit": 1000, "method": "users.add"})["entries"]
    assert refused and all(len(json.dumps(e["params"])) < 2000 for e in refused)  # 10 KB cut in the log


def test_key_shapes_that_are_not_plain_keys(node, admin, keys_file, tmp_path):
    good = ssh_keygen(tmp_path / "k")
    key_type, key_b64 = good.split()[:2]
    rsa_b64 = ssh_keygen(tmp_path / "r", "rsa").split()[1]
    bad_keys = {
        "options before the key": f'command="/bin/sh" {good}',
        "restrict before the key": f"restrict {good}",
        "second key on a new line": f"{good}\n{good}",
        "carriage return": f"{good}\rssh-rsa AAAA",
        "unknown type": f"ssh-dss {key_b64}",
        "type and blob disagree": f"ssh-rsa {key_b64}",
        "another type's blob": f"ssh-ed25519 {rsa_b64}",
        "not base64": f"{key_type} not*base64",
        "no blob": key_type,
        "truncated blob": f"{key_type} {key_b64[:12]}",
        "leading dash": f"-{good}",
    }
    before = _snapshot(node, keys_file)
    for label, key in bad_keys.items():
        err = admin.error("users.add", {"name": "eve", "role": "viewer", "ssh_keys": [key]})
        assert (err.kind, err.data.get("field")) == ("invalid_params", "ssh_keys[0]"), (label, err.message)
    assert _snapshot(node, keys_file) == before


def test_non_utf8_names_the_field(node, admin, keys_file):
    before = _snapshot(node, keys_file)
    for field, line in (
        (
            "ae_title",
            b'{"jsonrpc":"2.0","id":1,"method":"aets.add","params":{"ae_title":"CT\xff\xfe",'
            b'"host":"127.0.0.1","port":104}}\n',
        ),
        (
            "host",
            b'{"jsonrpc":"2.0","id":2,"method":"aets.add","params":{"ae_title":"CT1",'
            b'"host":"h\xc3\x28st","port":104}}\n',
        ),
        ("name", b'{"jsonrpc":"2.0","id":3,"method":"users.add","params":{"name":"\xe9ve","role":"viewer"}}\n'),
        ("name", b'{"jsonrpc":"2.0","id":4,"method":"users.add","params":{"name":"\\udcff","role":"viewer"}}\n'),
    ):
        admin.send_raw(line)
        response = admin.read()
        assert response["error"]["data"] == {"kind": "invalid_params", "field": field}, response
    assert _snapshot(node, keys_file) == before


def test_other_values_are_checked_too(node, admin):
    cases = [
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": 0}, "port"),
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": "104"}, "port"),
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": 104, "operations": ["store", "delete"]}, "operations[1]"),
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": 104, "move_destination": "yes"}, "move_destination"),
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": 104, "description": "two\nlines"}, "description"),
        ("aets.add", {"ae_title": "CT1", "host": "h", "port": 104, "evil": 1}, "evil"),
        ("aets.add", {"ae_title": "THIS_TITLE_IS_TOO_LONG", "host": "h", "port": 104}, "ae_title"),
        ("aets.add", {"ae_title": "   ", "host": "h", "port": 104}, "ae_title"),
        ("aets.add", {"ae_title": "A\\B", "host": "h", "port": 104}, "ae_title"),
        ("aets.add", {"ae_title": "CT1", "host": "bad host", "port": 104}, "host"),
        ("aets.echo", {"ae_title": "STORESCU", "timeout": 3600}, "timeout"),
        ("users.add", {"name": "Eve", "role": "viewer"}, "name"),
        ("users.add", {"name": "eve", "role": "root"}, "role"),
        ("users.add", {"name": "eve", "role": "viewer", "password": "a long passphrase"}, "password"),  # none taken
        ("users.add", {"name": "eve", "role": "viewer", "ssh_keys": "ssh-ed25519 AAAA"}, "ssh_keys"),
        ("studies.find", {"StudyDate": "20240231"}, "StudyDate"),
        ("studies.find", {"StudyDate": "2024-"}, "StudyDate"),
        ("studies.find", {"StudyDate": "20240301-20240101"}, "StudyDate"),
        ("studies.find", {"PatientName": "A\\B"}, "PatientName"),
        ("studies.find", {"ModalitiesInStudy": "CT;MR"}, "ModalitiesInStudy"),
        ("studies.find", {"limit": 0}, "limit"),
        ("series.list", {"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ("audit.recent", {"limit": True}, "limit"),
    ]
    for method, params, field in cases:
        err = admin.error(method, params)
        assert (err.kind, err.data.get("field")) == ("invalid_params", field), (method, params, err.message)


def test_as_user_is_validated_before_anything_runs(node, tmp_path):
    canary = tmp_path / "pwned"
    for bad in (f"x;touch {canary}", f"$(touch {canary})", "-x", "../root", "a" * 10240):
        result = agent_call(node.config, "node.status", as_user=bad, env=agent_env(tmp_path / "ak"))
        assert result.returncode == 2, (bad, result.stderr)
        assert "--as:" in result.stderr and result.stdout == ""
    assert not canary.exists()
