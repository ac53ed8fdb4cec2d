"""The fleet file: the example loads, defaults apply, and every bad field is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from console.inventory import (
    DEFAULT_AGENT_COMMAND,
    FleetConfigError,
    default_fleet_path,
    default_known_hosts,
    load_fleet,
    single_node_fleet,
)

from .conftest import REPO, pacsdeck


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def test_example_file_loads():
    fleet = load_fleet(REPO / "configs" / "fleet.example.yaml")
    names = [n.name for n in fleet.nodes]
    assert names == ["clinic-a", "site-b", "site-c-archive"]
    local, ssh, archive = fleet.nodes
    assert local.transport == "local" and local.host is None and local.config == "/var/lib/pacsdeck/node.yaml"
    assert local.user is None and local.key is None  # defaults for ssh settings do not leak into local nodes
    assert ssh.transport == "ssh" and ssh.host == "pacs-b.example.org" and ssh.port == 22
    assert ssh.agent_command == ("/opt/pacsdeck/bin/pacsdeck", "agent", "stdio")
    assert ssh.poll_interval == 10 and ssh.site == "Hospital B" and ssh.tags == ("radiology", "ct")
    assert ssh.key == Path("~/.ssh/pacsdeck_ed25519").expanduser()
    assert archive.transport == "ssh" and archive.port == 2222 and archive.call_timeout == 20
    assert archive.user == "pacsdeck" and archive.agent_command == DEFAULT_AGENT_COMMAND  # from defaults:
    assert fleet.known_hosts == Path("~/.config/pacsdeck/known_hosts").expanduser()


def test_design_shape_and_defaults(tmp_path):
    path = write(
        tmp_path,
        """\
nodes:
  - name: clinic-a
    transport: local
    config: nodes/a/node.yaml
  - name: site-b
    transport: ssh
    host: pacs-b.example.org
    port: 22
    user: pacsdeck
    key: keys/id
    config: /etc/pacsdeck/node.yaml
