"""logs.tail: the end of the node's log (node.log in the node folder), parsed, filtered, optionally followed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from . import logtail
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


def tail(ctx, params: dict) -> dict:
    node = ctx.require_node()
    lines = v.limit(params.get("lines"), "lines", default=DEFAULT_LINES, maximum=MAX_LINES)
    since, level = _since(params.get("since")), _level(params.get("level"))
    follow, after = _follow(params.get("follow")), _after(params.get("after"))
    path = node.config.node_dir / LOG_NAME
    try:
        size = logtail.size(path)
    except FileNotFoundError:
        raise RPCError(
            UNAVAILABLE,
            f"no {LOG_NAME} in {node.config.node_dir}: this node logs to the stderr of whatever started it "
            f"(`pacsdeck up` and the tests write {path}); under systemd read it with "
            "`journalctl -u <the node's unit>`",
            {"path": str(path)},
        ) from None
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
        "lines": [{"time": iso_time(x.time), "level": x.level, "logger": x.logger, "message": x.message} for x in kept],
        "path": str(path),
        "end": end,
        "truncated": truncated,
    }


LINE = Obj(
    {
        "time": Null(TIME),  # null, with level and logger, for a line out of the format (a traceback)
        "level": Null(Enum(*logtail.LEVELS)),
        "logger": Null(STR),
        "message": STR,
    }
)

METHODS = (
    Method(
        "logs.tail",
        tail,
        "The last lines of the node's log (node.log in the node folder), oldest first; optionally wait for more",
        {
            "lines": Param("integer", f"how many (1-{MAX_LINES}, default {DEFAULT_LINES})"),
            "since": Param(
                "string",
                "only lines from then on: ISO 8601 (UTC unless an offset is given) or seconds ago",
                extra={"type": ["string", "number"]},
            ),
            "level": Param("string", "minimum level", extra={"enum": list(logtail.LEVELS)}),
            "follow": Param("number", f"seconds (0-{MAX_FOLLOW:g}, default 0) to wait for lines after the end"),
            "after": Param("integer", "only lines after this byte offset: a previous result's `end`"),
        },
        result=Obj({"lines": Arr(LINE), "path": STR, "end": INT, "truncated": BOOL}),
    ),
)
