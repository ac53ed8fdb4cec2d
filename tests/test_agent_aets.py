"""aets.*: changes reach the running node without a restart; aets.echo tells apart why a peer fails."""

from __future__ import annotations

import socket
import threading

import pytest

from .agent_support import agent_env, agents, dcmqrscp_factory  # noqa: F401 - fixtures
from .conftest import dcmtk, free_port, wait_for


@pytest.fixture
def env(tmp_path):
    return agent_env(tmp_path / "authorized_keys")


def _echoscu(node, calling: str):
    return dcmtk("echoscu", "-v", "-aet", calling, "-aec", node.ae_title, "127.0.0.1", str(node.port), timeout=30)


def test_running_node_picks_up_added_and_removed_aes(node_factory, agents, env):
    node = node_factory().start()
    pid = node.proc.pid
    admin = agents(node.config, env=env)
    before = _echoscu(node, "NEWMOD")
    assert before.returncode != 0 and "Association Rejected" in before.stdout + before.stderr

    added = admin.call(
        "aets.add",
        {
            "ae_title": "NEWMOD",
            "host": "127.0.0.1",
            "port": 11112,
            "description": "new modality",
            "operations": ["store"],
        },
    )
    assert added["aet"]["operations"] == ["store"] and added["aet"]["created_at"].endswith("Z")
    accepted = _echoscu(node, "NEWMOD")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    assert admin.call("aets.remove", {"ae_title": "NEWMOD"}) == {"removed": "NEWMOD"}
    after = _echoscu(node, "NEWMOD")
    assert after.returncode != 0 and "Association Rejected" in after.stdout + after.stderr
    assert node.proc.pid == pid and node.proc.poll() is None  # same process all along
    # Log rows are written as each connection closes, a moment after echoscu has given up.
    rejected = wait_for(
        lambda: (
            len(
                rows := admin.call("associations.recent", {"calling_ae": "NEWMOD", "result": "rejected"})[
                    "associations"
                ]
            )
            == 2
            and rows
        ),
        what="two rejections logged",
    )
    assert "not registered" in rejected[0]["reason"]


def test_list_update_remove(node_factory, agents, env):
    node = node_factory()
    admin = agents(node.config, env=env)
    assert [a["ae_title"] for a in admin.call("aets.list")["aets"]] == ["ECHOSCU", "STORESCU"]
    admin.call("aets.add", {"ae_title": "CT1", "host": "ct1.example.org", "port": 104})
    updated = admin.call(
        "aets.update",
        {"ae_title": "CT1", "port": 4242, "move_destination": True, "operations": ["store", "find", "store"]},
    )["aet"]
    assert (updated["host"], updated["port"], updated["move_destination"], updated["operations"]) == (
        "ct1.example.org",
        4242,
        True,
        ["store", "find"],
    )
    assert admin.error("aets.update", {"ae_title": "CT1"}).kind == "invalid_params"
    assert admin.error("aets.update", {"ae_title": "NOPE", "port": 1}).kind == "not_found"
    assert admin.error("aets.add", {"ae_title": "CT1", "host": "h", "port": 1}).kind == "conflict"
    missing = admin.error("aets.add", {"ae_title": "CT2", "port": 1})
    assert (missing.kind, missing.data) == ("invalid_params", {"field": "host"})
    admin.call("aets.remove", {"ae_title": "CT1"})
    assert admin.error("aets.remove", {"ae_title": "CT1"}).kind == "not_found"


