"""logs.tail: the end of a real node's node.log, parsed and filtered; `follow` returns a line written after the call."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from agent import logtail
from agent.protocol import FORBIDDEN, INVALID_PARAMS, UNAVAILABLE

from .agent_support import agent_env, agents, node  # noqa: F401 - fixtures
from .conftest import dcmtk, wait_for


@pytest.fixture
def env(tmp_path):
    return agent_env(tmp_path / "authorized_keys")


def _stamp(at: str) -> str:
    return datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S,000")


def test_tail_of_a_running_node_and_follow_returns_a_line_written_after_the_call(node_factory, agents, env):
    node = node_factory().start()
    agent = agents(node.config, env=env)
    first = agent.call("logs.tail", {})
    assert first["path"] == str(node.dir / "node.log") and first["truncated"] is False
    assert any(x["logger"] and x["level"] == "INFO" and x["time"].endswith("Z") for x in first["lines"])

    # The node writes a line (a rejected association) only after the call started waiting; echoscu is
    # sent again while the call waits, in case one attempt never reached the node on a busy machine.
    answer: dict = {}
    params = {"after": first["end"], "follow": 30, "level": "WARNING"}
    waiting = threading.Thread(target=lambda: answer.update(agent.call("logs.tail", params)), daemon=True)
    waiting.start()

    def refused_once_more() -> bool:
        dcmtk("echoscu", "-to", "5", "-aet", "NOBODY", "-aec", node.ae_title, "127.0.0.1", str(node.port), timeout=30)
        return not waiting.is_alive()

    wait_for(refused_once_more, timeout=40, interval=0.5, what="follow returning the node's new line")
    new = answer["lines"]
    assert any("NOBODY" in x["message"] and x["level"] == "WARNING" for x in new), new
    assert all(x["time"] >= first["lines"][-1]["time"] for x in new if x["time"])
    assert answer["end"] > first["end"] and not any(x in first["lines"] for x in new)


def test_follow_with_nothing_new_returns_at_its_deadline_with_no_lines(node, agents, env):
    (node.dir / "node.log").write_text("2026-01-01 10:00:00,000 INFO storage.node: started\n")
    agent = agents(node.config, env=env)
    end = agent.call("logs.tail", {})["end"]
    assert agent.call("logs.tail", {"after": end, "follow": 0.5})["lines"] == []


def test_lines_level_since_and_lines_out_of_the_format(node, agents, env):
    log = node.dir / "node.log"
    log.write_text(
        "\n".join(
            [
                f"{_stamp('2026-01-01T10:00:00')} INFO storage.node: old news",
                f"{_stamp('2026-01-01T11:00:00')} WARNING storage.pools: primary: 91% full",
                f"{_stamp('2026-01-01T11:00:01')} ERROR storage.dimse.store: cannot store",
                "Traceback (most recent call last):",
                '  File "x.py", line 1, in <module>',
                f"{_stamp('2026-01-01T11:00:02')} INFO storage.node: later",
                "a line some library printed",
                "",
            ]
        )
    )
    agent = agents(node.config, env=env)
    every = agent.call("logs.tail", {})["lines"]
    assert every[0]["message"] == "old news" and len(every) == 7
    assert every[3] == {"time": None, "level": None, "logger": None, "message": "Traceback (most recent call last):"}
    assert every[1]["logger"] == "storage.pools" and every[1]["level"] == "WARNING"

    last_two = agent.call("logs.tail", {"lines": 2})
    assert [x["message"] for x in last_two["lines"]] == ["later", "a line some library printed"]
    assert last_two["truncated"] is True

    errors = agent.call("logs.tail", {"level": "ERROR"})["lines"]  # the traceback goes with its record
    assert [x["message"] for x in errors] == [
        "cannot store",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
    ]
    warned = agent.call("logs.tail", {"level": "warning"})["lines"]
    assert warned[0]["message"] == "primary: 91% full" and len(warned) == 4

    local = datetime.fromisoformat("2026-01-01T11:00:00").astimezone().isoformat()
    since = agent.call("logs.tail", {"since": local})
    assert since["lines"][0]["message"] == "primary: 91% full" and since["truncated"] is False
    assert agent.call("logs.tail", {"since": 60})["lines"] == []  # nothing in the last minute


def test_only_the_end_of_a_big_log_is_read(node, agents, env):
    log = node.dir / "node.log"
    line = f"{_stamp('2026-01-01T10:00:00')} INFO storage.node: {'x' * 200}\n"
    with log.open("w") as f:
        f.write("start of the file\n")
        f.write(line * (logtail.MAX_SCAN // len(line) + 5000))  # more than one read's budget
        f.write(f"{_stamp('2026-01-01T10:00:01')} INFO storage.node: the end\n")
        f.write("half a line still being writ")  # no newline yet: left for the next call
    agent = agents(node.config, env=env)
    result = agent.call("logs.tail", {"lines": 5000})
    assert len(result["lines"]) == 5000 and result["truncated"] is True
    assert result["lines"][-1]["message"] == "the end"
    assert all(x["message"] == "x" * 200 and x["level"] == "INFO" for x in result["lines"][:-1])  # across blocks
    assert result["end"] == log.stat().st_size - len("half a line still being writ")
    low = agent.call("logs.tail", {"lines": 5000, "level": "ERROR"})  # scans at most MAX_SCAN, finds none
    assert low["lines"] == [] and low["truncated"] is True


def test_no_node_log_is_unavailable_and_says_where_to_look(node, agents, env):
    err = agents(node.config, env=env).error("logs.tail", {})
    assert err.kind == UNAVAILABLE
    assert "node.log" in err.message and "journalctl" in err.message and str(node.dir) in err.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lines": 0}, "lines"),
        ({"lines": 5001}, "lines"),
        ({"follow": 31}, "follow"),
        ({"follow": True}, "follow"),
        ({"level": "LOUD"}, "level"),
        ({"since": "yesterday"}, "since"),
        ({"since": -5}, "since"),
        ({"after": -1}, "after"),
    ],
)
def test_bad_params_name_the_field(node, agents, env, params, field):
    (node.dir / "node.log").write_text("")
    err = agents(node.config, env=env).error("logs.tail", params)
    assert err.kind == INVALID_PARAMS and err.data["field"] == field


def test_a_viewer_may_tail_and_a_stranger_may_not(node, agents, env):
    (node.dir / "node.log").write_text(f"{_stamp('2026-01-01T10:00:00')} INFO storage.node: hello\n")
    agents(node.config, env=env).call("users.add", {"name": "vera", "role": "viewer"})
    assert agents(node.config, as_user="vera", env=env).call("logs.tail", {})["lines"][0]["message"] == "hello"
    assert agents(node.config, as_user="nobody", env=env).error("logs.tail", {}).kind == FORBIDDEN
