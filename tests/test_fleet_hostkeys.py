"""pacsdeck's known_hosts interoperates with OpenSSH: it reads ssh-keyscan's lines (plain and hashed, [host]:port)
and writes lines `ssh-keygen -F` finds; the scan sends no command; trust replaces only that host's key."""

from __future__ import annotations

import stat
import subprocess

import pytest
import yaml

from console.hostkeys import KnownHosts, fingerprint, host_pattern, scan_host_key
from console.inventory import parse_fleet
from console.transport import HostKeyChanged, HostKeyUnknown, TransportError, open_transport

from .agent_support import ssh_keygen, sshd  # noqa: F401 - fixture
from .conftest import free_port, pacsdeck, require_tool
from .console_support import host_key, restart_sshd


def keyscan(server, *flags: str) -> str:
    out = subprocess.run(
        [require_tool("ssh-keyscan"), *flags, "-t", "ed25519", "-p", str(server.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out.strip(), "ssh-keyscan found no key"
    return out


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
def test_reads_openssh_lines(sshd, tmp_path, hashed):
    path = tmp_path / "known_hosts"
    path.write_text("# a comment\n" + keyscan(sshd, *(["-H"] if hashed else [])))
    known = KnownHosts(path)
    assert known.lookup("127.0.0.1", sshd.port) == host_key(sshd)
    assert known.lookup("127.0.0.1", sshd.port + 1) is None  # the port is part of the name
    assert known.lookup("localhost", sshd.port) is None


def test_written_file_is_found_by_ssh_keygen(sshd, tmp_path):
    require_tool("ssh-keygen")
    path = tmp_path / "conf" / "known_hosts"
    path.parent.mkdir()
    path.write_text(keyscan(sshd).replace("127.0.0.1", "10.9.9.9"))  # another host's line stays
    for hashed in (True, False):
        KnownHosts(path, hashed=hashed).trust("127.0.0.1", sshd.port, host_key(sshd))
        found = subprocess.run(
            ["ssh-keygen", "-F", host_pattern("127.0.0.1", sshd.port), "-f", str(path)], capture_output=True, text=True
        )
        assert found.returncode == 0 and "ssh-ed25519" in found.stdout
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[10.9.9.9]:")  # replaced, not appended twice
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".known_hosts.")]  # no temp left


def test_scan_sends_no_command_and_matches_ssh_keygen(sshd):
    key = scan_host_key("127.0.0.1", sshd.port, timeout=5)
    pub = sshd.dir / "ssh_host_ed25519_key.pub"
    expected = subprocess.run(
        [require_tool("ssh-keygen"), "-lf", str(pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert fingerprint(key) == expected
    log = sshd.log()
    assert "Accepted" not in log and "Starting session" not in log


def test_scan_of_a_closed_port_raises():
    with pytest.raises(OSError):
        scan_host_key("127.0.0.1", free_port(), timeout=2)


def test_trust_refuses_what_it_cannot_pin(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "known_hosts": str(tmp_path / "kh"),
                "nodes": [
                    {"name": "here", "transport": "local"},
                    {"name": "gone", "host": "127.0.0.1", "port": free_port(), "connect_timeout": 2},
                ],
            }
        )
    )
    unknown = pacsdeck("fleet", "trust", "nosuch", "--fleet", str(fleet), "--yes")
    assert unknown.returncode == 2 and "no node 'nosuch'" in unknown.stdout and "here, gone" in unknown.stdout
    local = pacsdeck("fleet", "trust", "here", "--fleet", str(fleet), "--yes")
    assert local.returncode == 2 and "local node" in local.stdout
    closed = pacsdeck("fleet", "trust", "gone", "--fleet", str(fleet), "--yes")
    assert closed.returncode == 1 and "cannot fetch the host key" in closed.stdout
    assert not (tmp_path / "kh").exists()
    bad = pacsdeck("fleet", "trust", "gone", "--fleet", str(tmp_path / "nofleet.yaml"))
    assert bad.returncode == 3 and "no fleet file" in bad.stderr


def test_a_server_with_two_host_keys_is_compared_on_the_pinned_type(sshd, tmp_path):
    """Pinned RSA (e.g. from ssh-keyscan -t rsa), server offers RSA and Ed25519: trust finds the pin, no alarm."""
    rsa = sshd.dir / "ssh_host_rsa_key"
    ssh_keygen(rsa, "rsa")
    config = sshd.dir / "sshd_config"
    config.write_text(config.read_text() + f"HostKey {rsa}\n")
    restart_sshd(sshd)
    known_hosts = tmp_path / "known_hosts"
    scanned = subprocess.run(
        [require_tool("ssh-keyscan"), "-t", "rsa", "-p", str(sshd.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    known_hosts.write_text(scanned)
    pinned = KnownHosts(known_hosts).lookup("127.0.0.1", sshd.port)
    assert pinned.get_name() == "ssh-rsa"
    assert scan_host_key("127.0.0.1", sshd.port, 5).get_name() == "ssh-ed25519"  # what it offers first
    assert scan_host_key("127.0.0.1", sshd.port, 5, prefer=("ssh-rsa",)) == pinned
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {"known_hosts": str(known_hosts), "nodes": [{"name": "two", "host": "127.0.0.1", "port": sshd.port}]}
        )
    )
    result = pacsdeck("fleet", "trust", "two", "--fleet", str(fleet), "--yes")
    assert result.returncode == 0 and "already trusted" in result.stdout and "CHANGED" not in result.stdout
    assert known_hosts.read_text() == scanned
    # The SSH transport also asks for the pinned type: the key check passes (then login fails: no user key).
    client_key = tmp_path / "client_ed25519"
    ssh_keygen(client_key)
    entry = parse_fleet(
        {
            "known_hosts": str(known_hosts),
            "nodes": [{"name": "two", "host": "127.0.0.1", "port": sshd.port, "key": str(client_key)}],
        }
    )
    transport = open_transport(entry.nodes[0], KnownHosts(known_hosts))
    err = pytest.raises(TransportError, transport.call, "node.status").value
    assert not isinstance(err, (HostKeyChanged, HostKeyUnknown)) and "authentication failed" in err.reason
