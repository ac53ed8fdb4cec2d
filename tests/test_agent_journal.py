"""logs.tail from the systemd journal: a real systemd-journald (in a namespace of its own, as LogNamespace=
gives a unit) receives a real node's stderr exactly as systemd hands it a service's (the stdout stream
protocol, with the unit's name), and the agent reads it back with journalctl. Plus the parsing of
journalctl's JSON lines as journald 252 wrote them."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import journal
from agent.protocol import INVALID_PARAMS, UNAVAILABLE
from storage.config.settings import ConfigError, load_config

from .agent_support import agent_env, agents  # noqa: F401 - fixtures
from .conftest import IN_CI, REPO, dcmtk, make_node, wait_for

UNIT = "pacsdeck-node@journaltest.service"
JOURNALD = next(
    (p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald") if os.path.exists(p)), None
)


@pytest.fixture
def env(tmp_path):
    return agent_env(tmp_path / "authorized_keys")


@dataclass
class Journald:
    namespace: str
    proc: subprocess.Popen

    @property
    def stdout_socket(self) -> Path:
        return Path(f"/run/systemd/journal.{self.namespace}/stdout")

    def stream(self, unit: str, identifier: str = "pacsdeck") -> socket.socket:
        """A stream into the journal as systemd opens one for a service's stdout/stderr (sd-journal's
        stdout protocol: identifier, unit, priority, level prefix, forward to syslog, kmsg, console)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(self.stdout_socket))
        s.sendall(f"{identifier}\n{unit}\n6\n1\n0\n0\n0\n".encode())
        s.shutdown(socket.SHUT_RD)
        return s


def missing(why: str) -> None:
    """Under CI=true a missing integration part fails the test; elsewhere it skips."""
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def journald():
    """systemd-journald in a fresh namespace (its own sockets and files, nothing of the host's journal)."""
    if JOURNALD is None or shutil.which("journalctl") is None:
        missing("no systemd-journald/journalctl here (apt-get install systemd)")
    if os.geteuid() != 0:
        missing("systemd-journald needs root to bind /run/systemd/journal.<namespace>")
    namespace = f"pdtest{secrets.token_hex(4)}"
    proc = subprocess.Popen([JOURNALD, namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Journald(namespace, proc)
    try:
        wait_for(lambda: server.stdout_socket.exists() or proc.poll() is not None, what="journald's sockets")
        if proc.poll() is not None:
            missing(f"systemd-journald {namespace} would not start here (exit {proc.returncode})")
        yield server
    finally:
        proc.terminate()  # by PID: only the journald this test started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(f"/run/systemd/journal.{namespace}", ignore_errors=True)
        for files in Path("/var/log/journal").glob(f"*.{namespace}"):
            shutil.rmtree(files, ignore_errors=True)
        for files in Path("/run/log/journal").glob(f"*.{namespace}"):
            shutil.rmtree(files, ignore_errors=True)


def start_as_unit(node, server: Journald, unit: str = UNIT) -> None:
    """`pacsdeck node run` with its stderr on a journal stream, as systemd runs a service; no node.log."""
    stream = server.stream(unit)
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "pacsdeck.cli", "node", "run", "--config", str(node.config)],
        stdout=subprocess.PIPE,
        stderr=stream.fileno(),
        cwd=REPO,
    )
    stream.close()
    line = node.proc.stdout.readline().decode()
    assert line.startswith("ready"), line


