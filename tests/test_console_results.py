"""console/results/ held against a real agent: every class decodes that agent's answers and fits the result
schema it publishes in rpc.discover, so renaming, removing or retyping a field the console reads fails here.
And a node whose agent answers in a shape the console cannot read is a row with the reason, not a traceback."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import pytest
from pydicom import dcmread

from agent.protocol import ProtocolError
from console import results
from console.hostkeys import KnownHosts
from console.inventory import parse_fleet
from console.snapshot import DEGRADED, DOWN, poll
from console.transport import open_transport
from storage import synthetic

from .conftest import free_port, make_node, require_tool, storescu
from .results import check_result

# --- the declarations against the published schema --------------------------------------------------

_ACCEPTS = {str: {"string"}, int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"}, type(None): {"null"}}
_ALL = {"string", "integer", "number", "boolean", "null", "object", "array"}


def _accepts(kind) -> set[str]:
    if kind is object:
        return _ALL
    if dataclasses.is_dataclass(kind) or get_origin(kind) is dict:
        return {"object"}
    if get_origin(kind) in (list, tuple):
        return {"array"}
    return _ACCEPTS[kind]


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "integer" if isinstance(value, int) else "number"
    return "null" if value is None else "string"


def _schema_kinds(schema: dict) -> set[str]:
    if "enum" in schema:
        return {_json_kind(v) for v in schema["enum"]}
    kinds = schema.get("type")
    if kinds is None:
        return set(_ALL)  # {}: anything
    kinds = {kinds} if isinstance(kinds, str) else set(kinds)
    return kinds | ({"integer"} if "number" in kinds else set())


def mismatches(kind, schema: dict, path: str = "$") -> list[str]:
    """Where a value the agent's `schema` allows would not decode as the console's `kind`: the structure walked."""
    out: list[str] = []
    alternatives = get_args(kind) if get_origin(kind) in (Union, UnionType) else (kind,)
    for json_kind in sorted(_schema_kinds(schema)):
        fitting = [a for a in alternatives if json_kind in _accepts(a)]
        if not fitting:
            out.append(f"{path}: the agent may send {json_kind}, the console reads {kind}")
            continue
        alt = fitting[0]
        if alt is object:
            continue
        if json_kind == "object" and dataclasses.is_dataclass(alt):
            out += _object_mismatches(alt, schema, path)
        elif json_kind == "object":
            item = get_args(alt)[1]
            extra = schema.get("additionalProperties", True)
            for name, sub in schema.get("properties", {}).items():
                out += mismatches(item, sub, f"{path}.{name}")
            if extra is not False:
                out += mismatches(item, extra if isinstance(extra, dict) else {}, f"{path}.*")
        elif json_kind == "array":
            out += mismatches(get_args(alt)[0], schema.get("items", {}), f"{path}[]")
    return out


def _object_mismatches(cls, schema: dict, path: str) -> list[str]:
    out = []
    properties, required = schema.get("properties", {}), set(schema.get("required", ()))
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}"
        if f.name not in properties:
            out.append(f"{where}: {cls.__name__} reads it, the agent does not declare it (renamed or removed?)")
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if not has_default and f.name not in required:
            out.append(f"{where}: the console requires it, the agent may leave it out")
        out += mismatches(hints[f.name], properties[f.name], where)
    return out


def test_the_checker_finds_a_renamed_and_a_retyped_field():
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "pools": {"type": "array", "items": {"type": "string"}}},
        "required": ["id"],
    }
    assert mismatches(results.Job, schema) == [
        f"$.{name}: Job reads it, the agent does not declare it (renamed or removed?)"
        for name in [f.name for f in dataclasses.fields(results.Job)][1:]
    ]
    assert mismatches(results.Retried, {"type": "object", "properties": {"retried": {"type": "string"}}}) == [
        "$.retried: the agent may send string, the console reads <class 'int'>"
    ]


# --- a real node and its agent ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node from `pacsdeck node init`, running, with one study of two instances received over DICOM."""
    require_tool("storescu")
    root = tmp_path_factory.mktemp("results")
    aets = [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "NOWHERE", "host": "127.0.0.1", "port": free_port()},  # nobody listens: a job stays queued
    ]
    handle = make_node(root / "node", aets=aets)
    handle.start()
    files = synthetic.write_study(root / "study", next(synthetic.studies(1)), 2, rows=64, cols=64)
    sent, _ = storescu(handle, files)
    assert set(sent.values()) == {"Success"}
    handle.study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    handle.sop_uid = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def agent(node):
    """The console's own local transport to that node's agent."""
    fleet = parse_fleet({"nodes": [{"name": "n", "transport": "local", "config": str(node.config)}]})
    transport = open_transport(fleet.nodes[0], KnownHosts(node.dir / "known_hosts"))
    yield transport
    transport.close()


def answer(agent, method: str, params: dict | None = None):
    """One call; the answer must fit the agent's own declared schema (as every test's answers must)."""
    result = agent.call(method, params or {})
    check_result(method, result)
    return result


def test_every_console_class_fits_the_schema_the_agent_publishes(agent):
    published = {m["name"]: m["result"] for m in agent.call("rpc.discover")["methods"]}
    problems = []
    for method, cls in results.RESULTS.items():
        assert method in published, f"the console reads {method}, the agent has no such method"
        problems += [f"{method}: {p}" for p in mismatches(cls, published[method])]
    assert not problems, "console/results/ no longer fits the agent:\n  " + "\n  ".join(problems)


