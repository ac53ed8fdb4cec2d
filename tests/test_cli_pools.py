"""`pacsdeck node pools|migrate|verify` go through the agent: its plan, roles, audit log and dry-run default."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import subprocess
import sys

import pytest

from agent.protocol import CONFLICT, EXIT_CODES, FORBIDDEN, NOT_FOUND
from storage import synthetic

from .agent_support import agent_call, agent_env
from .conftest import REPO, pacsdeck, storescu, wait_for
from .test_store import assert_index_matches_disk

LOCAL_USER = f"local:{pwd.getpwuid(os.geteuid()).pw_name}"


@pytest.fixture
def node(node_factory, tmp_path):
    """A node with two studies of 3 instances that its rule moves at once; stopped, so only we move them."""
    node = node_factory(migration={"rules": [{"from": "primary", "to": "archive", "after_days": 0}]}).start()
    for i, spec in enumerate(synthetic.studies(2, prefix="CLI")):
        files = synthetic.write_study(tmp_path / f"s{i}", spec, 3, rows=32, cols=32)
        results, _ = storescu(node, files)
        assert set(results.values()) == {"Success"}, results
    node.stop()
    return node


def _agent(node, method: str, params: dict | None = None, **kw) -> dict:
    result = agent_call(node.config, method, json.dumps(params or {}), env=agent_env(node.dir / "keys"), **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _pools(node) -> set[str]:
    return {r["pool"] for r in node.rows("SELECT pool FROM instances")}


def _audit(node) -> list[tuple]:
    """pools.migrate audit rows, oldest first, as the agent reports them."""
    entries = _agent(node, "audit.recent", {"method": "pools.migrate"})["entries"]
    return [(e["user"], e["result"], e["params"]) for e in reversed(entries)]


def test_cli_and_agent_give_the_same_plan_and_both_are_audited(node):
    cli = pacsdeck("node", "migrate", "--config", str(node.config), "--json")
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    from_agent = _agent(node, "pools.migrate")

    assert from_cli == from_agent  # the whole result: dry_run, plan, skipped, totals
    assert from_cli["dry_run"] is True and from_cli["studies"] == 2 and from_cli["instances"] == 6
    assert {(m["source"], m["target"]) for m in from_cli["plan"]} == {("primary", "archive")}
    assert _pools(node) == {"primary"}  # both were dry runs: nothing moved
    assert _audit(node) == [(LOCAL_USER, "ok", {"dry_run": True}), (LOCAL_USER, "ok", {})]


def test_migrate_is_a_dry_run_unless_run_is_given(node):
    config = str(node.config)
    before = sorted(p.name for p in node.pool_files())
    result = pacsdeck("node", "migrate", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "dry run: would move 2 studies, 6 instances" in result.stdout and "nothing was moved" in result.stdout
    assert f"to move them: pacsdeck node migrate --config {config} --run" in result.stdout
    assert _pools(node) == {"primary"} and sorted(p.name for p in node.pool_files()) == before

    old = pacsdeck("node", "migrate", "--config", config, "--dry-run")  # the old flag still means a dry run
    assert (old.returncode, old.stdout) == (0, result.stdout)
    both = pacsdeck("node", "migrate", "--config", config, "--dry-run", "--run")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert _pools(node) == {"primary"}

    done = pacsdeck("node", "migrate", "--config", config, "--yes")
    assert done.returncode == 0, done.stderr
    assert " done: moved 6 instances" in done.stdout and "dry run" not in done.stdout
    assert {r["pool"] for r in assert_index_matches_disk(node)} == {"archive"}
    assert _audit(node)[-1] == (LOCAL_USER, "ok", {"dry_run": False})


def test_a_viewer_is_refused_by_the_cli_with_the_role_message(node):
    _agent(node, "users.add", {"name": "vera", "role": "viewer"})
    config = str(node.config)

    refused = pacsdeck("node", "migrate", "--config", config, "--as", "vera", "--run")
    assert refused.returncode == EXIT_CODES[FORBIDDEN] != 0
    assert refused.stdout == ""
    assert (
        "pacsdeck: pools.migrate: forbidden: pools.migrate needs the operator role; vera is a viewer" in refused.stderr
    )
    assert _pools(node) == {"primary"}
    assert _audit(node)[-1][:2] == ("vera", FORBIDDEN)

    # A viewer reads: the same pools the agent shows her (free space is the disk's, which moves).
    listed = pacsdeck("node", "pools", "--config", config, "--as", "vera", "--json")
    assert listed.returncode == 0, listed.stderr

    def pools(result: dict) -> list[tuple]:
        return [(p["name"], p["tier"], p["instances"], p["accepting"]) for p in result["pools"]]

    assert (
        pools(json.loads(listed.stdout))
        == pools(_agent(node, "pools.list", as_user="vera"))
        == [("primary", "primary", 6, True), ("archive", "archive", 0, True)]
    )
    unknown = pacsdeck("node", "pools", "--config", config, "--as", "nobody")
    assert unknown.returncode == EXIT_CODES[FORBIDDEN] and "no such user 'nobody'" in unknown.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("migrate", "--target", "nowhere"), "pools.migrate: not_found: target_pool: no pool named 'nowhere'"),
        (("verify", "--pool", "nowhere"), "pools.verify: not_found: pool: no pool named 'nowhere'"),
    ],
)
def test_agent_errors_become_cli_messages_and_exit_codes(node, args, message):
    result = pacsdeck("node", *args, "--config", str(node.config))
    assert result.returncode == EXIT_CODES[NOT_FOUND] and f"pacsdeck: {message}" in result.stderr, result.stderr
    assert result.stdout == ""


def test_verify_through_the_agent_reports_every_instance(node):
    result = pacsdeck("node", "verify", "--config", str(node.config), "--sample", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["checked"], report["ok"], report["problems"]) == (6, 6, [])
    human = pacsdeck("node", "verify", "--config", str(node.config), "--sample", "0")
    assert human.returncode == 0 and "checked 6 instances" in human.stdout and "6 ok, 0 with problems" in human.stdout


def _waits_for_lock(pid: int) -> bool:
    """Is process `pid` blocked on an flock? /proc/locks lists each waiter with '->' before its lock."""
    with open("/proc/locks") as locks:
        return any("->" in line and line.split("->", 1)[1].split()[3] == str(pid) for line in locks)


def test_a_busy_migration_is_a_conflict_and_wait_waits_for_it(node):
    config = str(node.config)
    with open(node.dir / "migration.lock", "a+") as held:  # what a running migration holds
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = pacsdeck("node", "migrate", "--config", config, "--run")
        assert busy.returncode == EXIT_CODES[CONFLICT], busy.stderr
        assert "pools.migrate: conflict: a migration is already running" in busy.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "pacsdeck.cli", "node", "migrate", "--config", config, "--run", "--wait", "--json"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: _waits_for_lock(waiting.pid) or waiting.poll() is not None, what="the CLI waiting")
            assert waiting.poll() is None and _pools(node) == {"primary"}
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads(out)["moved_instances"] == 6 and _pools(node) == {"archive"}
    assert _audit(node)[-2:] == [
        (LOCAL_USER, CONFLICT, {"dry_run": False}),
        (LOCAL_USER, "ok", {"dry_run": False, "wait": True}),
    ]
