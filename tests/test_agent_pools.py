"""pools.list, pools.migrate, pools.verify through a real agent process beside a running node."""

from __future__ import annotations

import pytest
from pydicom import dcmread

from storage import synthetic

from .agent_support import agent_env, agents  # noqa: F401 - fixture
from .conftest import storescu
from .test_store import assert_index_matches_disk


def test_list_plan_move_and_verify(node_factory, agents, tmp_path):
    node = node_factory().start()
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 3, rows=32, cols=32)
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))

    listed = agent.call("pools.list")
    primary = next(p for p in listed["pools"] if p["name"] == "primary")
    assert primary["instances"] == 3 and primary["tier"] == "primary"

    plan = agent.call("pools.migrate", {"study_uids": [study], "target": "archive"})  # dry run by default
    assert [(m["study_uid"], m["instances"], m["target"]) for m in plan["plan"]] == [(study, 3, "archive")]
    assert {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"primary"}

    done = agent.call("pools.migrate", {"study_uids": [study], "target": "archive", "dry_run": False})
    assert (done["moved_instances"], done["failed_instances"]) == (3, 0)
    assert {r["pool"] for r in assert_index_matches_disk(node)} == {"archive"}

    checked = agent.call("pools.verify", {"sample": 0})
    assert (checked["checked"], checked["ok"], checked["problems"]) == (3, 3, [])
    assert node.rows("SELECT method, result FROM audit WHERE method='pools.migrate'")[-1]["result"] == "ok"


@pytest.mark.parametrize(
    "params, kind",
    [
        ({"target": "nowhere"}, "not_found"),
        ({"study_uids": ["../../x"]}, "invalid_params"),
        ({"study_uids": "1.2.3"}, "invalid_params"),
        ({"dry_run": "no"}, "invalid_params"),
    ],
)
def test_bad_migrate_params(node_factory, agents, tmp_path, params, kind):
    node = node_factory()
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    assert agent.error("pools.migrate", params).kind == kind
