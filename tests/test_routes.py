"""routes.* and queue.* through a real agent: every field validated, roles enforced, calls audited."""

from __future__ import annotations

import pytest

from .agent_support import agent_env, agents  # noqa: F401 - fixtures
from .conftest import make_node


@pytest.fixture
def env(tmp_path):
    return agent_env(tmp_path / "authorized_keys")


@pytest.fixture
def node(tmp_path):
    return make_node(
        tmp_path / "node",
        aets=[
            {"ae_title": "STORESCU", "host": "127.0.0.1"},
            {"ae_title": "READER", "host": "127.0.0.1", "port": 11119, "operations": ["store"]},
            {"ae_title": "ARCHIVE2", "host": "127.0.0.1", "port": 11120, "operations": ["store"]},
            {"ae_title": "NOPORT", "host": "127.0.0.1"},
        ],
    )


def test_add_list_remove(node, agents, env):
    admin = agents(node.config, env=env)
    assert admin.call("routes.list") == {"routes": []}
    added = admin.call(
        "routes.add",
        {
            "name": "ct.reading-1",
            "match": {"Modality": "CT", "StationName": "CT?*", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
            "destinations": ["READER", "ARCHIVE2", "READER"],
        },
    )["route"]
    assert added["destinations"] == ["READER", "ARCHIVE2"] and added["created_at"].endswith("Z")
    admin.call("routes.add", {"name": "everything", "match": {}, "destinations": ["ARCHIVE2"]})
    listed = admin.call("routes.list")["routes"]
    assert [r["name"] for r in listed] == ["ct.reading-1", "everything"]
    assert listed[0]["match"] == {"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "StationName": "CT?*"}
    dup = admin.error("routes.add", {"name": "everything", "match": {}, "destinations": ["READER"]})
    assert (dup.kind, dup.data["field"]) == ("conflict", "name")
    assert admin.call("routes.remove", {"name": "everything"}) == {"removed": "everything"}
    gone = admin.error("routes.remove", {"name": "everything"})
    assert (gone.kind, gone.data["field"]) == ("not_found", "name")
    assert [r["name"] for r in admin.call("routes.list")["routes"]] == ["ct.reading-1"]

    # A destination a route still forwards to cannot be unregistered (its forwards would all fail).
    used = admin.error("aets.remove", {"ae_title": "READER"})
    assert (used.kind, used.data["routes"]) == ("conflict", ["ct.reading-1"]) and "routes.remove" in used.message
    assert "READER" in [a["ae_title"] for a in admin.call("aets.list")["aets"]]
    admin.call("routes.remove", {"name": "ct.reading-1"})
    assert admin.call("aets.remove", {"ae_title": "READER"}) == {"removed": "READER"}


BAD_ROUTES = [
    ({"match": {}, "destinations": ["READER"]}, "invalid_params", "name"),
    ({"name": "a;b", "match": {}, "destinations": ["READER"]}, "invalid_params", "name"),
    ({"name": "-x", "match": {}, "destinations": ["READER"]}, "invalid_params", "name"),
    ({"name": "x" * 65, "match": {}, "destinations": ["READER"]}, "invalid_params", "name"),
    ({"name": "r", "destinations": ["READER"]}, "invalid_params", "match"),
    ({"name": "r", "match": ["Modality"], "destinations": ["READER"]}, "invalid_params", "match"),
    ({"name": "r", "match": {"Modalty": "CT"}, "destinations": ["READER"]}, "invalid_params", "match.Modalty"),
    ({"name": "r", "match": {"PixelData": "*"}, "destinations": ["READER"]}, "invalid_params", "match.PixelData"),
    (
        {"name": "r", "match": {"ReferencedImageSequence": "*"}, "destinations": ["READER"]},
        "invalid_params",
        "match.ReferencedImageSequence",
    ),
    ({"name": "r", "match": {"Modality": 3}, "destinations": ["READER"]}, "invalid_params", "match.Modality"),
    ({"name": "r", "match": {"Modality": "CT\\MR"}, "destinations": ["READER"]}, "invalid_params", "match.Modality"),
    ({"name": "r", "match": {"Modality": "C\nT"}, "destinations": ["READER"]}, "invalid_params", "match.Modality"),
    ({"name": "r", "match": {"Modality": "x" * 65}, "destinations": ["READER"]}, "invalid_params", "match.Modality"),
    ({"name": "r", "match": {}}, "invalid_params", "destinations"),
    ({"name": "r", "match": {}, "destinations": []}, "invalid_params", "destinations"),
    ({"name": "r", "match": {}, "destinations": "READER"}, "invalid_params", "destinations"),
    ({"name": "r", "match": {}, "destinations": ["READER", "$(reboot)"]}, "invalid_params", "destinations[1]"),
    ({"name": "r", "match": {}, "destinations": ["A" * 17]}, "invalid_params", "destinations[0]"),
    ({"name": "r", "match": {}, "destinations": ["UNKNOWN"]}, "not_found", "destinations[0]"),
    ({"name": "r", "match": {}, "destinations": ["NOPORT"]}, "invalid_params", "destinations[0]"),
    ({"name": "r", "match": {}, "destinations": ["READER"], "extra": 1}, "invalid_params", "extra"),
]
BAD_QUEUE_CALLS = [
    ("queue.list", {"state": "sleeping"}, "state"),
    ("queue.list", {"kind": "dance"}, "kind"),
    ("queue.list", {"limit": 0}, "limit"),
    ("queue.list", {"destination": "a;b"}, "destination"),
    ("queue.retry", {}, "id"),
    ("queue.retry", {"id": "7"}, "id"),
    ("queue.retry", {"id": -1}, "id"),
    ("queue.retry", {"destination": "READER"}, "state"),
    ("queue.retry", {"destination": "READER", "state": "done"}, "state"),
    ("queue.retry", {"id": 1, "destination": "READER", "state": "failed"}, "id"),
    ("queue.cancel", {}, "id"),
    ("queue.cancel", {"id": True}, "id"),
]


def test_bad_fields_are_refused_and_name_the_field(node, agents, env):
    admin = agents(node.config, env=env)  # one agent for all: each call is independent
    for params, kind, field in BAD_ROUTES:
        err = admin.error("routes.add", params)
        assert (err.kind, err.data.get("field")) == (kind, field), (params, err.message)
    assert admin.call("routes.list") == {"routes": []}  # nothing half-written
    for method, params, field in BAD_QUEUE_CALLS:
        err = admin.error(method, params)
        assert (err.kind, err.data.get("field")) == ("invalid_params", field), (method, params, err.message)


def test_roles_and_audit(node, agents, env):
    admin = agents(node.config, env=env)
    admin.call("users.add", {"name": "vera", "role": "viewer"})
    admin.call("users.add", {"name": "otto", "role": "operator"})
    viewer = agents(node.config, as_user="vera", env=env)
    operator = agents(node.config, as_user="otto", env=env)

    empty = viewer.call("queue.list")
    assert empty == {
        "jobs": [],
        "counts": {"pending": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0},
        "oldest_pending_age_s": None,
    }
    for method, params in (
        ("queue.retry", {"destination": "READER", "state": "failed"}),
        ("queue.cancel", {"id": 1}),
        ("studies.send", {"StudyInstanceUID": "1.2.3", "destination": "READER"}),
    ):
        err = viewer.error(method, params)
        assert (err.kind, err.data["required_role"]) == ("forbidden", "operator")
    assert operator.call("queue.retry", {"destination": "READER", "state": "failed"}) == {"retried": 0}
    for method, params in (
        ("routes.list", {}),
        ("routes.remove", {"name": "x"}),
        ("routes.add", {"name": "x", "match": {}, "destinations": ["READER"]}),
    ):
        err = operator.error(method, params)
        assert (err.kind, err.data["required_role"]) == ("forbidden", "admin")

    admin.call("routes.add", {"name": "ct", "match": {"Modality": "CT"}, "destinations": ["READER"]})
    admin.call("routes.remove", {"name": "ct"})
    entries = admin.call("audit.recent", {"limit": 50})["entries"]
    seen = [(e["user"], e["method"], e["result"]) for e in entries]
    assert ("otto", "queue.retry", "ok") in seen and ("vera", "queue.cancel", "forbidden") in seen
    assert ("otto", "routes.add", "forbidden") in seen
    assert any(m == "routes.add" and r == "ok" for _, m, r in seen) and any(
        m == "routes.remove" and r == "ok" for _, m, r in seen
    )
    described = {m["name"]: m for m in admin.call("rpc.discover")["methods"]}
    assert described["queue.cancel"]["role"] == "operator" and described["queue.cancel"]["audited"]
    assert described["routes.add"]["role"] == "admin" and described["studies.send"]["role"] == "operator"


def test_route_patterns_match_like_c_find():
    from pydicom.dataset import Dataset

    from storage.index.routes import Route, compile_pattern

    ds = Dataset()
    ds.Modality = "CT"
    ds.StationName = "CT[1]*room"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]

    def route(**match):
        return Route("r", tuple((k, compile_pattern(p)) for k, p in match.items()), ("X",))

    assert route(Modality="CT").matches(ds, "CT1")
    assert not route(Modality="ct").matches(ds, "CT1")  # case-sensitive, as in DICOM
    assert route(Modality="C?").matches(ds, "CT1") and not route(Modality="C").matches(ds, "CT1")
    assert route(StationName="CT[1]*").matches(ds, "CT1")  # only * and ? are special
    assert not route(StationName="CT1*").matches(ds, "CT1")
    assert route(ImageType="ORIGINAL\\PRIMARY*").matches(ds, "CT1") and route(ImageType="AXIAL").matches(ds, "CT1")
    assert route(BodyPartExamined="").matches(ds, "CT1") and not route(BodyPartExamined="?*").matches(ds, "CT1")
    assert route(calling_ae="CT?", Modality="CT").matches(ds, "CT1") and not route(calling_ae="MR*").matches(ds, "CT1")
    assert route().matches(ds, "ANY")