def test_a_unit_node_logs_into_the_journal_and_follow_returns_a_line_written_after_the_call(
    tmp_path, journald, agents, env
):
    node = make_node(
        tmp_path / "node",
        ae_title="JNODE",
        workers=1,
        log={"journal_unit": UNIT, "journal_namespace": journald.namespace},
    )
    try:
        start_as_unit(node, journald)
        agent = agents(node.config, env=env)
        first = wait_for(
            lambda: (r := agent.call("logs.tail", {}))["lines"] and r,
            what="the node's start-up lines in the journal",
        )
        assert first["source"] == "journal" and first["path"] == UNIT and first["cursor"]
        assert not (node.dir / "node.log").exists()
        assert any(x["level"] == "INFO" and x["logger"].startswith("storage") for x in first["lines"]), first
        assert all(x["time"].endswith("Z") for x in first["lines"])

        answer: dict = {}
        params = {"after_cursor": first["cursor"], "follow": 30, "level": "WARNING"}
        waiting = threading.Thread(target=lambda: answer.update(agent.call("logs.tail", params)), daemon=True)
        waiting.start()

        def refused_once_more() -> bool:
            dcmtk("echoscu", "-to", "5", "-aet", "NOBODY", "-aec", node.ae_title, "127.0.0.1", str(node.port))
            return not waiting.is_alive()

        wait_for(refused_once_more, timeout=40, interval=0.5, what="follow returning the node's new journal line")
        new = answer["lines"]
        assert any("NOBODY" in x["message"] and x["level"] == "WARNING" for x in new), new
        assert all(x["level"] in ("WARNING", "ERROR", "CRITICAL") or x["level"] is None for x in new)
        assert answer["cursor"] != first["cursor"]

        # INFO lines are in the journal with PRIORITY=6 like the warning: the level filter reads the text.
        warnings = agent.call("logs.tail", {"level": "WARNING"})["lines"]
        assert warnings and all(x["level"] != "INFO" for x in warnings)
        assert agent.call("logs.tail", {"lines": 2})["truncated"] is True
    finally:
        node.stop()


def test_a_configured_unit_not_run_yet_has_no_lines(tmp_path, journald, agents, env):
    node = make_node(
        tmp_path / "node", log={"journal_unit": "nothing@here.service", "journal_namespace": journald.namespace}
    )
    result = agents(node.config, env=env).call("logs.tail", {"follow": 0.3})
    assert result == {
        "lines": [],
        "source": "journal",
        "path": "nothing@here.service",
        "end": 0,
        "cursor": None,
        "truncated": False,
    }


def test_no_node_log_and_no_journal_of_the_derived_unit_names_both(tmp_path, agents, env):
    node = make_node(tmp_path / "site a")
    err = agents(node.config, env=env).error("logs.tail", {})
    assert err.kind == UNAVAILABLE
    assert "node.log" in err.message and "pacsdeck-node@site\\x20a.service" in err.message
    assert err.data["unit"] == "pacsdeck-node@site\\x20a.service"


def test_bad_after_cursor_is_refused(tmp_path, agents, env):
    node = make_node(tmp_path / "node")
    err = agents(node.config, env=env).error("logs.tail", {"after_cursor": 5})
    assert err.kind == INVALID_PARAMS and err.data["field"] == "after_cursor"


@pytest.mark.parametrize(
    ("log", "field"),
    [
        ({"journal_unit": "no spaces.service"}, "log.journal_unit"),
        ({"journal_unit": "pacsdeck-node"}, "log.journal_unit"),  # a service, with its suffix
        ({"journal_namespace": "a/b"}, "log.journal_namespace"),
        ({"unit": "x.service"}, "log: unknown"),
        ("pacsdeck.service", "log: must be a mapping"),
    ],
)
def test_the_log_section_names_the_bad_field(tmp_path, log, field):
    node = make_node(tmp_path / "node")
    text = node.config.read_text() + f"log: {log!r}\n".replace("'", '"')
    node.config.write_text(text)
    with pytest.raises(ConfigError, match=field):
        load_config(node.config)


# --- parsing journalctl -o json -----------------------------------------------------------------------------

