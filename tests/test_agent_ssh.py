"""Through a real sshd: a key added by users.add runs the agent as its user's role, and nothing else."""

from __future__ import annotations

import json

import paramiko
import pytest

from agent.protocol import RPCError, encode, request, unwrap

from .agent_support import agent_env, agents, ssh_keygen, sshd  # noqa: F401 - fixtures
from .conftest import free_port, make_node
from .results import check_result

SFTP_INIT = b"\x00\x00\x00\x05\x01\x00\x00\x00\x03"  # SSH_FXP_INIT, version 3


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node")


@pytest.fixture
def admin(node, agents, sshd):
    """The local owner's agent, writing the sshd fixture's authorized_keys."""
    return agents(node.config, env=agent_env(sshd.authorized_keys))


class Session:
    """One exec channel speaking JSON-RPC, as the console keeps it open per node."""

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self.channel.settimeout(60)
        self.out = channel.makefile("rb")
        self._id = 0

    def call(self, method: str, params: dict | None = None):
        self._id += 1
        self.channel.sendall(encode(request(method, params, id=self._id)))
        response = json.loads(self.out.readline())
        assert response["id"] == self._id
        result = unwrap(response)
        check_result(method, result)
        return result

    def error(self, method: str, params: dict | None = None) -> RPCError:
        try:
            self.call(method, params)
        except RPCError as err:
            return err
        raise AssertionError(f"{method} succeeded")


def _session(client, command: str = "pacsdeck agent stdio") -> Session:
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    return Session(channel)


def _add_user(admin, tmp_path, name: str, role: str):
    key = tmp_path / f"{name}_ed25519"
    admin.call("users.add", {"name": name, "role": role, "ssh_keys": [ssh_keygen(key)]})
    return key


def test_key_runs_the_agent_as_its_role(node, admin, sshd, tmp_path):
    key = _add_user(admin, tmp_path, "vera", "viewer")
    client = sshd.connect(key)
    # Whatever command the client asks for, the forced command runs instead.
    session = _session(client, "cat /etc/shadow; id")
    assert session.call("rpc.whoami")["user"] == "vera"
    assert session.call("rpc.whoami")["role"] == "viewer"
    status = session.call("node.status")
    assert status["node"]["ae_title"] == node.ae_title
    err = session.error("aets.add", {"ae_title": "EVIL", "host": "10.0.0.1", "port": 104})
    assert err.kind == "forbidden"
    assert session.error("users.add", {"name": "eve", "role": "admin"}).kind == "forbidden"
    session.channel.shutdown_write()
    assert session.out.read() == b""  # nothing but responses, and an orderly end
    assert session.channel.recv_exit_status() == 0
    refused = admin.call("audit.recent", {"user": "vera"})["entries"]
    assert [e["method"] for e in refused] == ["users.add", "aets.add"]
    assert "forced-command" in sshd.log()


def test_operator_key_gets_operator_and_not_admin(node, admin, sshd, tmp_path):
    key = _add_user(admin, tmp_path, "otto", "operator")
    admin.call("aets.add", {"ae_title": "CLOSED", "host": "127.0.0.1", "port": free_port()})
    session = _session(sshd.connect(key))
    echo = session.call("aets.echo", {"ae_title": "CLOSED", "timeout": 1})  # operators may echo
    assert echo["diagnosis"]["kind"] == "refused"
    assert session.error("aets.remove", {"ae_title": "STORESCU"}).kind == "forbidden"
    admin.call("users.update", {"name": "otto", "role": "admin"})  # applies to the open session
    assert session.call("aets.remove", {"ae_title": "STORESCU"}) == {"removed": "STORESCU"}


def test_no_shell_pty_forwarding_or_sftp(node, admin, sshd, tmp_path):
    key = _add_user(admin, tmp_path, "vera", "viewer")
    client = sshd.connect(key)
    transport = client.get_transport()

    # No PTY: `restrict` refuses the request (paramiko closes the channel on refusal).
    with pytest.raises(paramiko.SSHException):
        transport.open_session().get_pty()

    # No shell: a shell request also gets the agent, which answers shell input with JSON errors.
    shell = transport.open_session()
    shell.settimeout(60)
    shell.invoke_shell()
    shell.sendall(b"echo pwned; id\n")
    answer = json.loads(shell.makefile("rb").readline())
    assert answer["error"]["code"] == -32700
    shell.close()

    # No sftp: the subsystem request runs the agent too, which does not speak SFTP.
    sftp = transport.open_session()
    sftp.settimeout(60)
    sftp.invoke_subsystem("sftp")
    sftp.sendall(SFTP_INIT)
    sftp.shutdown_write()
    reply = sftp.makefile("rb").read()
    assert reply.startswith(b'{"jsonrpc":"2.0"') and b'"code":-32700' in reply

    # No port forwarding, either direction.
    with pytest.raises(paramiko.ChannelException):
        transport.open_channel("direct-tcpip", ("127.0.0.1", sshd.port), ("127.0.0.1", 0))
    with pytest.raises(paramiko.SSHException):
        transport.request_port_forward("127.0.0.1", 0)

    # The connection still serves the agent after all that.
    assert _session(client).call("rpc.whoami")["user"] == "vera"
    assert "refused local port forward" in sshd.log()


def test_removed_user_and_unknown_keys_are_locked_out(node, admin, sshd, tmp_path):
    key = _add_user(admin, tmp_path, "vera", "viewer")
    stranger = tmp_path / "stranger"
    ssh_keygen(stranger)
    with pytest.raises(paramiko.AuthenticationException):
        sshd.connect(stranger)
    assert _session(sshd.connect(key)).call("rpc.whoami")["user"] == "vera"
    admin.call("users.remove", {"name": "vera"})
    with pytest.raises(paramiko.AuthenticationException):
        sshd.connect(key)


def test_host_key_is_verified(node, admin, sshd, tmp_path):
    """The client trusts only the fixture's host key: a different key for the same address is refused."""
    key = _add_user(admin, tmp_path, "vera", "viewer")
    imposter = tmp_path / "imposter_host"
    other = ssh_keygen(imposter)
    real = sshd.host_key_line
    sshd.host_key_line = other
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            sshd.connect(key)
    finally:
        sshd.host_key_line = real


def test_deep_nesting_over_ssh_is_answered_and_the_session_goes_on(node, admin, sshd, tmp_path):
    """A line nested 10,000 deep once ended the agent (RecursionError) and with it the SSH session."""
    key = _add_user(admin, tmp_path, "vera", "viewer")
    session = _session(sshd.connect(key))
    session.channel.sendall(b"[" * 10_000 + b"]" * 10_000 + b"\n")
    answer = json.loads(session.out.readline())
    assert answer["id"] is None and answer["error"]["code"] == -32700
    assert "nested deeper than" in answer["error"]["message"]
    deep = "[" * 900 + "]" * 900
    session.channel.sendall(
        b'{"jsonrpc":"2.0","id":"deep","method":"aets.add","params":{"ae_title":"EVIL",'
        b'"host":"10.0.0.9","port":104,"description":' + deep.encode() + b"}}\n"
    )
    answer = json.loads(session.out.readline())
    assert (answer["id"], answer["error"]["data"]["kind"]) == ("deep", "forbidden")
    assert session.call("node.status")["node"]["ae_title"] == node.ae_title
    session.channel.shutdown_write()
    assert session.out.read() == b""
    assert session.channel.recv_exit_status() == 0
    refused = admin.call("audit.recent", {"user": "vera"})["entries"]
    assert [(e["method"], e["result"], e["params"]["ae_title"]) for e in refused] == [("aets.add", "forbidden", "EVIL")]
