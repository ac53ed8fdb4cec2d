"""`pacsdeck fleet aets apply`: the AE roll-out against real node folders on `local` fleet entries, one of
them an agent that cannot start (what the fleet code calls unreachable), and a running node to echo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from console.aets_file import AetDefinition
from console.results import Aet
from console.rollout import ADD, CHANGE, SAME, diff

from .conftest import free_port, make_node, pacsdeck

NODES = ("alpha", "ghost", "gamma")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """alpha and gamma: node folders (not running: the agent needs only the index); ghost: a local entry whose
    agent command does not exist; target: a running node that knows alpha and gamma, to be echoed."""
    root = tmp_path_factory.mktemp("rollout")
    known = [{"ae_title": name.upper(), "host": "127.0.0.1"} for name in ("alpha", "gamma")]
    target = make_node(root / "target", ae_title="TARGET", aets=known).start()
    nodes = {name: make_node(root / name, ae_title=name.upper(), aets=[]) for name in ("alpha", "gamma")}
    entries = [
        {"name": "alpha", "transport": "local", "config": str(nodes["alpha"].config)},
        {"name": "ghost", "transport": "local", "agent_command": [str(root / "no-such-agent")], "call_timeout": 5},
        {"name": "gamma", "transport": "local", "config": str(nodes["gamma"].config)},
    ]
    fleet = root / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"known_hosts": str(root / "known_hosts"), "nodes": entries}))
    nowhere = free_port()  # nobody listens there: the echo fails with a diagnosis, the node is still changed
    aets = root / "aets.yaml"
    aets.write_text(
        yaml.safe_dump(
            {
                "aets": [
                    {"ae_title": "TARGET", "host": "127.0.0.1", "port": target.port, "operations": ["store", "find"]},
                    {"ae_title": "NOWHERE", "host": "127.0.0.1", "port": nowhere, "move_destination": True},
                ]
            }
        )
    )
    yield {"root": root, "fleet": fleet, "aets": aets, "nodes": nodes, "target": target}
    target.stop()


def registered(node) -> dict[str, dict]:
    done = pacsdeck("agent", "call", "aets.list", "--config", str(node.config))
    assert done.returncode == 0, done.stderr
    return {a["ae_title"]: a for a in json.loads(done.stdout)["aets"]}


def without_times(aets: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in a.items() if f not in ("created_at", "updated_at")} for k, a in aets.items()}


def apply(site, *extra: str, aets: Path | None = None):
    done = pacsdeck(
        "fleet", "aets", "apply", str(aets or site["aets"]), "--fleet", str(site["fleet"]), "--json", *extra
    )
    assert done.stdout, done.stderr
    doc = json.loads(done.stdout)
    assert done.returncode == doc["exit_code"]
    return doc, {n["name"]: n for n in doc["nodes"]}


def test_a_rollout_stops_at_the_unreachable_node_then_completes_and_is_idempotent(site):
    alpha, gamma = site["nodes"]["alpha"], site["nodes"]["gamma"]
    assert registered(alpha) == registered(gamma) == {}

    # The dry run: a plan for every node, nothing changed anywhere; exit 1 says the real run would stop at ghost.
    doc, nodes = apply(site, "--dry-run")
    assert doc["dry_run"] is True and doc["exit_code"] == 1 and [n["name"] for n in doc["nodes"]] == list(NODES)
    assert set(doc) >= {"schema_version", "time", "fleet", "file", "batch", "aets", "counts", "stopped_at", "seconds"}
    for name in ("alpha", "gamma"):
        assert nodes[name]["state"] == "planned" and nodes[name]["applied"] == []
        assert [(c["ae_title"], c["action"]) for c in nodes[name]["plan"]] == [("TARGET", "add"), ("NOWHERE", "add")]
    assert nodes["ghost"]["state"] == "failed" and "cannot start" in nodes["ghost"]["reason"]
    assert registered(alpha) == registered(gamma) == {}

    # The real run: alpha changed, then ghost fails and the roll-out stops; gamma is not touched.
    doc, nodes = apply(site)
    assert doc["exit_code"] == 1 and doc["stopped_at"] == "ghost"
    assert [nodes[n]["state"] for n in NODES] == ["changed", "failed", "not attempted"]
    assert doc["counts"] == {"changed": 1, "failed": 1, "not attempted": 1, "unchanged": 0, "planned": 0}
    assert nodes["alpha"]["applied"] == ["TARGET", "NOWHERE"]
    assert nodes["gamma"]["applied"] == [] and nodes["gamma"]["echoes"] == []
    have = registered(alpha)
    assert set(have) == {"TARGET", "NOWHERE"} and registered(gamma) == {}
    assert (have["TARGET"]["port"], have["TARGET"]["operations"]) == (site["target"].port, ["store", "find"])
    assert have["NOWHERE"]["move_destination"] is True
    echoes = {e["ae_title"]: e for e in nodes["alpha"]["echoes"]}
    assert echoes["TARGET"]["ok"] is True and echoes["TARGET"]["rtt_ms"] is not None
    assert echoes["NOWHERE"]["ok"] is False and echoes["NOWHERE"]["diagnosis"]["kind"] == "refused"

    # Without the dead node: alpha is already there, gamma gets the AEs; exit 0.
    doc, nodes = apply(site, "--nodes", "alpha,gamma", "--batch", "2")
    assert doc["exit_code"] == 0 and doc["stopped_at"] is None
    assert (nodes["alpha"]["state"], nodes["gamma"]["state"]) == ("unchanged", "changed")
    assert {c["action"] for c in nodes["alpha"]["plan"]} == {"already there"}
    assert without_times(registered(gamma)) == without_times(registered(alpha))

    # A second run: everything already there, nothing changed.
    doc, nodes = apply(site, "--nodes", "alpha,gamma")
    assert doc["exit_code"] == 0 and [n["state"] for n in doc["nodes"]] == ["unchanged", "unchanged"]
    assert all(c["action"] == "already there" for n in doc["nodes"] for c in n["plan"])

    # A changed port is a change of that field alone, with its value before and after.
    changed = site["root"] / "changed.yaml"
    new_port = free_port()
    changed.write_text(yaml.safe_dump({"aets": [{"ae_title": "NOWHERE", "host": "127.0.0.1", "port": new_port}]}))
    doc, nodes = apply(site, "--nodes", "gamma", aets=changed)
    plan = nodes["gamma"]["plan"][0]
    assert (plan["action"], plan["fields"], plan["after"]) == ("change", ["port"], {"port": new_port})
    assert nodes["gamma"]["state"] == "changed" and registered(gamma)["NOWHERE"]["port"] == new_port


def test_the_human_output_shows_plan_progress_and_summary(site):
    done = pacsdeck("fleet", "aets", "apply", str(site["aets"]), "--fleet", str(site["fleet"]), "--dry-run")
    lines = done.stdout.splitlines()
    assert lines[0] == "plan:" and any(line.split()[0] == "ghost" and "cannot start" in line for line in lines)
    assert lines[-1].startswith("dry run, nothing changed: 3 nodes: ") and lines[-1].endswith("exit 1")


@pytest.mark.parametrize(
    "document, field",
    [
        ({"aets": [{"ae_title": "OK", "port": 104}, {"ae_title": "CT9", "port": "eleven"}]}, "aets[1].port"),
        ({"aets": [{"host": "127.0.0.1"}]}, "aets[0].ae_title"),
        ({"aets": [{"ae_title": "A_TITLE_FAR_TOO_LONG"}]}, "aets[0].ae_title"),
        ({"aets": [{"ae_title": "CT9", "operations": ["store", "print"]}]}, "aets[0].operations[1]"),
        ({"aets": [{"ae_title": "CT9", "colour": "red"}]}, "aets[0].colour"),
        ({"aets": [{"ae_title": "CT9"}, {"ae_title": "CT9"}]}, "aets[1].ae_title"),
        ({"aets": []}, "aets"),
        ([{"ae_title": "CT9"}], "file"),
    ],
)
def test_a_bad_file_is_exit_2_with_the_field_named_and_nothing_asked(site, tmp_path, document, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    done = pacsdeck("fleet", "aets", "apply", str(bad), "--fleet", str(site["fleet"]))
    assert done.returncode == 2 and done.stdout == ""
    assert f"{bad}: {field}: " in done.stderr, done.stderr


def test_an_unknown_node_or_batch_is_exit_2(site):
    done = pacsdeck("fleet", "aets", "apply", str(site["aets"]), "--fleet", str(site["fleet"]), "--nodes", "alpha,nope")
    assert done.returncode == 2 and "--nodes: no node nope" in done.stderr
    done = pacsdeck("fleet", "aets", "apply", str(site["aets"]), "--fleet", str(site["fleet"]), "--batch", "0")
    assert done.returncode == 2 and "--batch" in done.stderr


def test_a_forbidden_answer_fails_its_node_its_batch_finishes_and_later_batches_are_not_attempted(
    node_factory, tmp_path
):
    """Batches of two: the first holds a node whose login is a viewer (the agent's `forbidden`) and a node that
    takes the change; the second batch is never started."""
    nodes = {name: node_factory(name, ae_title=name.upper(), aets=[]) for name in ("alpha", "beta", "gamma", "delta")}
    done = pacsdeck(
        "agent",
        "call",
        "users.add",
        "--params",
        '{"name": "vera", "role": "viewer"}',
        "--config",
        str(nodes["alpha"].config),
    )
    assert done.returncode == 0, done.stderr
    viewer = [sys.executable, "-m", "pacsdeck.cli", "agent", "stdio", "--as", "vera"]
    entries = [{"name": n, "transport": "local", "config": str(h.config)} for n, h in nodes.items()]
    entries[0]["agent_command"] = viewer
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"known_hosts": str(tmp_path / "known_hosts"), "nodes": entries}))
    aets = tmp_path / "aets.yaml"
    aets.write_text(yaml.safe_dump({"aets": [{"ae_title": "CT9", "host": "127.0.0.1", "port": free_port()}]}))

    done = pacsdeck("fleet", "aets", "apply", str(aets), "--fleet", str(fleet), "--batch", "2", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == doc["exit_code"] == 1 and doc["stopped_at"] == "alpha" and doc["batch"] == 2
    states = {n["name"]: n["state"] for n in doc["nodes"]}
    assert states == {"alpha": "failed", "beta": "changed", "gamma": "not attempted", "delta": "not attempted"}
    assert doc["nodes"][0]["reason"] == "aets.add CT9: forbidden: aets.add needs the admin role; vera is a viewer"
    assert [set(registered(nodes[n])) for n in ("alpha", "beta", "gamma", "delta")] == [set(), {"CT9"}, set(), set()]
    # Both attempts went through the agent, so both are in each node's audit log with who and what.
    for name, user_result in (("alpha", ("vera", "forbidden")), ("beta", (None, "ok"))):
        done = pacsdeck("agent", "call", "audit.recent", "--config", str(nodes[name].config))
        entry = next(e for e in json.loads(done.stdout)["entries"] if e["method"] == "aets.add")
        assert entry["params"]["ae_title"] == "CT9" and entry["result"] == user_result[1]
        assert user_result[0] is None or entry["user"] == user_result[0]


def test_the_diff_compares_only_the_fields_the_file_sets_and_operations_as_a_set():
    current = Aet("CT9", host="10.0.0.9", port=104, description="old", operations=("store", "find"))
    assert diff(AetDefinition("CT9", operations=("find", "store")), current).action == SAME
    change = diff(AetDefinition("CT9", port=11112, description="old"), current)
    assert (change.action, change.fields, change.before, change.after) == (
        CHANGE,
        ("port",),
        {"port": 104},
        {"port": 11112},
    )
    assert (change.host, change.port) == ("10.0.0.9", 11112)  # where the echo goes: the AE as it will be
    added = diff(AetDefinition("CT9", host="h", port=1, tls=False), None)
    assert (added.action, added.after) == (ADD, {"host": "h", "port": 1, "tls": False})
    assert (diff(AetDefinition("CT9"), None).host, diff(AetDefinition("CT9"), None).port) == (None, None)