""",
    )
    fleet = load_fleet(path)
    a, b = fleet.nodes
    assert a.config == str(tmp_path / "nodes/a/node.yaml")  # local paths resolve against the fleet file
    assert b.config == "/etc/pacsdeck/node.yaml"  # a path on the remote machine stays as written
    assert b.key == tmp_path / "keys/id"
    assert (a.site, a.tags, a.poll_interval, a.connect_timeout, a.call_timeout) == ("", (), 5.0, 5.0, 10.0)
    assert a.agent_command == DEFAULT_AGENT_COMMAND
    assert fleet.known_hosts == default_known_hosts() and fleet.source == path


def test_agent_command_as_text_is_split(tmp_path):
    fleet = load_fleet(
        write(
            tmp_path,
            {
                "nodes": [
                    {
                        "name": "x",
                        "host": "h",
                        "agent_command": "sudo -u pacs '/opt/my pacsdeck/bin/pacsdeck' agent stdio",
                    }
                ]
            },
        )
    )
    assert fleet.nodes[0].agent_command == ("sudo", "-u", "pacs", "/opt/my pacsdeck/bin/pacsdeck", "agent", "stdio")
    assert fleet.nodes[0].transport == "ssh"  # a host makes it ssh


BAD = [
    ({"nodes": []}, "nodes"),
    ({"nodes": "a"}, "nodes"),
    ({"nodez": [{"name": "a"}]}, "nodez"),
    ({"nodes": ["a"]}, "nodes[0]"),
    ({"nodes": [{"site": "x"}]}, "nodes[0].name"),
    ({"nodes": [{"name": "has space"}]}, "nodes[0].name"),
    ({"nodes": [{"name": "a"}, {"name": "a"}]}, "nodes[1].name"),
    ({"nodes": [{"name": "a", "transport": "telnet"}]}, "nodes[0].transport"),
    ({"nodes": [{"name": "a", "transport": "ssh"}]}, "nodes[0].host"),
    ({"nodes": [{"name": "a", "host": "-oProxyCommand=x"}]}, "nodes[0].host"),
    ({"nodes": [{"name": "a", "host": "h", "port": 0}]}, "nodes[0].port"),
    ({"nodes": [{"name": "a", "host": "h", "port": "22"}]}, "nodes[0].port"),
    ({"nodes": [{"name": "a", "host": "h", "port": 70000}]}, "nodes[0].port"),
    ({"nodes": [{"name": "a", "host": "h", "user": "bad user"}]}, "nodes[0].user"),
    ({"nodes": [{"name": "a", "host": "h", "key": 5}]}, "nodes[0].key"),
    ({"nodes": [{"name": "a", "transport": "local", "host": "h"}]}, "nodes[0].host"),
    ({"nodes": [{"name": "a", "transport": "local", "key": "k"}]}, "nodes[0].key"),
    ({"nodes": [{"name": "a", "config": ""}]}, "nodes[0].config"),
    ({"nodes": [{"name": "a", "agent_command": []}]}, "nodes[0].agent_command"),
    ({"nodes": [{"name": "a", "agent_command": "pacsdeck 'agent"}]}, "nodes[0].agent_command"),
    ({"nodes": [{"name": "a", "poll_interval": 0}]}, "nodes[0].poll_interval"),
    ({"nodes": [{"name": "a", "connect_timeout": "5"}]}, "nodes[0].connect_timeout"),
    ({"nodes": [{"name": "a", "call_timeout": True}]}, "nodes[0].call_timeout"),
    ({"nodes": [{"name": "a", "tags": [1]}]}, "nodes[0].tags"),
    ({"nodes": [{"name": "a", "site": ["x"]}]}, "nodes[0].site"),
    ({"nodes": [{"name": "a", "prot": 22}]}, "nodes[0].prot"),
    ({"known_hosts": 3, "nodes": [{"name": "a"}]}, "known_hosts"),
    ({"defaults": {"name": "x"}, "nodes": [{"name": "a"}]}, "defaults.name"),
    ({"defaults": {"port": -1}, "nodes": [{"name": "a", "host": "h"}]}, "defaults.port"),
]


@pytest.mark.parametrize("doc,field", BAD, ids=[f for _, f in BAD])
def test_bad_field_is_named(tmp_path, doc, field):
    with pytest.raises(FleetConfigError) as info:
        load_fleet(write(tmp_path, doc))
    assert info.value.field == field
    assert str(info.value).startswith(f"{tmp_path / 'fleet.yaml'}: {field}: ")


def test_unreadable_files(tmp_path):
    with pytest.raises(FleetConfigError, match="no fleet file at"):
        load_fleet(tmp_path / "missing.yaml")
    with pytest.raises(FleetConfigError, match="not valid YAML at line 3"):
        load_fleet(write(tmp_path, "nodes:\n  - name: [a\n"))
    with pytest.raises(FleetConfigError, match="expected a mapping"):
        load_fleet(write(tmp_path, "- just a list\n"))
    # safe_load only: a YAML tag that would build a Python object is an error, not an object.
    with pytest.raises(FleetConfigError, match="not valid YAML"):
        load_fleet(write(tmp_path, "nodes: !!python/object/apply:os.system ['true']\n"))


def test_default_path_follows_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("PACSDECK_FLEET", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_fleet_path() == tmp_path / "xdg/pacsdeck/fleet.yaml"
    assert default_known_hosts() == tmp_path / "xdg/pacsdeck/known_hosts"
    monkeypatch.setenv("PACSDECK_FLEET", str(tmp_path / "elsewhere.yaml"))
    assert default_fleet_path() == tmp_path / "elsewhere.yaml"
    monkeypatch.delenv("PACSDECK_FLEET")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_fleet_path() == Path.home() / ".config/pacsdeck/fleet.yaml"


def test_single_node_fleet_is_named_after_the_ae_title(tmp_path):
    (tmp_path / "box").mkdir()
    (tmp_path / "box/node.yaml").write_text("ae_title: RADIOLOGY\nport: 11112\n")
    fleet = single_node_fleet(tmp_path / "box/node.yaml")
    (entry,) = fleet.nodes
    assert (entry.name, entry.transport, entry.config) == ("radiology", "local", str(tmp_path / "box/node.yaml"))
    missing = single_node_fleet(tmp_path / "new box/node.yaml")  # not there yet: named after the folder
    assert missing.nodes[0].name == "new-box"


def test_fleet_status_names_the_field_and_exits_3(tmp_path):
    path = write(tmp_path, {"nodes": [{"name": "a", "host": "h", "port": "ssh"}]})
    result = pacsdeck("fleet", "status", "--fleet", str(path))
    assert result.returncode == 3, result
    assert "nodes[0].port" in result.stderr and result.stdout == ""
