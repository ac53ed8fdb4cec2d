"""The SSH transport: one paramiko connection to a pinned host key and one exec channel running the agent."""

from __future__ import annotations

import getpass
import shlex
import time

import paramiko

from .. import tcp
from ..hostkeys import KnownHosts, fingerprint, host_pattern
from ..inventory import NodeEntry
from .base import MAX_ANSWER_BYTES, Refused, Transport, TransportError, why


class HostKeyUnknown(Refused):
    """The server's host key is not pinned: nothing was sent. Trust it with `pacsdeck fleet trust NODE`."""

    def __init__(self, host: str, port: int, key: paramiko.PKey):
        self.host, self.port, self.key = host, port, key
        self.key_type = key.get_name()
        self.fingerprint = fingerprint(key)
        super().__init__(
            f"unknown host key for {host_pattern(host, port)} ({self.key_type} {self.fingerprint}); "
            "nothing was sent; check the fingerprint and trust it (pacsdeck fleet trust)"
        )


class HostKeyChanged(Refused):
    """The server offers a key other than the pinned one: possibly an attack. Refused, nothing was sent."""

    def __init__(self, host: str, port: int, key: paramiko.PKey, expected_fingerprint: str):
        self.host, self.port, self.key = host, port, key
        self.key_type = key.get_name()
        self.fingerprint = fingerprint(key)
        self.expected_fingerprint = expected_fingerprint
        super().__init__(
            f"HOST KEY CHANGED for {host_pattern(host, port)}: offered {self.key_type} "
            f"{self.fingerprint}, pinned {expected_fingerprint}; refused, nothing was sent. "
            "Someone may be intercepting the connection; if the server was reinstalled, verify the "
            "new fingerprint out of band and run pacsdeck fleet trust --replace"
        )


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Unknown host keys are refused before authentication, carrying what the trust step needs."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def missing_host_key(self, client, hostname, key):
        raise HostKeyUnknown(self.host, self.port, key)


