"""agent.protocol.decode(): answers read into frozen dataclasses, tolerant of older and newer agents, strict on type."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from agent.protocol import INTERNAL, ProtocolError, RPCError, decode


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    value: float | str | bool | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Process:
    pid: int
    uptime_s: float | None = None


@dataclass(frozen=True)
class Health:
    checks: tuple[Check, ...] = ()
    process: Process | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    detail: object = None
    listening: bool = False


def fails(cls, value, method: str | None = "health.check") -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode(cls, value, method)
    return caught.value


def test_nested_dataclasses_lists_maps_and_optionals_decode():
    answer = {
        "checks": [{"name": "cpu", "status": "ok", "value": 0.4}, {"name": "ntp", "status": "warn", "value": "off"}],
        "process": {"pid": 42, "uptime_s": 3600},
        "counts": {"ok": 1, "warn": 1},
        "tags": ["a", "b"],
        "detail": {"anything": [1, {"goes": None}]},
        "listening": True,
    }
    health = decode(Health, json.loads(json.dumps(answer)))
    assert health == Health(
        checks=(Check("cpu", "ok", 0.4), Check("ntp", "warn", "off")),
        process=Process(42, 3600),
        counts={"ok": 1, "warn": 1},
        tags=["a", "b"],
        detail={"anything": [1, {"goes": None}]},
        listening=True,
    )
    assert isinstance(health.checks, tuple) and isinstance(health.tags, list)
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.listening = False  # type: ignore[misc]


def test_null_for_an_optional_and_numbers_kept_as_they_came():
    health = decode(Health, {"process": None, "checks": [{"name": "x", "status": "ok", "value": None}]})
    assert health.process is None and health.checks[0].value is None
    # A number may be an int on the wire: it stays one (85 is shown as 85, not 85.0); 3.0 is an integer.
    process = decode(Process, {"pid": 3.0, "uptime_s": 85})
    assert process == Process(3, 85) and type(process.pid) is int and type(process.uptime_s) is int
    # A union takes the first alternative that fits: true is a boolean, not the number 1.
    assert decode(Check, {"name": "x", "status": "ok", "value": True}).value is True


def test_fields_an_older_agent_does_not_send_take_their_defaults():
    assert decode(Health, {}) == Health()
    assert decode(Check, {"name": "cpu", "status": "ok"}) == Check("cpu", "ok", None, None)


def test_fields_a_newer_agent_adds_are_ignored():
    answer = {"checks": [{"name": "cpu", "status": "ok", "added_later": {"x": 1}}], "schema_version": 2, "new": [1]}
    assert decode(Health, answer) == Health(checks=(Check("cpu", "ok"),))


def test_a_wrong_type_names_the_method_and_the_path():
    checks = [{"name": "a", "status": "ok"}, {"name": "b", "status": "ok"}, {"name": "c", "status": 3}]
    err = fails(Health, {"checks": checks})
    assert str(err) == err.message == "health.check: $.checks[2].status: expected string, got integer 3"
    assert isinstance(err, RPCError) and err.kind == INTERNAL  # an RPC-style error: callers already catch these
    assert err.path == "$.checks[2].status" and err.data == {"path": "$.checks[2].status", "method": "health.check"}
    assert fails(Health, {"process": {"pid": "42"}}).message == (
        'health.check: $.process.pid: expected integer, got string "42"'
    )
    assert (
        fails(Health, {"counts": {"ok": 1.5}}).message == "health.check: $.counts.ok: expected integer, got number 1.5"
    )
    assert fails(Health, {"listening": 1}).message == "health.check: $.listening: expected boolean, got integer 1"
    assert fails(Process, {"pid": True}, None).message == "$.pid: expected integer, got boolean true"
    assert fails(Health, {"tags": "a"}).message == 'health.check: $.tags: expected array, got string "a"'
    assert fails(Health, {"checks": [{"name": "x", "status": "ok", "value": [1]}]}).message == (
        "health.check: $.checks[0].value: expected number or string or boolean or null, got array [1]"
    )


def test_the_answer_itself_of_the_wrong_shape_and_a_missing_required_key():
    assert fails(Health, [1, 2]).message == "health.check: $: expected object, got array [1, 2]"
    assert fails(Health, None).message == "health.check: $: expected object, got null"
    assert fails(Health, {"checks": [{"name": "cpu"}]}).message == (
        "health.check: $.checks[0]: missing required key 'status'"
    )
    assert (
        fails(Health, {"process": {"pid": None}}).message == "health.check: $.process.pid: expected integer, got null"
    )


def test_long_values_are_cut_in_the_message():
    err = fails(Process, {"pid": "x" * 500})  # 60 characters of the value at most
    assert err.message == f'health.check: $.pid: expected integer, got string "{"x" * 56}...'


def test_what_decode_cannot_read_is_a_programming_error_not_a_protocol_error():
    with pytest.raises(TypeError):
        decode(dict, {})

    @dataclass(frozen=True)
    class Odd:
        pair: tuple[int, str]

    with pytest.raises(TypeError):
        decode(Odd, {"pair": [1, "a"]})
