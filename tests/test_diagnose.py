"""diagnose.run against real peers: storescp answers, a closed port, a name that does not resolve, real rejections."""

from __future__ import annotations

from .agent_support import agents, env  # noqa: F401 - fixtures
from .conftest import dcmtk, free_port, wait_for


def test_diagnose_finds_each_kind_of_problem(node_factory, storescp_factory, agents, env):
    scp = storescp_factory(ae_title="ANSWERS")
    closed = free_port()  # nothing listens: the connection is refused
    node = node_factory(
        aets=[
            {"ae_title": "ECHOSCU", "host": "127.0.0.1"},
            {"ae_title": "ANSWERS", "host": "127.0.0.1", "port": scp.port},
            {"ae_title": "CLOSED", "host": "127.0.0.1", "port": closed},
            {"ae_title": "GONE", "host": "pacs.does-not-exist.invalid", "port": 104},
        ]
    ).start()
    wrong = dcmtk("echoscu", "-aec", "WRONG", "127.0.0.1", str(node.port))
    unknown = dcmtk("echoscu", "-aet", "UNKNOWN", "-aec", node.ae_title, "127.0.0.1", str(node.port))
    assert wrong.returncode != 0 and unknown.returncode != 0
    # the association log row is written when the connection closes, just after echoscu gives up
    wait_for(lambda: len(node.rows("SELECT 1 FROM associations WHERE result='rejected'")) >= 2, what="rejections")

    result = agents(node.config, env=env).call("diagnose.run", {"timeout": 2})
    assert result["ok"] is False
    ours = result["scp"]
    assert ours["ok"] and ours["node_pid"] and any(a["reachable"] for a in ours["addresses"])
    assert "loopback only" in ours["message"]  # the test node binds 127.0.0.1
    peers = {p["ae_title"]: p for p in result["aets"]}
    answers = peers["ANSWERS"]
    assert answers["ok"] is True and answers["echo"]["status"] == 0 and answers["echo"]["rtt_ms"] is not None
    assert answers["dns"]["ok"] and "C-ECHO ok" in answers["message"]
    assert peers["CLOSED"]["ok"] is False and peers["CLOSED"]["echo"]["diagnosis"]["kind"] == "refused"
    assert "refused" in peers["CLOSED"]["message"]
    gone = peers["GONE"]
    assert gone["ok"] is False and gone["dns"]["ok"] is False and gone["echo"] is None
    assert "does not resolve" in gone["message"]
    assert peers["ECHOSCU"]["ok"] is None and "no port registered" in peers["ECHOSCU"]["message"]

    groups = {(g["calling_ae"], g["kind"]): g for g in result["rejections"]}
    rows = [dict(r) for r in node.rows("SELECT calling_ae, called_ae, result, reason FROM associations")]
    assert ("ECHOSCU", "wrong_called_ae") in groups, (result["rejections"], rows)
    wrong_called = groups[("ECHOSCU", "wrong_called_ae")]
    assert wrong_called["count"] == 1 and wrong_called["called_aes"] == ["WRONG"]
    assert f"set the destination AE title to {node.ae_title}" in wrong_called["fix"]
    unknown_calling = groups[("UNKNOWN", "unknown_calling_ae")]
    assert unknown_calling["peer_hosts"] == ["127.0.0.1"] and "aets.add" in unknown_calling["fix"]
    assert ("ECHOSCU", "unknown_calling_ae") not in groups  # ECHOSCU is registered
    assert len(result["problems"]) == 4  # CLOSED, GONE and the two rejections

    only = agents(node.config, env=env).call("diagnose.run", {"ae_title": "ANSWERS"})
    assert [p["ae_title"] for p in only["aets"]] == ["ANSWERS"]
