"""health.check and `pacsdeck node check`: the documented shape here, a filling tmpfs pool, a read-only pool."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from storage.config.settings import ConfigError, parse_config

from .agent_support import agents, env  # noqa: F401 - fixtures
from .conftest import IN_CI, pacsdeck, read_only, tmpfs

KEYS = {"name", "status", "value", "unit", "threshold", "message"}
STATUSES = {"ok", "warn", "crit", "unknown"}
NAGIOS = {"ok": 0, "warn": 1, "crit": 2}


def by_name(result: dict) -> dict:
    return {c["name"]: c for c in result["checks"]}


def test_every_check_has_the_documented_shape(node_factory, agents, env):
    node = node_factory().start()
    result = agents(node.config, env=env).call("health.check")
    assert result["status"] in {"ok", "warn", "crit"} and result["schema_version"] == 1
    for c in result["checks"]:
        assert set(c) >= KEYS, c
        assert c["status"] in STATUSES, c
        assert isinstance(c["message"], str) and c["message"], c
    checks = by_name(result)
    expected = {
        "cpu_load",
        "memory",
        "swap",
        "node_process",
        "scp_listening",
        "index_integrity",
        "backup_age",
        "queue_backlog",
        "clock",
        "temperature",
        "fans",
        "disk_io",
    }
    for pool in ("primary", "archive"):
        expected |= {f"pool:{pool}:filesystem", f"pool:{pool}:fsync", f"pool:{pool}:forecast"}
    assert expected <= set(checks), expected - set(checks)
    assert checks["node_process"]["status"] == "ok" and checks["node_process"]["detail"]["workers"] == 2
    assert checks["scp_listening"]["value"] is True
    assert checks["index_integrity"]["value"] == "ok"
    assert checks["pool:primary:fsync"]["status"] == "ok" and checks["pool:primary:fsync"]["unit"] == "ms"
    assert checks["backup_age"]["status"] == "unknown" and "no successful backup" in checks["backup_age"]["message"]
    if shutil.which("smartctl") is None:  # this machine: say so, never fail
        assert checks["smart"]["status"] == "unknown"
        assert "smartmontools is not installed" in checks["smart"]["message"]
    else:
        assert any(name.startswith("smart") for name in checks)
    assert not [n for n in os.listdir(node.pool_root("primary")) if n.startswith(".health-probe")]

    # the same checks as a Nagios plugin: the exit code is the overall status
    cli = pacsdeck("node", "check", "--json", "--config", str(node.config))
    data = json.loads(cli.stdout)
    assert cli.returncode == NAGIOS[data["status"]], cli.stderr
    human = pacsdeck("node", "check", "--config", str(node.config))
    assert human.stdout.startswith("PACSDECK ") and " | " in human.stdout.splitlines()[0]


def test_stopped_node_is_critical_and_a_broken_config_is_unknown(node_factory, tmp_path):
    node = node_factory()  # initialised, never started
    cli = pacsdeck("node", "check", "--json", "--config", str(node.config))
    checks = by_name(json.loads(cli.stdout))
    assert cli.returncode == 2
    assert checks["node_process"]["status"] == "crit" and "pacsdeck node run" in checks["node_process"]["message"]
    cfg = yaml.safe_load(node.config.read_text())
    cfg["health"] = {"disk_percent": {"warn": 95, "crit": 90}}
    node.config.write_text(yaml.safe_dump(cfg))
    cli = pacsdeck("node", "check", "--config", str(node.config))
    assert cli.returncode == 3
    assert cli.stdout.startswith("PACSDECK UNKNOWN") and "health.disk_percent.warn" in cli.stdout


@pytest.mark.parametrize(
    "health, field",
    [
        ({"disk_percnt": {"warn": 1, "crit": 2}}, "health: unknown key(s) disk_percnt"),
        ({"fsync_ms": {"warn": "fast"}}, "health.fsync_ms.warn"),
        ({"forecast_days": {"warn": 5, "crit": 10}}, "health.forecast_days.crit"),
        ({"memory_percent": {"warn": 50, "crit": 60, "info": 1}}, "health.memory_percent: unknown key(s) info"),
        ({"forecast_window_days": 0}, "health.forecast_window_days"),
    ],
)
def test_health_thresholds_errors_name_the_field(tmp_path, health, field):
    data = {"pools": [{"name": "primary", "path": str(tmp_path)}], "health": health}
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data, tmp_path / "node.yaml")


def test_metrics_port_is_validated(tmp_path):
    data = {"pools": [{"name": "primary", "path": str(tmp_path)}], "metrics_port": 70000}
    with pytest.raises(ConfigError, match="metrics_port"):
        parse_config(data, tmp_path / "node.yaml")


@pytest.fixture
def small_fs(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "4m") as mnt:
        yield mnt


def _fill_to(mnt: Path, percent: float) -> None:
    st = os.statvfs(mnt)
    target = st.f_blocks * st.f_frsize * percent / 100
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    with open(mnt / "filler.bin", "ab") as fh:
        fh.write(b"\0" * int(target - used))
        fh.flush()
        os.fsync(fh.fileno())


def test_tmpfs_pool_flips_to_warn_then_crit(node_factory, agents, env, small_fs):
    pool = small_fs / "primary"
    node = node_factory(
        pools=[{"name": "primary", "path": str(pool), "tier": "primary"}],
        health={"disk_percent": {"warn": 40, "crit": 75}},
    )
    agent = agents(node.config, env=env)

    def pool_check() -> dict:
        return by_name(agent.call("health.check"))["pool:primary:filesystem"]

    assert pool_check()["status"] == "ok"
    _fill_to(small_fs, 55)
    check = pool_check()
    assert check["status"] == "warn" and 40 <= check["value"] < 75, check
    assert "pools.migrate" in check["message"]
    _fill_to(small_fs, 85)
    check = pool_check()
    assert check["status"] == "crit" and check["value"] >= 75, check
    assert check["threshold"].startswith("warn >= 40%, crit >= 75%")


@pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="needs root for a read-only bind mount")
def test_read_only_pool_is_critical_with_what_to_do(node_factory, agents, env):
    node = node_factory()
    with read_only(node.dir / "pools" / "primary"):
        checks = by_name(agents(node.config, env=env).call("health.check"))
    fs, probe = checks["pool:primary:filesystem"], checks["pool:primary:fsync"]
    assert fs["status"] == "crit" and fs["detail"]["read_only"] is True
    assert "read-only" in fs["message"] and "remount" in fs["message"] and "dmesg" in fs["message"]
    assert probe["status"] == "crit" and "read-only" in probe["message"]
    assert checks["pool:archive:filesystem"]["status"] != "crit"