def test_a_store_only_sender_needs_no_host_or_port_but_anything_called_back_does(node_factory, agents, env):
    node = node_factory().start()
    admin = agents(node.config, env=env)
    sender = admin.call("aets.add", {"ae_title": "CT9", "operations": ["store"]})["aet"]
    assert (sender["host"], sender["port"], sender["operations"]) == (None, None, ["store"])
    accepted = _echoscu(node, "CT9")  # the running node accepts its associations at once
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    no_call = admin.error("aets.echo", {"ae_title": "CT9"})  # echo from the node still needs an address
    assert (no_call.kind, no_call.data) == (
        "invalid_params",
        {"field": "ae_title"},
    ) and "no host and port" in no_call.message

    for params, field in (
        ({"ae_title": "CT8"}, "host"),  # every operation by default: it may be answered on other associations
        ({"ae_title": "CT8", "operations": ["store", "find"], "port": 104}, "host"),
        ({"ae_title": "CT8", "operations": ["store"], "move_destination": True, "host": "h"}, "port"),
    ):
        err = admin.error("aets.add", params)
        assert (err.kind, err.data) == ("invalid_params", {"field": field}), params
        assert 'only a store-only sender, operations ["store"]' in err.message
    refused = admin.error("aets.update", {"ae_title": "CT9", "move_destination": True})
    assert (refused.kind, refused.data) == ("invalid_params", {"field": "move_destination"})
    moved = admin.call("aets.update", {"ae_title": "CT9", "move_destination": True, "host": "127.0.0.1", "port": 104})
    assert moved["aet"]["move_destination"] is True and moved["aet"]["port"] == 104


class _Listener:
    """A TCP port that is not DICOM: either never answers (`accept=False`) or hangs up at once."""

    def __init__(self, accept: bool):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = None
        if accept:
            self.thread = threading.Thread(target=self._hang_up, daemon=True)
            self.thread.start()

    def _hang_up(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        self.sock.close()


def test_echo_diagnoses(node_factory, agents, env, storescp_factory, dcmqrscp_factory):
    node = node_factory()
    admin = agents(node.config, env=env)
    storescp = storescp_factory(ae_title="STORESCP")
    qrscp = dcmqrscp_factory(ae_title="QRSCP")
    silent, hang_up = _Listener(accept=False), _Listener(accept=True)
    try:
        peers = {
            "STORESCP": ("127.0.0.1", storescp.port),
            "CLOSED": ("127.0.0.1", free_port()),
            "NOTQRSCP": ("127.0.0.1", qrscp.port),  # dcmqrscp only answers to QRSCP
            "NOWHERE": ("no-such-host.invalid", 104),
            "SILENT": ("127.0.0.1", silent.port),
            "HANGUP": ("127.0.0.1", hang_up.port),
        }
        for title, (host, port) in peers.items():
            admin.call("aets.add", {"ae_title": title, "host": host, "port": port})
        admin.call("users.add", {"name": "olga", "role": "operator"})
        operator = agents(node.config, as_user="olga", env=env)
        results = {title: operator.call("aets.echo", {"ae_title": title, "timeout": 1.5}) for title in peers}
    finally:
        silent.close()
        hang_up.close()

    ok = results["STORESCP"]
    assert ok["ok"] is True and ok["status"] == 0 and ok["diagnosis"] is None
    assert 0 < ok["rtt_ms"] < 1500 and ok["total_ms"] >= ok["rtt_ms"]
    assert ok["calling_ae"] == node.ae_title and ok["called_ae"] == "STORESCP"

    kinds = {title: r["diagnosis"]["kind"] for title, r in results.items() if not r["ok"]}
    assert kinds == {
        "CLOSED": "refused",
        "NOTQRSCP": "rejected",
        "NOWHERE": "dns",
        "SILENT": "timeout",
        "HANGUP": "aborted",
    }
    rejected = results["NOTQRSCP"]["diagnosis"]
    assert (rejected["result"], rejected["source"], rejected["diagnostic"]) == (1, 1, 7)
    assert rejected["reason"] == "Called AE title not recognised"
    assert "NOTQRSCP" in rejected["message"]
    for r in results.values():
        assert r["ok"] or r["diagnosis"]["message"]

    logged = admin.call("audit.recent", {"method": "aets.echo"})["entries"]
    assert len(logged) == len(peers) and {e["user"] for e in logged} == {"olga"}
    assert admin.error("aets.echo", {"ae_title": "UNKNOWN"}).kind == "not_found"
