"""Declared result shapes: rpc.discover publishes one per method; the check every agent test runs catches a bad one."""

from __future__ import annotations

import copy

import pytest

from agent.registry import build_table
from agent.schema import INT, STR, Arr, Null, Obj, mismatches

from .agent_support import agent_call, agents, env, node  # noqa: F401 - fixtures
from .conftest import pacsdeck
from .results import RESULT_SCHEMAS, check_result

# What agent.schema's validator understands; a declaration using anything else would go unchecked.
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "description"}
TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}


def unsupported(schema, path: str = "$") -> list[str]:
    """Keywords and type names in a declared schema that the validator would ignore."""
    if not isinstance(schema, dict):
        return [f"{path}: a schema must be an object"]
    out = [f"{path}: {k}" for k in set(schema) - KEYWORDS]
    kinds = schema.get("type", [])
    out += [f"{path}: type {t}" for t in ([kinds] if isinstance(kinds, str) else kinds) if t not in TYPES]
    for name, sub in schema.get("properties", {}).items():
        out += unsupported(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += unsupported(schema[key], f"{path}.<{key}>")
    missing = set(schema.get("required", ())) - set(schema.get("properties", {}))
    out += [f"{path}: required {name} is not a property" for name in sorted(missing)]
    return out


def test_rpc_discover_publishes_a_result_schema_for_every_method(node, agents, env):
    methods = agents(node.config, env=env).call("rpc.discover")["methods"]
    assert {m["name"] for m in methods} == set(build_table())
    for m in methods:
        result = m["result"]
        assert result["type"] == "object" and result["properties"], m["name"]
        assert unsupported(result) == [], m["name"]
        assert result == RESULT_SCHEMAS[m["name"]], m["name"]  # what the tests check is what is published


def test_the_validator_names_the_path_of_a_missing_key_and_a_wrong_type(node, agents, env):
    schema = RESULT_SCHEMAS["aets.list"]
    real = agents(node.config, env=env).call("aets.list")
    assert real["aets"] and mismatches(real, schema) == []
    wrong = copy.deepcopy(real)
    del wrong["aets"][0]["tls"]
    wrong["aets"][1]["port"] = "104"
    wrong["aets"][1]["operations"] = ["store", "delete"]
    wrong["nickname"] = "x"
    assert mismatches(wrong, schema) == [
        "$.aets[0]: missing required key 'tls'",
        '$.aets[1].port: expected integer or null, got string "104"',
        "$.aets[1].operations[1]: \"delete\" is not one of ['store', 'find', 'move', 'get']",
        "$.nickname: not declared (declare it in the method's result schema)",
    ]
    with pytest.raises(pytest.fail.Exception, match=r"aets\.list: .*\n  \$\.aets\[0\]: missing required key 'tls'"):
        check_result("aets.list", wrong)


def test_nullable_integers_and_booleans_are_told_apart():
    schema = Obj({"port": Null(INT), "names": Arr(STR)})
    assert mismatches({"port": None, "names": []}, schema) == []
    assert mismatches({"port": 104.0, "names": ["a"]}, schema) == []  # JSON has one number type
    assert mismatches({"port": True, "names": [1]}, schema) == [
        "$.port: expected integer or null, got boolean true",
        "$.names[0]: expected string, got integer 1",
    ]


def test_every_agent_response_the_tests_read_goes_through_the_check(node, agents, env, monkeypatch):
    # A declaration the real result cannot meet: each way tests read results must then fail.
    monkeypatch.setitem(RESULT_SCHEMAS, "aets.list", Obj({"aets": Arr(Obj({"nickname": STR}, extra=True))}))
    missing = r"\$\.aets\[0\]: missing required key 'nickname'"
    agent = agents(node.config, env=env)
    with pytest.raises(pytest.fail.Exception, match=missing):
        agent.call("aets.list")
    agent.send_raw(
        b'[{"jsonrpc":"2.0","id":"b1","method":"rpc.whoami"},{"jsonrpc":"2.0","id":"b2","method":"aets.list"}]\n'
    )
    with pytest.raises(pytest.fail.Exception, match=missing):
        agent.read()
    with pytest.raises(pytest.fail.Exception, match=missing):
        agent_call(node.config, "aets.list", env=env)
    with pytest.raises(pytest.fail.Exception, match=missing):
        pacsdeck("agent", "call", "aets.list", "--config", str(node.config))
