"""What every transport shares: one agent session per node, call() with timeouts, reconnect backoff."""

from __future__ import annotations

import collections
import re
import socket
import threading
import time

from agent.protocol import RPCError, decode_line, encode, request, unwrap

from ..inventory import NodeEntry

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


class Refused(TransportError):
    """A refusal only the operator can end (an SSH host key not pinned, or changed): until the transport
    sees a reason to retry, the next calls raise this same error, with what the fix needs."""


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

    # What a broken session raises while sending or reading (SSH adds paramiko's own exceptions).
    _io_errors: tuple[type[BaseException], ...] = (OSError, EOFError)

    def _reason(self, err: BaseException) -> str:
        """One line for a failed send or read."""
        return why(err)

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
            except self._io_errors as err:
                reason = f"{self._ended()} (sending failed: {self._reason(err)})"
                self._session_failed(reason)
                raise TransportError(reason) from None
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self._recv_line(deadline)
                except TimeoutError:
                    self._drop_session()
                    raise TransportError(f"{method}: no answer within {timeout:g} s") from None
                except self._io_errors as err:
                    reason = f"connection lost: {self._reason(err)}"
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
            if isinstance(last, Refused):
                raise last  # the same refusal, with what the fix needs
            raise TransportError(
                f"{last.reason if last else 'not connected'} (next attempt in {self._retry_at - now:.0f} s)"
            )
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


def why(err: BaseException) -> str:
    """An OS error as the few words a reason line needs ("connection refused", "timed out")."""
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__
