"""The node's log from the systemd journal: one unit's entries through `journalctl -o json`, as log lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import logtail

TIMEOUT = 10.0  # seconds for one journalctl run: an indexed read of one unit takes milliseconds
# Entries read when a level filter must look further back than `lines`: the node's stream lines all carry
# PRIORITY=6 (see parse_entry), so the filter is ours and journalctl cannot do it.
SCAN = 20000
# What parse_entry reads (journalctl adds __CURSOR and __REALTIME_TIMESTAMP): an entry of a service carries
# ~30 fields, and a level-filtered read goes through up to SCAN of them.
FIELDS = "MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_TRANSPORT"
FOLLOW_POLL = 0.5  # seconds between journalctl runs while following (one process each, not a busy loop)

# systemd.journal-fields(7) PRIORITY, syslog's levels, onto Python's.
PRIORITY_LEVELS = {
    "0": "CRITICAL",  # emerg
    "1": "CRITICAL",  # alert
    "2": "CRITICAL",  # crit
    "3": "ERROR",  # err
    "4": "WARNING",  # warning
    "5": "INFO",  # notice
    "6": "INFO",  # info
    "7": "DEBUG",  # debug
}
# pacsdeck/cli.py's format without the time, for a unit that drops %(asctime)s (the journal stamps each line).
_BARE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+?): (.*)$")
# systemd-escape(1) keeps these; every other byte becomes \xNN (and "/" would be "-", not in a folder name).
_UNESCAPED = re.compile(r"[A-Za-z0-9:_.]")


class JournalError(Exception):
    """journalctl could not be run or refused: `reason` is one line a person can act on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    line: logtail.Line
    cursor: str  # __CURSOR: where the next read starts (--after-cursor)


@dataclass(frozen=True)
class Tail:
    lines: list[logtail.Line]
    cursor: str | None  # the last entry read (kept or not); None: the unit has none yet
    truncated: bool  # older (or, after a cursor, newer) matching entries may exist that were not returned


def default_unit(node_dir: Path) -> str:
    """`pacsdeck-node@<folder>.service`, the folder's name escaped as systemd-escape does."""
    name = node_dir.name
    escaped = "".join(c if _UNESCAPED.match(c) else "".join(f"\\x{b:02x}" for b in c.encode()) for c in name)
    if escaped.startswith("."):
        escaped = "\\x2e" + escaped[1:]
    return f"pacsdeck-node@{escaped}.service"


def command(
    unit: str, *, namespace: str | None, count: int, since: float | None = None, after_cursor: str | None = None
) -> list[str]:
    """The journalctl argument list (never a shell string). Without a cursor the newest `count` entries
    (read newest first: -r with -n stops after them); after a cursor the first `count` following it."""
    argv = ["journalctl", f"--unit={unit}", "--output=json", f"--output-fields={FIELDS}", "--no-pager", "--all"]
    argv += ["--quiet", f"--lines={count}"]
    if namespace:
        argv.append(f"--namespace={namespace}")
    if after_cursor is not None:
        argv.append(f"--after-cursor={after_cursor}")
    else:
        argv.append("--reverse")
    if since is not None:
        argv.append(f"--since=@{since:.6f}")  # systemd.time(7): seconds since the epoch
    return argv


