"""Hostile lines: whatever one line holds, it gets an error, the session answers the next, refusals are audited."""

from __future__ import annotations

import json

import pytest

from agent.protocol import MAX_DEPTH, MAX_LINE_BYTES, NESTED

from .agent_support import agents, env, node  # noqa: F401 - fixtures

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


def lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def call_line(method: str, params: str, id: int = 7) -> bytes:
    """A request line with `params` as raw JSON text, so it can be nested past what json.dumps would build."""
    return f'{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}\n'.encode()


def deep_aet(depth: int) -> str:
    """aets.add params that would be valid but for a description nested `depth` lists deep."""
    return f'{{"ae_title":"EVIL","host":"10.0.0.9","port":104,"description":{lists(depth)}}}'


def depth_of(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


@pytest.fixture
def owner(node, agents, env):
    """The node's owner (local, no --as), who also created the viewer vera."""
    agent = agents(node.config, env=env)
    agent.call("users.add", {"name": "vera", "role": "viewer"})
    return agent


@pytest.fixture(params=["owner", "viewer"])
def caller(request, node, agents, env, owner):
    return owner if request.param == "owner" else agents(node.config, as_user="vera", env=env)


HOSTILE = [
    # (line, the error code, the id the answer carries)
    (lists(10_000).encode(), PARSE_ERROR, None),
    (objects(100_000).encode(), PARSE_ERROR, None),
    (call_line("node.status", f'{{"a":{lists(10_000)}}}'), PARSE_ERROR, 7),
    (call_line("node.status", f'{{"a":{objects(100_000)}}}', id=8), PARSE_ERROR, 8),
    (b'{"jsonrpc":"2.0","id":' + lists(5_000).encode() + b',"method":"node.status"}', PARSE_ERROR, None),
    (b"[" * 5_000 + b"}", PARSE_ERROR, None),  # unbalanced as well as deep
    (b"[" * 600_000 + b"]" * 600_000, INVALID_REQUEST, None),  # deep and longer than MAX_LINE_BYTES
    (b"x" * (MAX_LINE_BYTES + 10), INVALID_REQUEST, None),
    (b"\xff\xfe\xc0\x80 not utf-8", PARSE_ERROR, None),
    (b'{"jsonrpc":"2.0","id":9,"method":"node\x00status"}', PARSE_ERROR, None),
    (b"\x00" * 64, PARSE_ERROR, None),
    (call_line("node.status", '{"limit":NaN}'), PARSE_ERROR, None),
    (call_line("node.status", '{"limit":1e999}'), PARSE_ERROR, None),
]


def test_no_line_ends_the_session(caller):
    for line, code, answer_id in HOSTILE:
        caller.send_raw(line.rstrip(b"\n") + b"\n")
        response = caller.read()
        assert response is not None, f"agent exited on {line[:40]!r}: {caller.stderr()[-2000:]}"
        assert response["error"]["code"] == code, (line[:40], response)
        assert response["error"]["data"]["kind"] == "invalid_params"
        assert response["id"] == answer_id, (line[:40], response)
        assert caller.call("node.status")["node"]["ae_title"]  # the session goes on
    caller.send_raw(b"\n  \r\n")  # blank lines are skipped, not answered
    assert caller.call("rpc.discover")["methods"]
    assert caller.proc.poll() is None
    assert caller.close() == 0


def test_depth_is_counted_outside_strings_up_to_the_limit(owner):
    # The request object is level 1 and params level 2: the value may add MAX_DEPTH - 2 more.
    at_limit = owner.request("aets.list", {"a": json.loads(lists(MAX_DEPTH - 2))})
    assert at_limit["error"]["code"] == INVALID_PARAMS and at_limit["error"]["data"]["field"] == "a"
    owner.send_raw(call_line("aets.list", f'{{"a":{lists(MAX_DEPTH - 1)}}}'))
    over = owner.read()
    assert over["error"]["code"] == PARSE_ERROR and over["id"] == 7
    assert over["error"]["message"] == f"parse error: nested deeper than {MAX_DEPTH} levels"
    # Brackets in strings, after escaped quotes and backslashes, are text and not nesting.
    for text in ("[" * 10_000, '\\"' + "{" * 10_000, "\\\\" + "[" * 10_000, '\\\\\\"' + "[" * 10_000):
        err = owner.error("aets.list", {"a": text})
        assert err.code == INVALID_PARAMS and err.data["field"] == "a"


def test_refused_deep_calls_are_in_the_audit_log(node, owner, agents, env):
    viewer = agents(node.config, as_user="vera", env=env)

    # The role is checked first, as for any call: the viewer is told forbidden, with its id.
    viewer.send_raw(call_line("aets.add", deep_aet(900), id=21))
    answer = viewer.read()
    assert (answer["id"], answer["error"]["data"]["kind"]) == (21, "forbidden")
    assert viewer.error("aets.add", json.loads(deep_aet(60))).kind == "forbidden"
    viewer.send_raw(call_line("users.purge", f'{{"who":{lists(900)}}}', id=22))  # unknown, but admin-only
    assert viewer.read()["error"]["code"] == -32601
    # A batch with one deep call: the line is refused, each call in it answered and audited.
    viewer.send_raw(
        b"["
        + call_line("node.status", "{}", id=23).strip()
        + b","
        + call_line("aets.remove", f'{{"ae_title":{lists(900)}}}', id=24).strip()
        + b"]\n"
    )
    batch = viewer.read()
    assert [(r["id"], r["error"]["code"]) for r in batch] == [(23, PARSE_ERROR), (24, -32003)]
    assert viewer.call("node.status")["node"]["ae_title"] == node.ae_title

    # The owner passes the role check: the depth is the refusal, under the request's id.
    owner.send_raw(call_line("aets.add", deep_aet(900), id=31))
    answer = owner.read()
    assert (answer["id"], answer["error"]["code"]) == (31, PARSE_ERROR)
    assert owner.error("aets.add", json.loads(deep_aet(60))).data["field"] == "description"
    secret = "a password never logged"
    owner.send_raw(
        call_line(
            "users.add", f'{{"name":"eve","role":"viewer","password":"{secret}","ssh_keys":[{lists(900)}]}}', id=32
        )
    )
    assert owner.read()["error"]["code"] == PARSE_ERROR
    wide = {f"field{i}": "x" * 300 for i in range(2_000)}  # fine for depth, too much for a row
    assert owner.error("aets.add", {"ae_title": "WIDE", "host": "h", "port": 1, **wide}).kind == "invalid_params"
    assert owner.call("node.status")["node"]["ae_title"] == node.ae_title

    rows = owner.call("audit.recent", {"limit": 1000})["entries"]
    refused = [r for r in rows if r["result"] != "ok"]
    local = owner.call("rpc.whoami")["user"]
    assert [(r["user"], r["method"], r["result"]) for r in refused] == [
        (local, "aets.add", "invalid_params"),  # too wide
        (local, "users.add", "invalid_params"),
        (local, "aets.add", "invalid_params"),  # 60 deep
        (local, "aets.add", "invalid_params"),  # 900 deep
        ("vera", "aets.remove", "forbidden"),
        ("vera", "users.purge", "not_found"),
        ("vera", "aets.add", "forbidden"),  # 60 deep
        ("vera", "aets.add", "forbidden"),  # 900 deep
    ]
    for row in rows:
        stored = json.dumps(row["params"])
        assert len(stored) <= 4096 and depth_of(row["params"]) <= 9, stored[:200]
    for deep in (refused[2], refused[3], refused[7]):
        assert NESTED in json.dumps(deep["params"], ensure_ascii=False) and deep["params"]["ae_title"] == "EVIL"
    assert refused[3]["message"] == f"parse error: nested deeper than {MAX_DEPTH} levels"
    assert refused[1]["params"]["password"] == "***" and secret not in json.dumps(rows)
    assert "…(truncated)" in refused[0]["params"]
    assert "cannot write the audit log" not in owner.stderr() + viewer.stderr()
