"""Issue 17 on a real node: what a pool holds apart from its filesystem, why a plan is empty, a done job's old error."""

from __future__ import annotations

from console.widgets import format as fmt
from storage import synthetic

from .agent_support import agent_env, agents  # noqa: F401 - fixture
from .conftest import pacsdeck, storescu, wait_for
from .test_queue_forward import FAST_QUEUE, dest_aets, queue_settled, receiver, store, write_studies  # noqa: F401

NO_RULES = "no migration rules configured (migration.rules in node.yaml)"


def stored_study(node, tmp_path, prefix: str, count: int = 3) -> None:
    files = synthetic.write_study(tmp_path / prefix, next(synthetic.studies(1, prefix=prefix)), count, rows=32, cols=32)
    results, proc = storescu(node, files)
    assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr


def test_pools_list_says_what_a_pool_holds_apart_from_its_filesystem(node_factory, agents, tmp_path):
    node = node_factory().start()
    stored_study(node, tmp_path, "HOLD")
    held = node.rows("SELECT coalesce(sum(size), 0) AS b FROM instances WHERE pool = 'primary'")[0]["b"]
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    pools = {p["name"]: p for p in agent.call("pools.list")["pools"]}  # the result fits its declared schema
    primary = pools["primary"]
    assert (primary["instances"], primary["indexed_bytes"]) == (3, held)
    # The filesystem's own use is the whole disk's, far more than these few kilobytes, and said apart.
    assert primary["disk_used"] > held and primary["disk_used"] + primary["disk_free"] <= primary["disk_total"]
    assert not primary["capacity_is_logical"] and primary["used"] == primary["disk_used"]

    shown = pacsdeck("node", "pools", "--config", str(node.config))
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[0], next(x for x in shown.stdout.splitlines() if x.startswith("primary"))
    assert "holds" in header and "fs used" in header and "fs size" in header
    assert fmt.size(held) in row and fmt.size(primary["disk_total"]) in row and "filesystem" in row


def test_an_empty_plan_says_there_are_no_rules(node_factory, agents, tmp_path):
    node = node_factory().start()
    stored_study(node, tmp_path, "NORULE", 1)
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    plan = agent.call("pools.migrate", {"dry_run": True})
    assert plan["plan"] == [] and NO_RULES in plan["reason"]
    real = agent.call("pools.migrate", {"dry_run": False})  # a run with nothing to move says the same
    assert "job_id" not in real and NO_RULES in real["reason"]

    shown = pacsdeck("node", "migrate", "--config", str(node.config))
    assert shown.returncode == 0, shown.stderr
    assert f"dry run: nothing to move: {NO_RULES}" in shown.stdout


def test_an_empty_plan_names_the_rule_that_found_nothing_and_why(node_factory, agents, tmp_path):
    pools = [
        {"name": "primary", "path": "pools/primary", "tier": "primary", "high_watermark": 99, "low_watermark": 90},
        {"name": "archive", "path": "pools/archive", "tier": "archive"},
    ]
    rules = [
        {"from": "primary", "to": "archive", "after_days": 30},
        {"from": "archive", "to": "primary", "after_days": 1, "since": "received"},
    ]
    node = node_factory(pools=pools, migration={"rules": rules}).start()
    stored_study(node, tmp_path, "YOUNG", 2)
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    reason = agent.call("pools.migrate")["reason"]
    assert "migration.rules[0]: no study on primary last accessed more than 30 days ago" in reason
    assert "(1 study there, the oldest last accessed 0.0 days ago)" in reason
    assert "migration.rules[1]: no study on archive" in reason
    assert "primary is at " in reason and "under its high watermark (99%)" in reason
    assert NO_RULES not in reason

    shown = pacsdeck("node", "migrate", "--config", str(node.config), "--json")
    assert shown.returncode == 0, shown.stderr  # pacsdeck() holds the printed result against the schema
    assert "migration.rules[0]: no study on primary" in pacsdeck("node", "migrate", "--config", str(node.config)).stdout


def test_a_forward_done_after_failed_attempts_no_longer_shows_their_error(node_factory, receiver, agents, tmp_path):
    node = node_factory(aets=dest_aets(receiver.port), queue=FAST_QUEUE).start()
    admin = agents(node.config, env=agent_env(tmp_path / "keys"))
    admin.call("routes.add", {"name": "all", "match": {}, "destinations": ["DEST"]})
    store(node, write_studies(tmp_path / "in", 1, 2))  # DEST is down: the attempts fail

    def failing():
        jobs = admin.call("queue.list", {"kind": "forward"})["jobs"]
        return jobs if jobs and jobs[0]["attempts"] >= 2 and jobs[0]["last_error"] else None

    job = wait_for(failing, timeout=30, what="two failed attempts")[0]
    assert "refused the connection" in job["last_error"]

    receiver.start()  # DEST is up: the next attempt succeeds
    done = next(j for j in queue_settled(admin)["jobs"] if j["id"] == job["id"])
    assert (done["state"], done["items_done"]) == ("done", 2)
    assert done["last_error"] is None  # the job succeeded: the earlier attempts' error is not its state
    assert node.rows("SELECT last_error FROM jobs WHERE id = ?", job["id"])[0]["last_error"] is None
