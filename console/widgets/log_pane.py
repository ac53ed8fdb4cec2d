"""The Log tab: the end of the node's log (logs.tail), filtered by level and followed live while it is shown."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import RichLog, Static

from ..results import LogLine, LogTail, failure
from .node_pane import NodePane

# `l` cycles the minimum level shown; None is every line, DEBUG and tracebacks included.
LEVELS: tuple[str | None, ...] = (None, "INFO", "WARNING", "ERROR")
LINES = 200  # asked for when the tab opens or the level changes
KEEP = 2000  # lines the pane holds; older ones scroll away
# Following is a short, non-blocking logs.tail every second that goes on from the last answer (`after` in
# node.log, `after_cursor` in the journal), only while the tab is on screen. Not a blocking `follow` call: the
# node's transport serialises its calls, so a 30 s long poll would hold up the poll and every action on that
# node; and not a second transport of its own: one more agent process or SSH channel per open Log tab, to be
# closed on every way out. A timer of the pane dies with it, so leaving the screen (or quitting) stops it.
FOLLOW_EVERY = 1.0
QUIET_AFTER_ERROR = 5  # follow ticks skipped after a failed call: a node with no log is asked every 5 s, not 1 s
# Lines in a RichLog are renderables, not widgets: they cannot take CSS classes, so the levels' styles are here.
LEVEL_STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold reverse red"}


def render(line: LogLine) -> Text:
    """`2026-12-08 03:07:00Z WARNING  storage.dimse: message`; a line out of the format indented under its record."""
    if line.level is None:
        return Text.assemble(" " * 30, line.message, style="dim" if line.time is None else "")
    when = (line.time or "")[:19].replace("T", " ") + "Z" if line.time else " " * 20
    style = LEVEL_STYLES.get(line.level, "")
    return Text.assemble(
        (when, "dim"), " ", (f"{line.level:<8}", style), " ", (f"{line.logger or ''}: ", "bold"), (line.message, style)
    )


def level_label(level: str | None) -> str:
    return "all" if level is None else f"{level.lower()} and above"


class LogPane(NodePane):
    """logs.tail: the newest lines of node.log or of the unit's journal; `l` level, `f` follow."""

    TAB = "log"
    TITLE = "Log"
    FOCUS = "#log-lines"
    BINDINGS = [
        Binding("l", "cycle_level", "Level"),
        Binding("f", "toggle_follow", "Follow"),
    ]

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(node_name, readonly=readonly, **kw)
        self.level: str | None = None
        self.following = True
        self.position: dict | None = None  # params that go on from the last lines shown; None: a fresh tail
        self.asking = False  # a logs.tail is out: never two at once on the node's transport
        self.calls = 0  # logs.tail calls sent
        self.tail: LogTail | None = None  # the last answer
        self.count = 0  # lines written since the last fresh tail
        self._round = 0  # a level change starts afresh: an answer asked before it is dropped
        self._quiet = 0  # follow ticks still to skip after an error

    def compose(self) -> ComposeResult:
        yield Static(id="log-note", classes="pane-note")
        yield RichLog(id="log-lines", max_lines=KEEP, wrap=True, markup=False, highlight=False)

    def on_mount(self) -> None:
        self._say()
        self.set_interval(FOLLOW_EVERY, self._tick)

    def on_show(self) -> None:
        self.poll()  # the tab opened: its lines at once, not a second later

    def _tick(self) -> None:
        if self._quiet > 0:
            self._quiet -= 1
            return
        self.poll()

    # --- data in ----------------------------------------------------------------------------------

    def shown(self) -> bool:
        """On screen: the node screen is current (or under a dialog) and this tab is the open one."""
        return self.screen.is_current and all(w.display for w in self.ancestors_with_self if isinstance(w, Widget))

    def poll(self) -> None:
        if self.asking or not self.shown():
            return
        if self.position is not None and (not self.following or self.app.fixed):
            return  # paused; or fixed snapshots, whose one answer never changes
        params = {"lines": LINES, **(self.position or {})}
        if self.level is not None:
            params["level"] = self.level
        self.asking, self.calls = True, self.calls + 1
        asked = self._round
        self.ask("logs.tail", params, lambda result, error: self._answered(asked, result, error), read_only=True)

    def _answered(self, asked: int, result: LogTail | None, error) -> None:
        self.asking = False
        if asked != self._round:
            self.poll()  # the level changed meanwhile: ask again, afresh
            return
        if error is not None:
            self.note(failure("logs.tail", error), "error")  # kept where it was: a later poll tries again
            self._quiet = QUIET_AFTER_ERROR
            return
        fresh = self.position is None
        self.count = (0 if fresh else self.count) + len(result.lines)
        self.tail, self.position = result, result.after()
        self._write(result.lines, fresh)
        self._say()

    def _write(self, lines: tuple[LogLine, ...], fresh: bool) -> None:
        """Wrapped at the pane's width: left to itself RichLog measures against the app console's (80 columns
        in tests), so before the first layout gives the pane a width the lines wait for it."""
        log = self.query_one("#log-lines", RichLog)
        width = log.scrollable_content_region.width
        if not width:
            self.call_after_refresh(self._write, lines, fresh)
            return
        if fresh:
            log.clear()
        for line in lines:
            log.write(render(line), width=width)

    def _say(self) -> None:
        if self.tail is None:
            where = "reading the log…"
        else:
            where = f"journal of {self.tail.path}" if self.tail.source == "journal" else self.tail.path
        if self.tail is not None and self.count == 0:
            where += "   nothing at this level yet" if self.level else "   empty"
        follow = "following" if self.following else "paused"
        self.note(f"{where}   level: {level_label(self.level)} (l)   {follow} (f)")

    # --- actions ----------------------------------------------------------------------------------

    def action_cycle_level(self) -> None:
        self.level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]
        self._round += 1
        self.position = None
        self.query_one("#log-lines", RichLog).clear()
        self.count = 0
        self._say()
        self.poll()

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        self._say()
        self.poll()  # back on: what was written meanwhile, at once
