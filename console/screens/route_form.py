"""The form to add a route: a name, match rows, destinations ticked among the node's AEs; a RouteDraft out."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Input, Label, Static

from ..results import Aet
from ..route_edits import CALLING_AE, RouteDraft, can_receive
from .form import FormScreen

MATCH_ROWS = 3  # empty rows to type into; a draft with more keys gets one more than it has
KEY_HINT = f"{CALLING_AE} or a DICOM keyword"


class RouteFormScreen(FormScreen):
    """Dismisses with the draft on Add (or Enter in a field), None on Cancel or Esc.

    `aets` are the node's registered AEs: those with host and port are destinations to tick, the others
    are shown disabled ("no address"). `error` is what the agent said of the last attempt, `error_field`
    the field it named (name, match, match.<key>, destinations, destinations[i]): marked and focused."""

    def __init__(
        self,
        node: str,
        aets: Sequence[Aet],
        draft: RouteDraft | None = None,
        *,
        error: str | None = None,
        error_field: str | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.aets = tuple(aets)
        self.draft = draft or RouteDraft()
        self.error = error
        self.error_field = error_field
        self.rows = max(MATCH_ROWS, len(self.draft.match) + 1)

    def compose(self) -> ComposeResult:
        d = self.draft
        with Vertical(classes="dialog route-form"):
            yield Label(f"Add a route on {self.node}", classes="question")
            yield Static(
                Text(
                    "Every new instance that matches all rows is forwarded to the ticked AEs. Patterns take * and ?; "
                    "no row at all matches everything."
                ),
                id="route-help",
            )
            shown = "form-error" + ("" if self.error else " empty")
            yield Static(Text(self.error or ""), id="form-error", classes=shown)
            with Horizontal(classes="field"):
                yield Label("name", classes="field-label")
                yield Input(d.name, id="name", max_length=64, placeholder="letters, digits, _ . -")
            for i in range(self.rows):
                key, pattern = d.match[i] if i < len(d.match) else ("", "")
                with Horizontal(classes="field match-row"):
                    yield Label("match" if i == 0 else "", classes="field-label")
                    yield Input(key, id=f"key-{i}", placeholder=KEY_HINT, classes="match-key")
                    yield Input(pattern, id=f"pattern-{i}", placeholder="e.g. CT or CT*", classes="match-pattern")
            with Horizontal(classes="field"):
                yield Label("destinations", classes="field-label")
                with VerticalScroll(id="destinations", can_focus=False):  # Tab goes from box to box
                    if not self.aets:
                        yield Static("no AE titles registered: add one in the AE titles tab first", classes="dest-none")
                    for i, aet in enumerate(self.aets):
                        if can_receive(aet):
                            label = f"{aet.ae_title}  {aet.host}:{aet.port}"
                            yield Checkbox(label, aet.ae_title in d.destinations, id=f"dest-{i}")
                        else:
                            yield Checkbox(f"{aet.ae_title}  no address", False, id=f"dest-{i}", disabled=True)
            with Horizontal(classes="buttons"):
                yield Button("Add route", id="save", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        field = self._field_of(self.error_field) if self.error_field else None
        if field is not None:
            self._mark(field)
        else:
            self.query_one("#name", Input).focus()

    def _field_of(self, name: str) -> str | None:
        """The widget selector of a field the agent named, or None."""
        if name == "name":
            return "#name"
        if name.startswith("destinations"):
            return "#destinations"  # marked; the focus goes to its first box (see _mark)
        if name == "match" or name.startswith("match."):
            key = name.partition(".")[2]
            rows = [k for k, _ in self.draft.match]
            return f"#key-{rows.index(key)}" if key in rows else "#key-0"
        return None

    def _read(self) -> RouteDraft | None:
        """The fields as a draft, or None after showing what is missing (the agent checks the rest)."""
        name = self.query_one("#name", Input).value.strip()
        if not name:
            return self._invalid("#name", "name: give the route a name")
        match: list[tuple[str, str]] = []
        for i in range(self.rows):
            key = self.query_one(f"#key-{i}", Input).value.strip()
            pattern = self.query_one(f"#pattern-{i}", Input).value.strip()
            if not key and not pattern:
                continue  # an empty row is no condition
            if not key:
                return self._invalid(f"#key-{i}", f"match: a pattern needs a key ({KEY_HINT})")
            if not pattern:
                return self._invalid(f"#pattern-{i}", f"match.{key}: give a pattern (* for any value)")
            match.append((key, pattern))
        chosen = tuple(aet.ae_title for i, aet in enumerate(self.aets) if self.query_one(f"#dest-{i}", Checkbox).value)
        if not chosen:
            return self._invalid("#destinations", "destinations: tick at least one AE title with an address")
        return RouteDraft(name=name, match=tuple(match), destinations=chosen)

    def _mark(self, selector: str) -> None:
        """The field marked invalid and focused (for the destinations: their first box that can be ticked)."""
        widget = self.query_one(selector)
        widget.add_class("invalid")
        boxes = [b for b in widget.query(Checkbox) if not b.disabled] if selector == "#destinations" else []
        (boxes[0] if boxes else widget).focus()