class SSHTransport(Transport):
    """One SSH connection and one exec channel running the agent, kept open between calls."""

    def __init__(self, entry: NodeEntry, known_hosts: KnownHosts, **kw):
        super().__init__(entry, **kw)
        self.known_hosts = known_hosts
        words = list(entry.agent_command) + (["--config", entry.config] if entry.config else [])
        self.command = shlex.join(words)  # one quoted string: the remote shell sees exactly these words
        self._client: paramiko.SSHClient | None = None
        self._channel: paramiko.Channel | None = None
        self._buf = b""
        self._pinned_at_failure: dict | None = None

    _io_errors = (OSError, EOFError, paramiko.SSHException)

    def _reason(self, err: BaseException) -> str:
        return _why(err)

    def _connected(self) -> bool:
        ch = self._channel
        return (
            ch is not None
            and not ch.closed
            and not ch.exit_status_ready()
            and self._client is not None
            and self._client.get_transport() is not None
            and self._client.get_transport().is_active()
        )

    def _retry_now(self) -> bool:
        # The operator pinned (or replaced) the key since the refusal: no reason to wait.
        if isinstance(self._last_error, (HostKeyUnknown, HostKeyChanged)):
            return self._pinned() != self._pinned_at_failure
        return False

    def _pinned(self) -> dict:
        return {t: k.get_base64() for t, k in self.known_hosts.lookup_all(self.entry.host, self.entry.port).items()}

    def _connect_failed(self, err: TransportError) -> None:
        super()._connect_failed(err)
        if isinstance(err, (HostKeyUnknown, HostKeyChanged)):
            self._pinned_at_failure = self._pinned()

    def _open(self) -> None:
        e = self.entry
        self._drop_session()
        client = self._client
        if client is None or client.get_transport() is None or not client.get_transport().is_active():
            self._drop()
            client = self._connect_client()
        try:
            channel = client.get_transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(self.command)
        except (OSError, EOFError, paramiko.SSHException) as err:
            self._drop()
            raise TransportError(f"cannot start the agent on {e.host}: {_why(err)}") from None
        self._channel, self._buf = channel, b""

    def _connect_client(self) -> paramiko.SSHClient:
        e = self.entry
        pattern = host_pattern(e.host, e.port)
        pinned = self.known_hosts.lookup_all(e.host, e.port)
        client = paramiko.SSHClient()
        for key_type, key in pinned.items():
            client.get_host_keys().add(pattern, key_type, key)
        client.set_missing_host_key_policy(_Refuse(e.host, e.port))  # never AutoAdd
        t = self.connect_timeout
        kw = (
            dict(key_filename=str(e.key), allow_agent=False, look_for_keys=False)
            if e.key
            else dict(allow_agent=True, look_for_keys=True)
        )
        try:
            sock = tcp.connect(e.host, e.port, t)  # paramiko's own lookup would have no timeout
        except tcp.LookupFailed as err:
            client.close()
            raise TransportError(str(err)) from None
        except TimeoutError:
            client.close()
            raise TransportError(f"timed out connecting to {pattern} after {t:g} s") from None
        except OSError as err:
            client.close()
            raise TransportError(f"cannot connect to {pattern}: {_why(err)}") from None
        try:
            client.connect(
                e.host,
                port=e.port,
                username=e.user or getpass.getuser(),
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                channel_timeout=t,
                sock=sock,
                **kw,
            )
        except HostKeyUnknown:
            client.close()
            raise
        except paramiko.BadHostKeyException as err:
            client.close()
            expected = err.expected_key or next(iter(pinned.values()), None)
            raise HostKeyChanged(
                e.host, e.port, err.key, fingerprint(expected) if expected is not None else "?"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise TransportError(
                f"key file {e.key} is passphrase-protected: load it into ssh-agent and leave `key:` unset for this node"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(
                f"authentication failed for {e.user or getpass.getuser()}@{e.host}"
                f"{' with ' + str(e.key) if e.key else ''}: is the key in the node's "
                "authorized_keys (users.add with ssh_keys)?"
            ) from None
        except TimeoutError:
            client.close()
            raise TransportError(f"timed out connecting to {pattern} after {t:g} s") from None
        except FileNotFoundError as err:
            client.close()
            raise TransportError(f"cannot read key file {err.filename or e.key}") from None
        except paramiko.SSHException as err:
            client.close()
            if "banner" in str(err) or "No existing session" in str(err):  # paramiko's words when no SSH came
                raise TransportError(
                    f"{pattern} accepts connections but does not answer as an SSH server "
                    f"(no SSH banner within {t:g} s): wrong port?"
                ) from None
            raise TransportError(f"cannot connect to {pattern}: {_why(err)}") from None
        except (OSError, EOFError, ValueError) as err:
            client.close()
            raise TransportError(f"cannot connect to {pattern}: {_why(err)}") from None
        self._client = client
        return client

    def _send(self, data: bytes) -> None:
        self._channel.settimeout(self.call_timeout)
        self._channel.sendall(data)

    def _recv_line(self, deadline: float) -> bytes | None:
        ch = self._channel
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_ANSWER_BYTES:
                raise OSError(f"an answer longer than {MAX_ANSWER_BYTES} bytes")
            self._drain_stderr()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            ch.settimeout(remaining)
            chunk = ch.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        self._drain_stderr()
        return line + b"\n"

    def _drain_stderr(self) -> None:
        # stderr shares the channel window with stdout: unread, it would stall the agent's answers.
        ch = self._channel
        while ch is not None and ch.recv_stderr_ready():
            data = ch.recv_stderr(65536)
            if not data:
                break
            for line in data.decode("utf-8", "replace").splitlines():
                self._keep_stderr(line)

    def _ended(self) -> str:
        ch, client = self._channel, self._client
        where = host_pattern(self.entry.host, self.entry.port)
        if ch is not None:
            ch.status_event.wait(0.2)  # the exit status follows the end of output closely, if it comes
            self._drain_stderr()
            last = next((line for line in reversed(self._stderr) if line.strip()), "")
            if ch.exit_status_ready() and ch.exit_status != -1:  # -1: closed without an exit status
                return f"the agent on {where} exited with code {ch.recv_exit_status()}" + (
                    f": {last[-200:]}" if last else ""
                )
            if client is not None and client.get_transport() is not None and client.get_transport().is_active():
                return f"the agent on {where} ended without an exit status (killed?)" + (
                    f": {last[-200:]}" if last else ""
                )
        return f"the connection to {where} was closed"

    def _drop_session(self) -> None:
        ch, self._channel = self._channel, None
        self._buf = b""
        if ch is not None:
            try:
                ch.close()
            except Exception:  # noqa: BLE001 - already broken; closing is best effort
                pass

    def _drop(self) -> None:
        self._drop_session()
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _why(err: BaseException) -> str:
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError) and err.errors:
        err = next(iter(err.errors.values()))  # one address on loopback or a named host: its own error
    return why(err)
