"""One agent session per node: a local `pacsdeck agent stdio` on a pipe, or one SSH exec channel, with timeouts."""

from __future__ import annotations

import collections
import getpass
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko

from agent.protocol import RPCError, decode_line, encode, request, unwrap

from . import tcp
from .hostkeys import KnownHosts, fingerprint, host_pattern
from .inventory import DEFAULT_AGENT_COMMAND, LOCAL, NodeEntry

# Reconnect backoff: the first retry after a failed connect waits BACKOFF_INITIAL, then doubles up to
# BACKOFF_MAX, so a dead site costs one connect attempt per half minute, not one per poll.
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
_STDERR_LINES = 20  # the agent's last stderr lines, to say why it died
# Answers can be large (a preview image, a page of studies) but not unbounded: a runaway peer must not
# make the console buffer without limit.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# The agent's routine log lines say nothing about why it ended; warnings, errors and tracebacks do.
_ROUTINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (DEBUG|INFO) ")


class TransportError(Exception):
    """The node could not be asked: `reason` is one line a person can act on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class HostKeyUnknown(TransportError):
    """The server's host key is not pinned: nothing was sent. Trust it with `pacsdeck fleet trust NODE`."""

    def __init__(self, host: str, port: int, key: paramiko.PKey):
        self.host, self.port, self.key = host, port, key
        self.key_type = key.get_name()
        self.fingerprint = fingerprint(key)
        super().__init__(f"unknown host key for {host_pattern(host, port)} ({self.key_type} {self.fingerprint}); "
                         "nothing was sent; check the fingerprint and trust it (pacsdeck fleet trust)")


class HostKeyChanged(TransportError):
    """The server offers a key other than the pinned one: possibly an attack. Refused, nothing was sent."""

    def __init__(self, host: str, port: int, key: paramiko.PKey, expected_fingerprint: str):
        self.host, self.port, self.key = host, port, key
        self.key_type = key.get_name()
        self.fingerprint = fingerprint(key)
        self.expected_fingerprint = expected_fingerprint
        super().__init__(f"HOST KEY CHANGED for {host_pattern(host, port)}: offered {self.key_type} "
                         f"{self.fingerprint}, pinned {expected_fingerprint}; refused, nothing was sent. "
                         "Someone may be intercepting the connection; if the server was reinstalled, verify the "
                         "new fingerprint out of band and run pacsdeck fleet trust --replace")


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Unknown host keys are refused before authentication, carrying what the trust step needs."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def missing_host_key(self, client, hostname, key):
        raise HostKeyUnknown(self.host, self.port, key)


