"""logs.tail: the end of the node's log (node.log in the node folder, or its unit's journal), parsed, filtered,
optionally followed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from . import journal, logtail
from . import validate as v
from .protocol import UNAVAILABLE, RPCError, iso_time
from .registry import Method, Param
from .schema import BOOL, INT, STR, TIME, Arr, Enum, Null, Obj

LOG_NAME = "node.log"  # where `pacsdeck up` (and the test harness) send the node's stderr
DEFAULT_LINES, MAX_LINES = 200, 5000
MAX_FOLLOW = 30.0  # seconds: one call is a long poll, not a stream; call again with `after` to go on


def _since(value) -> float | None:
    """ISO 8601 (no offset: UTC, like every time on the wire) or seconds ago -> epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise v.invalid("since", "seconds ago must not be negative")
        return time.time() - value
    if isinstance(value, str):
        v.safe_text(value, "since", max_len=40, allow_punctuation=True)
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise v.invalid("since", "an ISO 8601 time (2026-01-31T08:00:00Z) or seconds ago (e.g. 600)") from None
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    raise v.invalid("since", f"an ISO 8601 time or seconds ago, got {type(value).__name__}")


def _level(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in logtail.LEVELS:
        raise v.invalid("level", f"one of {', '.join(logtail.LEVELS)}")
    return value.upper()


def _follow(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_FOLLOW:
        raise v.invalid("follow", f"seconds to wait for new lines, from 0 to {MAX_FOLLOW:g}")
    return float(value)


def _after(value) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise v.invalid("after", "a byte offset: the `end` of a previous logs.tail result")
    return value


def _after_cursor(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise v.invalid("after_cursor", "a journal cursor: the `cursor` of a previous logs.tail result")
    return v.safe_text(value, "after_cursor", max_len=512, allow_punctuation=True)


def _line(x: logtail.Line) -> dict:
    return {"time": iso_time(x.time), "level": x.level, "logger": x.logger, "message": x.message}


def tail(ctx, params: dict) -> dict:
    node = ctx.require_node()
    lines = v.limit(params.get("lines"), "lines", default=DEFAULT_LINES, maximum=MAX_LINES)
    since, level = _since(params.get("since")), _level(params.get("level"))
    follow, after = _follow(params.get("follow")), _after(params.get("after"))
    after_cursor = _after_cursor(params.get("after_cursor"))
    cfg = node.config
    path = cfg.node_dir / LOG_NAME
    # An explicit unit wins; else node.log (`pacsdeck up`, the tests); else the unit a service install names.
    unit = cfg.log.journal_unit or (None if path.exists() else journal.default_unit(cfg.node_dir))
    if unit is not None:
        return _from_journal(
            cfg,
            unit,
            explicit=bool(cfg.log.journal_unit),
            path=path,
            lines=lines,
            since=since,
            level=level,
            follow=follow,
            after_cursor=after_cursor,
        )
    try:
        size = logtail.size(path)
    except FileNotFoundError:
        raise _nowhere(cfg, path, None, "it went away") from None
    except OSError as err:
        raise RPCError(UNAVAILABLE, f"cannot read {path}: {err.strerror}", {"path": str(path)}) from None
    start = after if after <= size else 0  # an offset past the end: the file was rotated or truncated
    found = logtail.read_tail(path, lines, since=since, level=level, start=start, end=size)
    kept, end, truncated = found.lines, found.end, found.truncated
    deadline = time.monotonic() + follow
    # Following: wait for lines after the end, and return as soon as some pass the filters.
    while follow and (left := deadline - time.monotonic()) > 0:
        if not logtail.wait_for_growth(path, end, left):
            break
        more = logtail.read_tail(path, lines, since=since, level=level, start=end, end=logtail.size(path))
        kept, end = (kept + more.lines)[-lines:], more.end
        truncated = truncated or more.truncated
        if more.lines:
            break
    return {
        "lines": [_line(x) for x in kept],
        "source": "file",
        "path": str(path),
        "end": end,
        "cursor": None,
        "truncated": truncated,
    }


def _from_journal(cfg, unit: str, *, explicit: bool, path, lines, since, level, follow, after_cursor) -> dict:
    namespace = cfg.log.journal_namespace
    try:
        if not explicit and after_cursor is None and not journal.has_entries(unit, namespace):
            raise _nowhere(cfg, path, unit, "it has no entries")
        found = journal.tail(unit, namespace, lines, since=since, level=level, follow=follow, after_cursor=after_cursor)
    except journal.JournalError as err:
        if not explicit:
            raise _nowhere(cfg, path, unit, err.reason) from None
        raise RPCError(
            UNAVAILABLE, f"cannot read the journal of {unit} (log.journal_unit): {err.reason}", {"unit": unit}
        ) from None
    return {
        "lines": [_line(x) for x in found.lines],
        "source": "journal",
        "path": unit,
        "end": 0,
        "cursor": found.cursor,
        "truncated": found.truncated,
    }


def _nowhere(cfg, path, unit: str | None, why: str) -> RPCError:
    """Neither node.log nor a journal: say where each was looked for and how to point logs.tail at the log."""
    unit = unit or journal.default_unit(cfg.node_dir)
    return RPCError(
        UNAVAILABLE,
        f"no log to read: no {LOG_NAME} in {cfg.node_dir} (`pacsdeck up` and the tests write {path}), and "
        f"no journal of {unit} ({why}). A node run by systemd under another unit: set log.journal_unit in "
        f"{cfg.path}; the account the agent runs as reads the system journal only in the systemd-journal group "
        f"(check with `journalctl -u {unit}`)",
        {"path": str(path), "unit": unit},
    )


LINE = Obj(
    {
        # level and logger null for a line out of the format (a traceback); time too, in node.log (the journal
        # stamps every line)
        "time": Null(TIME),
        "level": Null(Enum(*logtail.LEVELS)),
        "logger": Null(STR),
        "message": STR,
    }
)

METHODS = (
    Method(
        "logs.tail",
        tail,
        "The last lines of the node's log (node.log in the node folder, else its unit's journal), oldest first; "
        "optionally wait for more",
        {
            "lines": Param("integer", f"how many (1-{MAX_LINES}, default {DEFAULT_LINES})"),
            "since": Param(
                "string",
                "only lines from then on: ISO 8601 (UTC unless an offset is given) or seconds ago",
                extra={"type": ["string", "number"]},
            ),
            "level": Param("string", "minimum level", extra={"enum": list(logtail.LEVELS)}),
            "follow": Param("number", f"seconds (0-{MAX_FOLLOW:g}, default 0) to wait for lines after the end"),
            "after": Param("integer", "node.log: only lines after this byte offset, a previous result's `end`"),
            "after_cursor": Param("string", "journal: only entries after this cursor, a previous result's `cursor`"),
        },
        result=Obj(
            {
                "lines": Arr(LINE),
                "source": Enum("file", "journal"),  # node.log, or the unit's journal (log.journal_unit)
                "path": STR,  # the file read, or the unit whose journal was read
                "end": INT,  # file: the byte offset to pass as `after` next time (journal: 0)
                "cursor": Null(STR),  # journal: the cursor to pass as `after_cursor` next time (file: null)
                "truncated": BOOL,
            }
        ),
    ),
)