def test_every_console_class_decodes_the_real_answers(node, agent):
    status = results.read("node.status", answer(agent, "node.status"))
    assert status.listening is True and status.node.ae_title == "PACSDECK" and status.node.port == node.port
    assert status.counts.instances == 2 and status.counts.studies == 1 and status.process.pid > 0
    assert [p.name for p in status.pools] == ["primary", "archive"] and status.pools[0].disk_free_bytes > 0

    health = results.read("health.check", answer(agent, "health.check"))
    assert health.checks and all(c.name and c.status in ("ok", "warn", "crit", "unknown") for c in health.checks)

    pools = results.read("pools.list", answer(agent, "pools.list"))
    assert [(p.name, p.tier, p.accepting) for p in pools.pools] == [
        ("primary", "primary", True),
        ("archive", "archive", True),
    ]
    assert pools.pools[0].instances == 2 and pools.pools[0].used > 0

    recent = results.read("associations.recent", answer(agent, "associations.recent", {"limit": 100}))
    stored = next(a for a in recent.associations if a.calling_ae == "STORESCU")
    assert (stored.called_ae, stored.result, stored.instances, stored.peer_host) == (
        "PACSDECK",
        "released",
        2,
        "127.0.0.1",
    )

    preview = results.read(
        "preview.render",
        answer(agent, "preview.render", {"sop_instance_uid": node.sop_uid, "pixel_width": 32, "pixel_height": 32}),
    )
    assert preview.png and (preview.width, preview.height) == (32, 32)

    plan = results.read("pools.migrate", answer(agent, "pools.migrate", {"dry_run": True}))
    assert plan.dry_run is True and plan.job_id is None
    moved = results.read(
        "pools.migrate",
        answer(agent, "pools.migrate", {"study_uids": [node.study_uid], "target": "archive", "dry_run": False}),
    )
    assert moved.dry_run is False and moved.job_id is not None and moved.moved_instances == 2
    assert [(m.study_uid, m.source, m.target, m.instances) for m in moved.plan] == [
        (node.study_uid, "primary", "archive", 2)
    ]

    sent = answer(agent, "studies.send", {"StudyInstanceUID": node.study_uid, "destination": "NOWHERE"})
    queue = results.read("queue.list", answer(agent, "queue.list", {"limit": 200}))
    job = next(j for j in queue.jobs if j.id == sent["job_id"])
    assert (job.kind, job.destination, job.items_total, job.max_attempts > 0) == ("forward", "NOWHERE", 2, True)
    assert queue.count("pending") + queue.count("running") + queue.count("failed") >= 1 and queue.count("nonsense") == 0
    assert any(j.kind == "migrate" and j.id == moved.job_id for j in queue.jobs)
    retried = results.read("queue.retry", answer(agent, "queue.retry", {"destination": "NOWHERE", "state": "failed"}))
    assert retried.retried >= 0
    cancelled = results.read("queue.cancel", answer(agent, "queue.cancel", {"id": sent["job_id"]}))
    assert cancelled.cancelled == 1


# --- an answer the console cannot read --------------------------------------------------------------

# A stand-in agent on the console's real local transport (a pipe to a process): node.status from some other
# agent, whose port is a string and whose pool list is one object.
ODD_AGENT = textwrap.dedent(
    """
    import json, sys
    ANSWERS = {
        "node.status": {"version": "9.0", "listening": True, "node": {"ae_title": "ODD", "port": "104"}},
        "health.check": {"checks": [{"name": "disk", "status": "ok"}, {"name": "cpu", "status": 2}]},
    }
    for line in sys.stdin:
        request = json.loads(line)
        method = request["method"]
        if method in ANSWERS:
            reply = {"result": ANSWERS[method]}
        else:
            reply = {"error": {"code": -32601, "message": "unknown method " + method, "data": {"kind": "not_found"}}}
        print(json.dumps({"jsonrpc": "2.0", "id": request["id"], **reply}), flush=True)
    """
)


def odd_node(tmp_path, answers: str = ODD_AGENT):
    script = tmp_path / "odd_agent.py"
    script.write_text(answers)
    fleet = parse_fleet(
        {"nodes": [{"name": "odd", "transport": "local", "agent_command": [sys.executable, str(script)]}]}
    )
    entry = fleet.nodes[0]
    return entry, open_transport(entry, KnownHosts(tmp_path / "known_hosts"))


def test_an_unreadable_node_status_is_a_down_row_with_the_field_named(tmp_path):
    entry, transport = odd_node(tmp_path)
    try:
        snap = poll(entry, transport)
    finally:
        transport.close()
    assert snap.status == DOWN
    assert snap.reason == 'node.status: $.node.port: expected integer, got string "104"'


def test_an_unreadable_health_check_makes_the_row_degraded_with_the_path(tmp_path):
    fixed = ODD_AGENT.replace('"port": "104"', '"port": 104')
    entry, transport = odd_node(tmp_path, fixed)
    try:
        snap = poll(entry, transport)
    finally:
        transport.close()
    assert (snap.status, snap.ae_title, snap.port, snap.version) == (DEGRADED, "ODD", 104, "9.0")
    assert snap.reason == "health.check: $.checks[1].status: expected string, got integer 2"
    assert snap.checks == [] and snap.queue is None  # queue.list: unknown method, so no queue columns


def test_read_answer_turns_an_unreadable_answer_into_the_error():
    result, error = results.read_answer("pools.list", {"pools": [{"tier": "primary"}]}, None)
    assert result is None and isinstance(error, ProtocolError)
    assert str(error) == "pools.list: $.pools[0]: missing required key 'name'"
    assert results.failure("pools.list", error) == str(error)
    assert results.read_answer("pools.list", {"pools": []}, None) == (results.PoolsList(), None)
