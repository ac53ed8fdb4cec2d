"""Names on the wire: each deprecated alias answered like its canonical name, both together refused,
aliases published as deprecated, and every renamed result field sent under both names with one value."""

from __future__ import annotations

import re

import pytest
from pydicom import dcmread

from agent import aliases
from agent.protocol import INVALID_PARAMS, NOT_FOUND
from agent.registry import build_table
from storage import synthetic

from .agent_support import agent_env, agents  # noqa: F401 - fixture
from .conftest import make_node, storescu

POOLS = [
    {"name": "primary", "path": "pools/primary", "tier": "primary"},
    {"name": "archive", "path": "pools/archive", "tier": "archive"},
    # No room for any study: a migration to it is skipped with its source and target.
    {"name": "tiny", "path": "pools/tiny", "tier": "cold", "capacity": 1000},
]


def _stored(root, studies: int = 1, per_study: int = 3):
    """A node with studies sent by storescu, stopped again (the agent alone is under test), and the
    UIDs: [(StudyInstanceUID, [SOPInstanceUID, ...]), ...]."""
    node = make_node(root / "node", pools=POOLS).start()
    uids = []
    for i, spec in enumerate(synthetic.studies(studies, prefix="NAMES")):
        files = synthetic.write_study(root / f"s{i}", spec, per_study, rows=32, cols=32)
        results, _ = storescu(node, files)
        assert set(results.values()) == {"Success"}, results
        datasets = [dcmread(f, stop_before_pixels=True) for f in files]
        uids.append((str(datasets[0].StudyInstanceUID), [str(d.SOPInstanceUID) for d in datasets]))
    node.stop()
    return node, uids


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Shared by the read-only tests here: only dry runs and previews are made on it."""
    node, uids = _stored(tmp_path_factory.mktemp("names"))
    yield node, uids
    node.stop()


def _canonical_calls(uids) -> dict[str, dict]:
    """For each method with param aliases, a call that uses every canonical name and changes nothing."""
    (study, instances), *_ = uids
    return {
        "pools.migrate": {"StudyInstanceUID": [study], "target_pool": "archive"},  # dry run by default
        "preview.render": {"SOPInstanceUID": instances[0], "mode": "ascii", "columns": 20},
    }


# A value refused under each alias: the error names the param as the caller sent it.
BAD = {
    ("pools.migrate", "study_uids"): (["../x"], INVALID_PARAMS, "study_uids[0]"),
    ("pools.migrate", "target"): ("nowhere", NOT_FOUND, "target"),
    ("preview.render", "sop_instance_uid"): ("1.2.3.4", NOT_FOUND, "sop_instance_uid"),
}
ALIASES = [(method, alias, canonical) for method, table in aliases.PARAMS.items() for alias, canonical in table.items()]


def test_every_alias_has_a_call_here(stored):
    _, uids = stored
    assert set(_canonical_calls(uids)) == set(aliases.PARAMS)
    assert set(BAD) == {(m, a) for m, a, _ in ALIASES}


@pytest.mark.parametrize("method, alias, canonical", ALIASES, ids=[f"{m}:{a}" for m, a, _ in ALIASES])
def test_an_alias_is_answered_like_its_canonical_name(stored, agents, tmp_path, method, alias, canonical):
    node, uids = stored
    agent = agents(node.config, env=agent_env(tmp_path / "keys"), stderr_path=tmp_path / "agent.log")
    params = _canonical_calls(uids)[method]
    aliased = {(alias if k == canonical else k): v for k, v in params.items()}

    plain = agent.call(method, params)
    assert "deprecated_params" not in plain
    old = agent.call(method, aliased)
    assert old.pop("deprecated_params") == [alias]
    assert old == plain

    both = agent.error(method, {**params, alias: params[canonical]})
    assert (both.kind, both.data["field"]) == (INVALID_PARAMS, alias)
    assert f"deprecated alias of {canonical}" in both.message

    value, kind, field = BAD[(method, alias)]
    bad = agent.error(method, {**aliased, alias: value})
    assert (bad.kind, bad.data["field"]) == (kind, field)
    good = agent.error(method, {**params, canonical: value})  # the same value under the canonical name
    assert (good.kind, good.data["field"]) == (kind, canonical + field[len(alias) :])


def test_every_alias_used_in_one_call_is_listed_and_the_audit_keeps_the_params_as_sent(stored, agents, tmp_path):
    node, uids = stored
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    study = uids[0][0]
    result = agent.call("pools.migrate", {"target": "archive", "study_uids": [study], "dry_run": True})
    assert result["deprecated_params"] == ["target", "study_uids"]  # in the order sent
    assert [m["target_pool"] for m in result["plan"]] == ["archive"]
    entry = agent.call("audit.recent", {"method": "pools.migrate", "limit": 1})["entries"][0]
    assert entry["params"] == {"target": "archive", "study_uids": [study], "dry_run": True}


def test_a_missing_required_param_is_named_as_sent(stored, agents, tmp_path):
    node, _ = stored
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    assert agent.error("preview.render", {"sop_instance_uid": None}).data["field"] == "sop_instance_uid"
    assert agent.error("preview.render", {}).data["field"] == "SOPInstanceUID"


def test_each_alias_is_logged_once_per_process(stored, agents, tmp_path):
    node, uids = stored
    log = tmp_path / "agent.log"
    agent = agents(node.config, env=agent_env(tmp_path / "keys"), stderr_path=log)
    study = uids[0][0]
    for _ in range(3):
        agent.call("pools.migrate", {"study_uids": [study], "target": "archive"})
    agent.call("pools.migrate", {"StudyInstanceUID": [study]})
    agent.close()
    warnings = [line for line in log.read_text().splitlines() if "agent.aliases" in line]
    assert len(warnings) == 2, warnings
    assert "pools.migrate: param 'study_uids' is deprecated, use 'StudyInstanceUID'" in warnings[0]
    assert "pools.migrate: param 'target' is deprecated, use 'target_pool'" in warnings[1]


def test_rpc_discover_marks_aliases_and_old_result_fields_deprecated(stored, agents, tmp_path):
    node, _ = stored
    methods = {
        m["name"]: m for m in agents(node.config, env=agent_env(tmp_path / "keys")).call("rpc.discover")["methods"]
    }
    for method, alias, canonical in ALIASES:
        params = methods[method]["params"]
        old, new = params["properties"][alias], params["properties"][canonical]
        assert (old["deprecated"], old["alias_of"]) == (True, canonical), (method, alias)
        assert old["type"] == new["type"] and "deprecated" not in new
        assert alias not in params["required"]
        assert old["description"].startswith(f"deprecated alias of {canonical}, accepted for one release")
    for method in aliases.PARAMS:
        result = methods[method]["result"]
        assert result["properties"]["deprecated_params"]["type"] == "array"
        assert "deprecated_params" not in result["required"]
    for method, renamed in aliases.RESULTS.items():
        for path, canonical in renamed.items():
            declared = _declared(methods[method]["result"], path)["properties"]
            old, new = declared[path.rsplit(".", 1)[-1]], declared[canonical]
            assert old["description"].startswith(f"deprecated: the same value as {canonical}"), (method, path)
            assert _without_description(old) == _without_description(new), (method, path)


def _without_description(schema: dict) -> dict:
    return {k: v for k, v in schema.items() if k != "description"}


def _declared(schema: dict, path: str) -> dict:
    """The object schema that declares the last key of `path`."""
    node = schema
    for key in path.split(".")[:-1]:
        node = node["properties"][key.removesuffix("[]")]
        if key.endswith("[]"):
            node = node["items"]
    assert path.rsplit(".", 1)[-1] in node["properties"]
    return node


def _holders(value, path: str) -> list[dict]:
    """Every object in `value` that holds the last key of `path`."""
    found = [value]
    for key in path.split(".")[:-1]:
        found = [f.get(key.removesuffix("[]")) for f in found if isinstance(f, dict)]
        if key.endswith("[]"):
            found = [item for f in found if isinstance(f, list) for item in f]
    last = path.rsplit(".", 1)[-1]
    return [f for f in found if isinstance(f, dict) and last in f]


def test_result_fields_with_both_names_carry_the_same_value(tmp_path, agents):
    node, [(study, instances), (second, _)] = _stored(tmp_path, studies=2)
    agent = agents(node.config, env=agent_env(tmp_path / "keys"))
    agent.call("aets.add", {"ae_title": "DEST", "host": "127.0.0.1", "port": 1})  # nothing listens: it stays queued
    responses = {
        "node.status": [agent.call("node.status")],
        "preview.render": [agent.call("preview.render", {"SOPInstanceUID": instances[0], "pixel_width": 32})],
        "pools.migrate": [
            agent.call("pools.migrate", {"StudyInstanceUID": [study, "1.2.3"], "target_pool": "archive"}),
            agent.call("pools.migrate", {"StudyInstanceUID": [second], "target_pool": "tiny"}),  # no room there
            agent.call("pools.migrate", {"StudyInstanceUID": [study], "target_pool": "archive", "dry_run": False}),
        ],
    }
    agent.call("studies.send", {"StudyInstanceUID": study, "destination": "DEST"})
    responses["queue.list"] = [agent.call("queue.list")]
    victim = node.rows("SELECT * FROM instances WHERE sop_uid=?", instances[1])[0]
    data = bytearray(node.file(victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    node.file(victim).write_bytes(bytes(data))
    responses["pools.verify"] = [agent.call("pools.verify", {"sample": 0})]

    assert set(responses) == set(aliases.RESULTS)
    for method, renamed in aliases.RESULTS.items():
        for path, canonical in renamed.items():
            old = path.rsplit(".", 1)[-1]
            holders = [h for result in responses[method] for h in _holders(result, path)]
            assert holders, f"{method}: no response here has {path}"
            for holder in holders:
                assert holder[canonical] == holder[old], (method, path, holder)

    [problem] = responses["pools.verify"][0]["problems"]
    assert (problem["SOPInstanceUID"], problem["StudyInstanceUID"], problem["problem"]) == (
        instances[1],
        study,
        "corrupt",
    )
    assert responses["preview.render"][0]["SOPInstanceUID"] == instances[0]
    [job] = [j for j in responses["queue.list"][0]["jobs"] if j["kind"] == "forward"]
    assert job["StudyInstanceUID"] == study


def test_the_alias_tables_must_name_real_methods_params_and_fields(monkeypatch):
    build_table()  # as they are
    for table, entry, message in [
        (aliases.PARAMS, {"nosuch.method": {"a": "b"}}, "nosuch.method, which is no method"),
        (aliases.PARAMS, {"pools.migrate": {"pools": "no_such_param"}}, "alias pools -> no_such_param"),
        (aliases.PARAMS, {"pools.migrate": {"dry_run": "wait"}}, "alias dry_run -> wait"),
        (aliases.RESULTS, {"pools.verify": {"problems[].nosuch": "x"}}, "problems[].nosuch -> x"),
        (aliases.RESULTS, {"pools.verify": {"problems[].pool": "path"}}, "problems[].pool -> path"),
    ]:
        with monkeypatch.context() as m:
            for name, value in entry.items():
                m.setitem(table, name, value)
            with pytest.raises(RuntimeError, match=re.escape(message)):
                build_table()
