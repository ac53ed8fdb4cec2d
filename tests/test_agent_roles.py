"""Roles on every call: what viewer, operator and admin may do, identity from --as, refusals in the audit log."""

from __future__ import annotations

import pytest

from agent.registry import build_table
from agent.roles import ADMIN, OPERATOR, ROLES, VIEWER, required_role

from .agent_support import agents, env, node  # noqa: F401 - fixtures

READ_METHODS = ("node.status", "studies.find", "aets.list", "associations.recent", "audit.recent")


@pytest.fixture
def admin(node, agents, env):
    """The node's owner acting locally (no --as), with one user of each role created."""
    agent = agents(node.config, env=env)
    for name, role in (("vic", VIEWER), ("olga", OPERATOR), ("ada", ADMIN)):
        agent.call("users.add", {"name": name, "role": role})
    return agent


def _audit(admin, **filters) -> list[dict]:
    return admin.call("audit.recent", {"limit": 1000, **filters})["entries"]


def test_every_mutating_method_needs_more_than_viewer():
    table = build_table()
    for name, method in table.items():
        if method.audit:
            assert method.role in (OPERATOR, ADMIN), name
    assert required_role("queue.retry") == OPERATOR and required_role("pools.migrate") == OPERATOR
    assert required_role("backups.restore") == ADMIN and required_role("update.apply") == ADMIN
    assert required_role("routes.list") == ADMIN and required_role("users.list") == ADMIN
    assert required_role("backups.list") == VIEWER


def test_role_matrix(node, admin, agents, env):
    """Each role against each guarded method: refused ones say forbidden and are audited; allowed ones
    get past the role check (empty params then fail as invalid_params, so nothing changes)."""
    table = build_table()
    guarded = sorted(n for n, m in table.items() if m.role in (OPERATOR, ADMIN))
    assert {
        "aets.add",
        "aets.update",
        "aets.remove",
        "aets.echo",
        "users.list",
        "users.add",
        "users.update",
        "users.remove",
    } <= set(guarded)
    for user, role in (("vic", VIEWER), ("olga", OPERATOR), ("ada", ADMIN)):
        agent = agents(node.config, as_user=user, env=env)
        assert agent.call("rpc.whoami") == {"user": user, "role": role, "reason": None, "config": str(node.config)}
        for method in READ_METHODS:
            agent.call(method)
        for method in guarded:
            needed = table[method].role
            allowed = ROLES.index(role) >= ROLES.index(needed)
            # valid without params (pools.migrate: a dry run; diagnose.run: checks every registered AE)
            if method in ("users.list", "pools.migrate", "diagnose.run", "routes.list"):
                if allowed:
                    agent.call(method)
                else:
                    assert agent.error(method).kind == "forbidden"
                continue
            err = agent.error(method, {})
            if allowed:
                assert err.kind == "invalid_params", (user, method, err.message)
            else:
                assert err.kind == "forbidden", (user, method, err.message)
                assert err.data == {"required_role": needed, "role": role}
                assert needed in err.message
        refused = [e for e in _audit(admin, user=user) if e["result"] == "forbidden"]
        expected = sorted(m for m in guarded if ROLES.index(role) < ROLES.index(table[m].role))
        assert sorted(e["method"] for e in refused) == expected, user
    assert len(admin.call("aets.list")["aets"]) == 2  # nobody changed anything


def test_viewer_refused_with_real_params_changes_nothing(node, admin, agents, env):
    viewer = agents(node.config, as_user="vic", env=env)
    attempts = [
        ("aets.add", {"ae_title": "EVIL", "host": "10.0.0.1", "port": 104}),
        ("aets.update", {"ae_title": "STORESCU", "port": 1}),
        ("aets.remove", {"ae_title": "STORESCU"}),
        ("aets.echo", {"ae_title": "STORESCU"}),
        ("users.add", {"name": "mallory", "role": "admin", "password": "hunter2hunter2"}),
        ("users.update", {"name": "vic", "role": "admin"}),
        ("users.remove", {"name": "ada"}),
    ]
    for method, params in attempts:
        assert viewer.error(method, params).kind == "forbidden", method
    assert [a["ae_title"] for a in admin.call("aets.list")["aets"]] == ["ECHOSCU", "STORESCU"]
    assert {u["name"]: u["role"] for u in admin.call("users.list")["users"]} == {
        "ada": "admin",
        "olga": "operator",
        "vic": "viewer",
    }
    logged = _audit(admin, user="vic")
    assert [e["method"] for e in reversed(logged)] == [m for m, _ in attempts]
    assert all(e["result"] == "forbidden" for e in logged)
    users_add = next(e for e in logged if e["method"] == "users.add")
    assert users_add["params"]["password"] == "***"


def test_unknown_user_is_forbidden_everything_but_self_description(node, admin, agents, env):
    ghost = agents(node.config, as_user="ghost", env=env)
    who = ghost.call("rpc.whoami")
    assert who["role"] is None and "no such user" in who["reason"]
    for method in READ_METHODS:
        err = ghost.error(method)
        assert err.kind == "forbidden" and "no such user 'ghost'" in err.message
    assert len(_audit(admin, user="ghost")) == len(READ_METHODS)


def test_role_changes_apply_to_open_sessions(node, admin, agents, env):
    olga = agents(node.config, as_user="olga", env=env)
    assert olga.error("aets.remove", {"ae_title": "STORESCU"}).kind == "forbidden"
    admin.call("users.update", {"name": "olga", "role": "admin"})
    assert olga.call("aets.remove", {"ae_title": "STORESCU"}) == {"removed": "STORESCU"}
    admin.call("users.remove", {"name": "olga"})
    assert olga.error("node.status").kind == "forbidden"


def test_mutations_are_audited_with_result(node, admin):
    admin.call("aets.add", {"ae_title": "CT1", "host": "10.0.0.20", "port": 104, "description": "CT; room 2"})
    assert admin.error("aets.add", {"ae_title": "CT1", "host": "10.0.0.20", "port": 104}).kind == "conflict"
    assert admin.error("aets.remove", {"ae_title": "NOPE"}).kind == "not_found"
    admin.call("node.status")  # reads are not audited
    entries = _audit(admin)
    assert [(e["method"], e["result"]) for e in entries[:3]] == [
        ("aets.remove", "not_found"),
        ("aets.add", "conflict"),
        ("aets.add", "ok"),
    ]
    assert entries[2]["params"] == {"ae_title": "CT1", "host": "10.0.0.20", "port": 104, "description": "CT; room 2"}
    assert entries[2]["user"].startswith("local:")
    assert entries[2]["at"].endswith("Z")
    assert not any(e["method"] == "node.status" for e in entries)
