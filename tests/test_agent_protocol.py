"""The wire format and the stdio loop: envelopes, error kinds, exit codes, and a loop that never dies."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import protocol
from agent.protocol import RPCError

from .agent_support import agent_call, agents, env, node  # noqa: F401 - fixtures
from .conftest import REPO
from .results import check_cli


def test_protocol_is_stdlib_only():
    """The console imports agent.protocol: it must not drag in storage, pydicom or anything else."""
    tree = ast.parse((REPO / "agent" / "protocol.py").read_text())
    imported = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            imported |= {a.name.split(".")[0] for a in item.names}
        elif isinstance(item, ast.ImportFrom):
            imported.add((item.module or "").split(".")[0])
    # decode() reads dataclass declarations: dataclasses, functools, types and typing, all stdlib.
    assert imported <= {"__future__", "json", "datetime", "dataclasses", "functools", "types", "typing"}, imported


def test_kinds_have_distinct_codes_and_exit_codes():
    assert set(protocol.CODES) == set(protocol.KINDS) == set(protocol.EXIT_CODES)
    assert len(set(protocol.CODES.values())) == len(protocol.KINDS)
    assert len(set(protocol.EXIT_CODES.values())) == len(protocol.KINDS)
    assert 0 not in protocol.EXIT_CODES.values()


def test_error_round_trip():
    err = RPCError("conflict", "exists", {"field": "name"})
    wire = json.loads(protocol.encode(protocol.error_response(7, err)))
    assert wire == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32009, "message": "exists", "data": {"field": "name", "kind": "conflict"}},
    }
    with pytest.raises(RPCError) as info:
        protocol.unwrap(wire)
    assert (info.value.kind, info.value.data, info.value.exit_code) == ("conflict", {"field": "name"}, 5)
    assert protocol.iso_time(0) == "1970-01-01T00:00:00.000Z"


def test_many_calls_on_one_process(node, agents, env):
    agent = agents(node.config, env=env)
    for _i in range(20):
        status = agent.call("node.status")
        assert status["node"]["ae_title"] == node.ae_title
    assert agent.proc.poll() is None
    assert agent.close() == 0


def test_loop_survives_garbage(node, agents, env):
    """Malformed JSON, bad envelopes, unknown methods, binary junk and huge lines get errors, not exits."""
    agent = agents(node.config, env=env)
    cases = [
        (b"this is not json\n", -32700, "invalid_params"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": \n', -32700, "invalid_params"),
        (b"\xff\xfe\x00garbage\n", -32700, "invalid_params"),
        (b"42\n", -32600, "invalid_params"),
        (b'{"id": 3, "method": "node.status"}\n', -32600, "invalid_params"),
        (b'{"jsonrpc": "2.0", "id": 4}\n', -32600, "invalid_params"),
        (b'{"jsonrpc": "2.0", "id": 5, "method": "node.status", "params": [1, 2]}\n', -32602, "invalid_params"),
        (b'{"jsonrpc": "2.0", "id": 6, "method": "no.such"}\n', -32601, "not_found"),
        (b'{"jsonrpc": "2.0", "id": 7, "method": "node.status", "params": {"bogus": 1}}\n', -32602, "invalid_params"),
        (b"[]\n", -32600, "invalid_params"),
        (b"x" * (protocol.MAX_LINE_BYTES + 10) + b"\n", -32600, "invalid_params"),
        (b'{"jsonrpc": "2.0", "id": 8, "method": "' + b"m" * 3_000_000 + b'"}\n', -32600, "invalid_params"),
    ]
    for raw, code, kind in cases:
        agent.send_raw(raw)
        response = agent.read()
        assert response is not None, f"agent exited on {raw[:40]!r}: {agent.stderr()}"
        assert response["error"]["code"] == code, (raw[:60], response)
        assert response["error"]["data"]["kind"] == kind
        assert agent.proc.poll() is None
    # Still serving, with ids intact.
    assert agent.call("rpc.whoami")["role"] == "admin"


def test_batches_notifications_and_blank_lines(node, agents, env):
    agent = agents(node.config, env=env)
    agent.send_raw(b"\n   \n")
    agent.send_raw(b'{"jsonrpc": "2.0", "method": "node.status"}\n')  # notification: no answer
    agent.send_raw(
        protocol.encode(
            [
                protocol.request("rpc.whoami", id="a"),
                protocol.request("node.status", id=None),
                protocol.request("nope", id="b"),
            ]
        )
    )
    batch = agent.read()
    assert [r["id"] for r in batch] == ["a", "b"]
    assert batch[0]["result"]["user"].startswith("local:")
    assert batch[1]["error"]["data"]["kind"] == "not_found"
    assert agent.call("rpc.whoami")["role"] == "admin"  # the next line answers the next request


def test_stdout_carries_only_protocol_lines(node, agents, env):
    """Logs go to stderr, so every stdout line the console reads parses as a response."""
    agent = agents(node.config, env=env)
    for method in ("node.status", "rpc.discover", "aets.list", "nope"):
        agent.send_raw(protocol.encode(protocol.request(method)))
    agent.send_raw(b"junk\n")
    assert agent.close() == 0
    responses = []
    while (response := agent.read(timeout=10)) is not None:  # every line parses, or read() raises
        responses.append(response)
    assert len(responses) == 5
    assert "agent ready" in agent.stderr()


def test_discover_lists_methods_with_schemas(node, agents, env):
    agent = agents(node.config, env=env)
    found = agent.call("rpc.discover")
    assert found["schema_version"] == protocol.SCHEMA_VERSION
    methods = {m["name"]: m for m in found["methods"]}
    for name in (
        "node.status",
        "studies.find",
        "series.list",
        "instances.list",
        "associations.recent",
        "audit.recent",
        "aets.list",
        "aets.add",
        "aets.update",
        "aets.remove",
        "aets.echo",
        "users.list",
        "users.add",
        "users.update",
        "users.remove",
        "rpc.discover",
        "rpc.whoami",
    ):
        assert name in methods, name
    add = methods["aets.add"]
    assert add["role"] == "admin" and add["audited"]
    # host and port: required unless operations is ["store"] (a sender never called back), checked by aets.add
    assert set(add["params"]["required"]) == {"ae_title"}
    assert methods["logs.tail"]["role"] == "viewer" and not methods["logs.tail"]["audited"]
    assert add["params"]["additionalProperties"] is False
    assert methods["studies.find"]["role"] == "viewer" and not methods["studies.find"]["audited"]
    assert methods["aets.echo"]["role"] == "operator"


def test_call_exit_codes_per_kind(node, env):
    ok = agent_call(node.config, "aets.list", env=env)
    assert ok.returncode == 0, ok.stderr
    assert [a["ae_title"] for a in json.loads(ok.stdout)["aets"]] == ["ECHOSCU", "STORESCU"]

    def kind_and_code(*args, **kw):
        result = agent_call(*args, env=env, **kw)
        return json.loads(result.stdout)["error"]["data"]["kind"], result.returncode

    assert kind_and_code(node.config, "aets.add", '{"ae_title": "A;B", "host": "h", "port": 1}') == (
        "invalid_params",
        2,
    )
    assert kind_and_code(node.config, "no.such") == ("not_found", 3)
    assert kind_and_code(node.config, "aets.remove", '{"ae_title": "NOPE"}') == ("not_found", 3)
    assert kind_and_code(node.config, "aets.add", '{"ae_title": "STORESCU", "host": "h", "port": 1}') == ("conflict", 5)
    assert kind_and_code(node.config, "node.status", as_user="ghost") == ("forbidden", 4)
    (node.dir / "index.sqlite").rename(node.dir / "moved.sqlite")
    assert kind_and_code(node.config, "node.status") == ("unavailable", 6)

    bad_json = agent_call(node.config, "aets.list", "{nope", env=env)
    assert bad_json.returncode == 2 and "--params" in bad_json.stderr
    bad_as = agent_call(node.config, "aets.list", as_user="-rf;x", env=env)
    assert bad_as.returncode == 2 and "--as" in bad_as.stderr


def test_config_lookup_uses_environment(node, env):
    result = subprocess.run(
        [sys.executable, "-m", "pacsdeck.cli", "agent", "call", "rpc.whoami"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**env, "PACSDECK_CONFIG": str(node.config)},
    )
    assert result.returncode == 0, result.stderr
    check_cli(["agent", "call", "rpc.whoami"], result)
    assert json.loads(result.stdout)["config"] == str(Path(node.config))


def test_broken_config_answers_unavailable_instead_of_dying(tmp_path, agents, env):
    config = tmp_path / "missing" / "node.yaml"
    agent = agents(config, env=env, stderr_path=tmp_path / "agent.log")
    err = agent.error("node.status")
    # root may act as the owner of anything; anyone else does not own a config that is not there
    assert err.kind == ("unavailable" if os.geteuid() == 0 else "forbidden"), err.message
    assert agent.call("rpc.discover")["methods"]
    assert agent.proc.poll() is None