# Two lines of `journalctl -o json` as journald 252 wrote them for a stream opened like start_as_unit's.
NODE_LINE = (
    '{"_CMDLINE":"/usr/bin/python3 -m pacsdeck.cli node run","_MACHINE_ID":"3d1219c7c4c5404aaa1f6d2a48adfda4",'
    '"MESSAGE":"2026-12-08 03:07:00,123 WARNING storage.dimse: hello from the stream",'
    '"_SYSTEMD_UNIT":"pacsdeck-node@x.service","_NAMESPACE":"pdtest","_COMM":"python3","_UID":"0","_GID":"0",'
    '"__MONOTONIC_TIMESTAMP":"464324164","SYSLOG_IDENTIFIER":"pacsdeck","_STREAM_ID":"e0f83732764c4eaab06727b9ee9d71b6",'
    '"_PID":"8193","__REALTIME_TIMESTAMP":"1796699194977831",'
    '"__CURSOR":"s=78fbd98ea90841afa45158855abc191f;i=6;b=0653d13f20284a40a849e3673a3dc183;m=1bad0644;t=66216a148ee27;'
    'x=e3a4ef76d20a68d5","_HOSTNAME":"vm","_TRANSPORT":"stdout","PRIORITY":"6"}'
)
TRACEBACK_LINE = (
    '{"_TRANSPORT":"stdout","PRIORITY":"6","SYSLOG_IDENTIFIER":"pacsdeck",'
    '"MESSAGE":"Traceback (most recent call last):",'
    '"__REALTIME_TIMESTAMP":"1796699194977900","_SYSTEMD_UNIT":"pacsdeck-node@x.service",'
    '"__CURSOR":"s=78fbd98ea90841afa45158855abc191f;i=7;b=0653d13f20284a40a849e3673a3dc183;m=1bad0644;t=66216a148ee27;'
    'x=8dcf321e1139487e"}'
)
# What systemd itself logs about a unit (systemd.journal-fields(7): _TRANSPORT=journal, PRIORITY, UNIT), and a
# message journalctl prints as an array of bytes because it is not UTF-8.
SYSTEMD_LINE = (
    '{"_TRANSPORT":"journal","PRIORITY":"4","SYSLOG_IDENTIFIER":"systemd","_PID":"1","UNIT":"pacsdeck-node@x.service",'
    '"MESSAGE":"pacsdeck-node@x.service: Main process exited, code=exited, status=1/FAILURE",'
    '"__REALTIME_TIMESTAMP":"1796699195000000","__CURSOR":"s=1;i=8"}'
)
BYTES_LINE = '{"_TRANSPORT":"stdout","PRIORITY":"6","MESSAGE":[104,105,255],"__REALTIME_TIMESTAMP":"1","__CURSOR":"c"}'


def test_journal_records_become_log_lines():
    node = journal.parse_record(NODE_LINE)
    assert node.cursor.startswith("s=78fbd98e") and node.cursor.endswith("x=e3a4ef76d20a68d5")
    assert (node.line.level, node.line.logger, node.line.message) == (
        "WARNING",
        "storage.dimse",
        "hello from the stream",
    )
    assert node.line.time == 1796699194.977831  # the journal's own stamp, UTC, not the line's local asctime
    traceback = journal.parse_record(TRACEBACK_LINE).line
    assert (traceback.level, traceback.logger) == (None, None)  # goes with the record before it
    systemd = journal.parse_record(SYSTEMD_LINE).line
    assert (systemd.level, systemd.logger) == ("WARNING", "systemd") and "status=1/FAILURE" in systemd.message
    assert journal.parse_record(BYTES_LINE).line.message == "hi\ufffd"
    assert journal.parse_record("not json") is None and journal.parse_record('{"MESSAGE":"no cursor"}') is None


def test_the_level_filter_keeps_a_traceback_with_its_record():
    lines = [journal.parse_record(x).line for x in (NODE_LINE, TRACEBACK_LINE, SYSTEMD_LINE)]
    info = journal.parse_entry({"MESSAGE": "INFO storage.node: bare, no time", "__REALTIME_TIMESTAMP": "2"})
    kept, more = journal.select([*lines, info], 10, "WARNING")
    assert [x.message for x in kept] == [lines[0].message, lines[1].message, lines[2].message] and not more
    assert (info.level, info.logger, info.message) == ("INFO", "storage.node", "bare, no time")
    assert journal.select([lines[1], info], 1, None) == ([info], True)


def test_journalctl_is_given_an_argument_list():
    argv = journal.command("a@b.service", namespace="ns", count=5, since=12.5, after_cursor="s=1;i=2")
    assert argv[:2] == ["journalctl", "--unit=a@b.service"] and "--after-cursor=s=1;i=2" in argv
    assert "--namespace=ns" in argv and "--since=@12.500000" in argv and "--reverse" not in argv
    assert "--reverse" in journal.command("a.service", namespace=None, count=5)