class Transport:
    """One session with one node's agent. Thread-safe: calls are serialised by a lock.

    call() connects on demand; a failed connect waits with exponential backoff before the next attempt.
    A timed-out call drops the session (a late answer would be read as the next call's), and the next
    call opens a new one.
    """

    def __init__(self, entry: NodeEntry, backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX):
        self.entry = entry
        self.call_timeout = entry.call_timeout
        self.connect_timeout = entry.connect_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._id = 0
        self._answered = False  # did the current session answer at least once (else its end is a connect failure)
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error: TransportError | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)

    # --- what subclasses provide ---------------------------------------------------------------

    def _connected(self) -> bool:
        raise NotImplementedError

    def _open(self) -> None:
        """Start a session or raise TransportError."""
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _recv_line(self, deadline: float) -> bytes | None:
        """One line, None at EOF, socket.timeout past the deadline."""
        raise NotImplementedError

    def _drop(self) -> None:
        """End the session and any connection under it."""
        raise NotImplementedError

    def _drop_session(self) -> None:
        """End the session but keep a connection that can carry the next one (SSH)."""
        self._drop()

    def _ended(self) -> str:
        """Why the session ended, for the reason line."""
        return "the agent closed the connection"

    # --- the interface -------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, timeout: float | None = None):
        """The result; agent.protocol.RPCError for an agent error, TransportError for anything else."""
        timeout = float(timeout if timeout is not None else self.call_timeout)
        if not self._lock.acquire(timeout=timeout + self.connect_timeout):
            raise TransportError(f"busy: an earlier call to {self.entry.name} has not finished")
        try:
            if self._closed:
                raise TransportError("transport closed")
            if not self._connected():
                self._connect()
            self._id += 1
            req_id = self._id
            try:
                self._send(encode(request(method, params, id=req_id)))
            except (OSError, EOFError, paramiko.SSHException) as err:
                reason = f"{self._ended()} (sending failed: {_why(err)})"
                self._session_failed(reason)
                raise TransportError(reason) from None
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self._recv_line(deadline)
                except TimeoutError:
                    self._drop_session()
                    raise TransportError(f"{method}: no answer within {timeout:g} s") from None
                except (OSError, EOFError, paramiko.SSHException) as err:
                    reason = f"connection lost: {_why(err)}"
                    self._session_failed(reason)
                    raise TransportError(reason) from None
                if line is None:
                    reason = self._ended()
                    self._session_failed(reason)
                    raise TransportError(reason)
                if not line.strip():
                    continue
                try:
                    response = decode_line(line)
                except RPCError:
                    reason = f"the agent answered something that is not JSON-RPC: {_quote(line)}"
                    self._session_failed(reason)  # e.g. a login banner: the next session would say the same
                    raise TransportError(reason) from None
                if not isinstance(response, dict) or not ("result" in response or "error" in response):
                    reason = f"the agent answered something that is not a JSON-RPC response: {_quote(line)}"
                    self._session_failed(reason)
                    raise TransportError(reason)
                rid = response.get("id")
                if rid == req_id or (rid is None and "error" in response):
                    self._answered = True
                    return unwrap(response)
                # An answer to an earlier request (cannot normally happen: a timeout drops the session).
        finally:
            self._lock.release()

    def close(self) -> None:
        """End the session; safe from any thread, also while a call waits (that call then fails)."""
        self._closed = True
        self._drop()

    def reset_backoff(self) -> None:
        """Try again on the next call (e.g. just after the operator trusted the host key)."""
        self._retry_at = 0.0
        self._backoff = 0.0

    def _keep_stderr(self, line: str) -> None:
        if line.strip() and not _ROUTINE.match(line):
            self._stderr.append(line.rstrip())

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    # --- connect, backoff ----------------------------------------------------------------------

    def _connect(self) -> None:
        now = time.monotonic()
        if now < self._retry_at and not self._retry_now():
            last = self._last_error
            if isinstance(last, (HostKeyUnknown, HostKeyChanged)):
                raise last  # the same refusal, with what the trust step needs
            raise TransportError(f"{last.reason if last else 'not connected'} "
                                 f"(next attempt in {self._retry_at - now:.0f} s)")
        try:
            self._answered = False
            self._open()
        except TransportError as err:
            self._connect_failed(err)
            raise
        self._backoff = 0.0
        self._last_error = None

    def _retry_now(self) -> bool:
        return False

    def _connect_failed(self, err: TransportError) -> None:
        self._backoff = min(self._backoff_max, max(self._backoff_initial, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        self._last_error = err

    def _session_failed(self, reason: str) -> None:
        answered = self._answered
        self._drop_session()
        if not answered:  # it died before answering anything: as good as a failed connect
            self._connect_failed(TransportError(reason))


def _quote(line: bytes) -> str:
    return repr(line[:80].decode("utf-8", "replace").rstrip())


def _why(err: BaseException) -> str:
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError) and err.errors:
        err = next(iter(err.errors.values()))  # one address on loopback or a named host: its own error
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


# --- local ----------------------------------------------------------------------------------------


def local_command(entry: NodeEntry) -> list[str]:
    """argv of the local agent: the default command runs the `pacsdeck` installed next to this Python."""
    argv = list(entry.agent_command)
    if tuple(argv) == DEFAULT_AGENT_COMMAND:
        beside = Path(sys.executable).parent / "pacsdeck"
        if beside.exists():
            argv[0] = str(beside)
        elif shutil.which("pacsdeck") is None:
            argv = [sys.executable, "-m", "pacsdeck.cli", *argv[1:]]
    if entry.config:
        argv += ["--config", entry.config]
    return argv


class LocalTransport(Transport):
    """`pacsdeck agent stdio` as a child process on pipes; restarted on the next call after it dies."""

    def __init__(self, entry: NodeEntry, **kw):
        super().__init__(entry, **kw)
        self.argv = local_command(entry)
        self._proc: subprocess.Popen | None = None
        self._lines = None  # queue.Queue of stdout lines of the current process
        self._err_reader: threading.Thread | None = None

    def _connected(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _open(self) -> None:
        import queue

        self._drop()
        try:
            # Its own session: Ctrl-C in the console's terminal is for the console, not its agents.
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        except OSError as err:
            raise TransportError(f"cannot start {self.argv[0]}: {_why(err)}") from None
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines.put), daemon=True,
                         name=f"agent-out-{self.entry.name}").start()
        err_reader = threading.Thread(target=_pump, args=(proc.stderr, self._stderr_line), daemon=True,
                                      name=f"agent-err-{self.entry.name}")
        err_reader.start()
        self._proc, self._lines, self._err_reader = proc, lines, err_reader

    @property
    def pid(self) -> int | None:
        """The running agent's PID (None between sessions)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _stderr_line(self, line: bytes | None) -> None:
        if line:
            self._keep_stderr(line.decode("utf-8", "replace"))

    def _send(self, data: bytes) -> None:
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _recv_line(self, deadline: float) -> bytes | None:
        import queue

        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError() from None

    def _ended(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._err_reader.join(timeout=1)  # its last words, before they are quoted
        last = next((line for line in reversed(self._stderr) if line.strip()), "")
        how = f"the agent exited with code {code}" if code is not None and code >= 0 else \
            f"the agent was killed by signal {-code}" if code is not None else "the agent closed its output"
        return f"{how}{': ' + last[-200:] if last else ''}"

    def _drop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # our own child, by PID
            proc.wait()


def _pump(stream, put) -> None:
    """Forward lines of a child's pipe until EOF (or a line over MAX_ANSWER_BYTES), then None."""
    try:
        while True:
            line = stream.readline(MAX_ANSWER_BYTES + 1)
            if not line or len(line) > MAX_ANSWER_BYTES:
                break
            put(line)
    except (OSError, ValueError):
        pass
    put(None)


