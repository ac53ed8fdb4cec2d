"""The base of a node-screen tab that manages something: its own agent calls, its own keys, its note line."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from ..results import read_answer


class NodePane(Vertical):
    """A tab of the node screen. The screen asks the `DETAILS` calls on every refresh and hands each answer
    to `show_detail()` (attributes down); a change made here posts `Changed` up and the screen refreshes.

    Keys live in the pane's own BINDINGS: they act only while the focus is inside it, which the screen
    gives to `FOCUS` when the tab opens. Actions named in `MUTATING` are hidden and refused in a read-only
    console; the app's call_node refuses them too, and the agent's own refusals come back as messages."""

    TAB: ClassVar[str] = ""  # the tab's id (TabPane id)
    TITLE: ClassVar[str] = ""  # the tab's label
    DETAILS: ClassVar[dict[str, dict]] = {}  # read-only calls: method -> params
    MUTATING: ClassVar[frozenset[str]] = frozenset()  # actions that change the node
    FOCUS: ClassVar[str | None] = None  # selector of the widget that takes the focus when the tab opens

    class Changed(Message):
        """Something was added, changed or removed on this node: the screen refreshes what it shows."""

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(**kw)
        self.node_name = node_name
        self.readonly = readonly  # started --readonly: the mutating buttons are never built

    def show_detail(self, method: str, result, error) -> None:
        """One of DETAILS answered: `result` typed (console.results), or `error`."""

    def check_action(self, action: str, parameters) -> bool | None:
        return not (action in self.MUTATING and self.app.readonly)

    def ask(self, method: str, params: dict, done: Callable, *, read_only: bool = False) -> None:
        """One agent call through the app's door; done(result, error) with the typed result."""
        self.app.call_node(
            self.node_name,
            method,
            params,
            lambda answer, error: done(*read_answer(method, answer, error)),
            owner=self,
            read_only=read_only,
        )

    def note(self, line: str, kind: str = "") -> None:
        """The pane's one-line status under its title (the widget with class `pane-note`)."""
        notes = self.query(".pane-note")
        if notes:
            note = notes.first(Static)
            note.update(Text(line))
            note.set_classes(f"pane-note {kind}".strip())  # ok / error: coloured in app.tcss

    def refused(self, line: str) -> None:
        self.note(line, "error")
        self.notify(line, severity="error")

    def done(self, line: str) -> None:
        """A change went through: say so, and have the screen refresh."""
        self.note(line, "ok")
        self.notify(line)
        self.post_message(self.Changed())