def run(argv: list[str], timeout: float = TIMEOUT) -> list[Entry]:
    """Run journalctl and parse its output, oldest entry first."""
    binary = shutil.which(argv[0])
    if binary is None:
        raise JournalError("journalctl is not installed here (the node is not run by systemd?)")
    try:
        proc = subprocess.run([binary, *argv[1:]], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise JournalError(f"journalctl gave no answer within {timeout:g} s") from None
    except OSError as err:
        raise JournalError(f"cannot run journalctl: {err.strerror}") from None
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise JournalError(f"journalctl failed (exit {proc.returncode}): {said[0] if said else 'no message'}")
    entries = [e for e in (parse_record(raw) for raw in proc.stdout.splitlines() if raw.strip()) if e is not None]
    if "--reverse" in argv:
        entries.reverse()
    return entries


def parse_record(raw: bytes | str) -> Entry | None:
    """One line of `journalctl -o json`; None for one that is not an entry (journalctl prints only entries)."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("__CURSOR"), str):
        return None
    return Entry(parse_entry(record), record["__CURSOR"])


def _text(value) -> str:
    """A field's value: a string, or (not UTF-8, or binary) an array of byte values; null when too big."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return ""


def parse_entry(record: dict) -> logtail.Line:
    """The node writes its own format to stderr, which journald takes line by line with PRIORITY=6 whatever
    the level: the level and logger come from the text. A stderr line out of the format (a traceback) is a
    continuation, as in node.log; an entry from elsewhere (systemd's "Started …", "Main process exited …")
    keeps its PRIORITY and SYSLOG_IDENTIFIER."""
    message = _text(record.get("MESSAGE")).rstrip("\n")
    try:
        at = int(record["__REALTIME_TIMESTAMP"]) / 1e6
    except (KeyError, TypeError, ValueError):
        at = None
    ours = logtail.parse(message)
    if ours.level is not None:
        return logtail.Line(at, ours.level, ours.logger, ours.message)
    bare = _BARE.match(message)
    if bare is not None:
        level, logger, text = bare.groups()
        return logtail.Line(at, level, logger, text[: logtail.MAX_MESSAGE])
    if record.get("_TRANSPORT") == "stdout":
        return logtail.Line(at, None, None, message[: logtail.MAX_MESSAGE])
    level = PRIORITY_LEVELS.get(str(record.get("PRIORITY", "6")), "INFO")
    logger = _text(record.get("SYSLOG_IDENTIFIER")) or None
    return logtail.Line(at, level, logger, message[: logtail.MAX_MESSAGE])


def select(lines: list[logtail.Line], count: int, level: str | None) -> tuple[list[logtail.Line], bool]:
    """The last `count` lines at `level` or above, a continuation going with the record before it (one at the
    start, whose record was not read, only when nothing is filtered); and whether more matched."""
    floor = logtail.LEVELS.index(level) if level else 0
    kept, keep = [], level is None
    for line in lines:
        if line.level is not None:
            keep = logtail.LEVELS.index(line.level) >= floor
        if keep:
            kept.append(line)
    return kept[-count:], len(kept) > count


def has_entries(unit: str, namespace: str | None) -> bool:
    """Does the journal hold anything of this unit (the node once ran under it)?"""
    return bool(run(command(unit, namespace=namespace, count=1)))


def tail(
    unit: str,
    namespace: str | None,
    lines: int,
    *,
    since: float | None,
    level: str | None,
    follow: float,
    after_cursor: str | None,
) -> Tail:
    """logs.tail from the journal: the last `lines` (or those after `after_cursor`), then, while `follow`
    seconds last, new entries as soon as some pass the filters."""
    started = time.time()
    count = lines + 1 if level is None else max(SCAN, lines + 1)  # one more than asked: were there more?
    found = run(command(unit, namespace=namespace, count=count, since=since, after_cursor=after_cursor))
    kept, more = select([e.line for e in found], lines, level)
    cursor = found[-1].cursor if found else after_cursor
    truncated = more or len(found) >= count
    deadline = time.monotonic() + follow
    pause = threading.Event()  # never set: its wait() is the interval between journalctl runs
    while follow and not kept and (left := deadline - time.monotonic()) > 0:
        pause.wait(min(FOLLOW_POLL, left))
        # Nothing read yet: what arrives from the start of this call on (the unit's first lines).
        window = since if cursor is not None else max(since or 0.0, started)
        found = run(command(unit, namespace=namespace, count=count, since=window, after_cursor=cursor))
        if found:
            kept, more = select([e.line for e in found], lines, level)
            cursor, truncated = found[-1].cursor, more or len(found) >= count
    return Tail(kept, cursor, truncated)
