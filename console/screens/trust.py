"""The explicit trust step for an SSH host key: host, port, key type and SHA256 fingerprint, Trust or Cancel."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


@dataclass(frozen=True)
class HostKeyOffer:
    """What the server offered and what pacsdeck's known_hosts holds for it (None: nothing yet)."""

    node: str
    host: str
    port: int
    key_type: str
    fingerprint: str
    expected_fingerprint: str | None = None

    @property
    def changed(self) -> bool:
        return self.expected_fingerprint is not None and self.expected_fingerprint != self.fingerprint


class TrustScreen(ModalScreen[bool]):
    """Dismisses with True only when Trust is pressed; a changed key offers no Trust at all."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel")]

    def __init__(self, offer: HostKeyOffer) -> None:
        super().__init__()
        self.offer = offer

    def compose(self) -> ComposeResult:
        o = self.offer
        with Vertical(classes="dialog" + (" changed" if o.changed else "")):
            if o.changed:
                yield Label("HOST KEY CHANGED — refused", classes="warning")
                yield Static(
                    Text(
                        f"The key {o.host}:{o.port} offers is not the one pinned for node {o.node}. Someone may be "
                        "intercepting the connection, or the server was reinstalled. Check with the site before "
                        "trusting anything. If the new key is genuine, replace the pinned one from a shell with "
                        f"`pacsdeck fleet trust {o.node} --replace`."
                    ),
                    id="key-warning",
                )
            else:
                yield Label(f"Trust the SSH host key of {o.node}?", classes="question")
                yield Static(
                    Text(
                        "pacsdeck has never seen this host. Compare the fingerprint with the one the "
                        "server's administrator reads from `ssh-keygen -lf` on the host key."
                    )
                )
            yield Static(
                Text(
                    f"host         {o.host}\nport         {o.port}\nkey type     {o.key_type}\n"
                    f"fingerprint  {o.fingerprint}" + (f"\npinned       {o.expected_fingerprint}" if o.changed else "")
                ),
                id="key-facts",
            )
            with Horizontal(classes="buttons"):
                if not o.changed:
                    yield Button("Trust", id="trust", variant="warning")
                yield Button("Cancel" if not o.changed else "Close", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # trusting is never the default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "trust" and not self.offer.changed)