# --- ssh ------------------------------------------------------------------------------------------


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

    def _connected(self) -> bool:
        ch = self._channel
        return ch is not None and not ch.closed and not ch.exit_status_ready() and \
            self._client is not None and self._client.get_transport() is not None and \
            self._client.get_transport().is_active()

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
        kw = dict(key_filename=str(e.key), allow_agent=False, look_for_keys=False) if e.key else \
            dict(allow_agent=True, look_for_keys=True)
        try:
            sock = tcp.connect(e.host, e.port, t)  # paramiko's own lookup would have no timeout
        except tcp.LookupFailed as err:
            client.close()
            raise TransportError(str(err)) from None
        except (TimeoutError, socket.timeout):
            client.close()
            raise TransportError(f"timed out connecting to {pattern} after {t:g} s") from None
        except OSError as err:
            client.close()
            raise TransportError(f"cannot connect to {pattern}: {_why(err)}") from None
        try:
            client.connect(e.host, port=e.port, username=e.user or getpass.getuser(), timeout=t, banner_timeout=t,
                           auth_timeout=t, channel_timeout=t, sock=sock, **kw)
        except HostKeyUnknown:
            client.close()
            raise
        except paramiko.BadHostKeyException as err:
            client.close()
            expected = err.expected_key or next(iter(pinned.values()), None)
            raise HostKeyChanged(e.host, e.port, err.key,
                                 fingerprint(expected) if expected is not None else "?") from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise TransportError(f"key file {e.key} is passphrase-protected: load it into ssh-agent and "
                                 "leave `key:` unset for this node") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(f"authentication failed for {e.user or getpass.getuser()}@{e.host}"
                                 f"{' with ' + str(e.key) if e.key else ''}: is the key in the node's "
                                 "authorized_keys (users.add with ssh_keys)?") from None
        except TimeoutError:
            client.close()
            raise TransportError(f"timed out connecting to {pattern} after {t:g} s") from None
        except FileNotFoundError as err:
            client.close()
            raise TransportError(f"cannot read key file {err.filename or e.key}") from None
        except paramiko.SSHException as err:
            client.close()
            if "banner" in str(err) or "No existing session" in str(err):  # paramiko's words when no SSH came
                raise TransportError(f"{pattern} accepts connections but does not answer as an SSH server "
                                     f"(no SSH banner within {t:g} s): wrong port?") from None
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
                return f"the agent on {where} exited with code {ch.recv_exit_status()}" + \
                    (f": {last[-200:]}" if last else "")
            if client is not None and client.get_transport() is not None and client.get_transport().is_active():
                return f"the agent on {where} ended without an exit status (killed?)" + \
                    (f": {last[-200:]}" if last else "")
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


def open_transport(entry: NodeEntry, known_hosts: KnownHosts, **kw) -> Transport:
    """The transport for one fleet entry; nothing is started or connected until the first call."""
    if entry.transport == LOCAL:
        return LocalTransport(entry, **kw)
    return SSHTransport(entry, known_hosts, **kw)

