"""The local transport: `pacsdeck agent stdio` as a child process on pipes, restarted after it dies."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..inventory import DEFAULT_AGENT_COMMAND, NodeEntry
from .base import MAX_ANSWER_BYTES, Transport, TransportError, why


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
        self._drop()
        try:
            # Its own session: Ctrl-C in the console's terminal is for the console, not its agents.
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            raise TransportError(f"cannot start {self.argv[0]}: {why(err)}") from None
        lines: queue.Queue = queue.Queue()
        threading.Thread(
            target=_pump, args=(proc.stdout, lines.put), daemon=True, name=f"agent-out-{self.entry.name}"
        ).start()
        err_reader = threading.Thread(
            target=_pump, args=(proc.stderr, self._stderr_line), daemon=True, name=f"agent-err-{self.entry.name}"
        )
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
        how = (
            f"the agent exited with code {code}"
            if code is not None and code >= 0
            else f"the agent was killed by signal {-code}"
            if code is not None
            else "the agent closed its output"
        )
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
