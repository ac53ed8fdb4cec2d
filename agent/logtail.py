"""The end of a node log file: read backwards from the end in blocks, parse the CLI's log format, filter."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# pacsdeck/cli.py's format, `%(asctime)s %(levelname)s %(name)s: %(message)s`; asctime is local time.
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+?): (.*)$")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}

BLOCK = 64 * 1024
# At most this much of the file is read per call, whatever `lines` asks: 5,000 lines of a traceback-heavy
# log are ~1 MiB; a file of one endless line must not be loaded whole either.
MAX_SCAN = 8 * 1024 * 1024
MAX_MESSAGE = 8192  # characters per line on the wire
_FOLLOW_POLL = 0.2  # seconds between size checks while following: stdlib has no inotify


@dataclass(frozen=True)
class Line:
    """One line of the log; a line not in the format (a traceback, a third-party print) has only `message`."""

    time: float | None  # epoch seconds
    level: str | None
    logger: str | None
    message: str


@dataclass(frozen=True)
class Tail:
    lines: list[Line]
    end: int  # byte offset just after the last complete line read: where a next read starts
    truncated: bool  # older lines (after `start`, matching) may exist that were not returned


def parse(text: str) -> Line:
    m = _RECORD.match(text)
    if m is None:
        return Line(None, None, None, text[:MAX_MESSAGE])
    stamp, millis, level, logger, message = m.groups()
    try:
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
    except ValueError:
        return Line(None, None, None, text[:MAX_MESSAGE])
    return Line(at, level, logger, message[:MAX_MESSAGE])


def _complete_end(f, size: int) -> int:
    """The offset after the last newline at or before `size`: a line still being written is left for later."""
    pos = size
    while pos > 0:
        step = min(BLOCK, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
        if size - pos >= MAX_SCAN:
            return size  # one endless line: take it as it is
    return 0


def _lines_backwards(f, start: int, end: int):
    """(text, offset) of each complete line in [start, end), newest first, reading at most MAX_SCAN bytes;
    then (None, offset) if it stopped before `start`."""
    pos, rest = end, b""
    while pos > start:
        if end - pos >= MAX_SCAN:
            yield None, pos
            return
        step = min(BLOCK, pos - start)
        f.seek(pos - step)
        rest = f.read(step) + rest
        pos -= step
        parts = rest.split(b"\n")
        rest = parts[0]  # maybe cut at the block boundary: completed by the next block
        for offset, raw in _offsets(parts, pos) if len(parts) > 1 else ():
            yield raw.decode("utf-8", "replace"), offset
    if rest:
        yield rest.decode("utf-8", "replace"), start


def _offsets(parts: list[bytes], pos: int):
    """The whole lines of one split (all but the first part), newest first, with their start offsets.
    The last part is what followed the final newline: empty at `end` (complete lines only)."""
    offset = pos + len(parts[0]) + 1
    found = []
    for raw in parts[1:]:
        if raw:  # the empty part after the final newline, or an empty line
            found.append((offset, raw))
        offset += len(raw) + 1
    for offset, raw in reversed(found):
        yield offset, raw


def read_tail(
    path: Path, lines: int, *, since: float | None = None, level: str | None = None, start: int = 0, end: int
) -> Tail:
    """The last `lines` lines in [start, end) at `level` or above and not older than `since`.

    A line out of the format (a traceback) goes with the record before it, so it is kept exactly when
    that record is. The log is in time order: the first record older than `since` ends the read.
    """
    floor = _RANK[level] if level else 0
    kept: list[Line] = []
    pending: list[Line] = []  # continuation lines seen (newest first) whose record is further back
    truncated = False
    with open(path, "rb") as f:
        end = _complete_end(f, end)
        for text, offset in _lines_backwards(f, start, end):
            if text is None:
                truncated = True
                break
            line = parse(text)
            if line.time is None:
                pending.append(line)
                continue
            if since is not None and line.time < since:
                pending = []
                break
            if _RANK[line.level] >= floor:
                kept.extend(pending)
                kept.append(line)
            pending = []
            if len(kept) >= lines:
                truncated = offset > start
                break
        if pending and not level and since is None:
            kept.extend(pending)  # the file starts inside a record (rotated, or cut at MAX_SCAN)
    kept = kept[:lines]
    kept.reverse()
    return Tail(kept, end, truncated)


def size(path: Path) -> int:
    return os.stat(path).st_size


def wait_for_growth(path: Path, offset: int, seconds: float) -> bool:
    """Block until the file holds a complete line after `offset`, or `seconds` passed: True if it does.
    A bounded wait between size checks (no inotify in the stdlib), never a busy loop."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()  # never set: its wait() is the interval, interruptible by nothing
    while True:
        if _has_line_after(path, offset):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        pause.wait(min(_FOLLOW_POLL, left))


def _has_line_after(path: Path, offset: int) -> bool:
    try:
        now = size(path)
    except OSError:
        return False
    if now <= offset:
        return False
    with open(path, "rb") as f:
        return _complete_end(f, now) > offset
