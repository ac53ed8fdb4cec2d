"""The console app: one poll worker per node, the latest snapshot and history of each, screens on top."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.signal import Signal
from textual.worker import get_current_worker

from agent.protocol import UNAVAILABLE, RPCError

from .hostkeys import KnownHosts, fingerprint, scan_host_key
from .screens import rollout as rollout_screen
from .screens.fleet import FleetScreen
from .screens.help import HelpScreen
from .screens.node import MUTATING_ACTIONS, PANES, NodeScreen
from .screens.palette import FleetCommands
from .screens.trust import HostKeyOffer, TrustScreen
from .snapshot import NodeSnapshot, events, poll
from .transport import open_transport

HISTORY = 120  # polls kept per node for the sparklines


@dataclass
class NodeState:
    """What the app holds per node. `transport` is swapped (never mutated) when a host key is trusted."""

    entry: object  # console.inventory.NodeEntry
    transport: object | None = None
    snapshot: object | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    wake: threading.Event = field(default_factory=threading.Event)


class SnapshotReady(Message):
    """One poll of one node finished; posted from that node's worker thread."""

    def __init__(self, snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class PacsdeckConsole(App):
    """The fleet console. `snapshots` (with `events`) starts it on fixed data with no polling: for snapshot
    tests and demos; otherwise every node gets a transport and a poll worker."""

    CSS_PATH = "app.tcss"
    TITLE = "pacsdeck"
    COMMANDS = App.COMMANDS | {FleetCommands}
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("R", "refresh_all", "Refresh all"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, fleet, *, readonly: bool = False, snapshots=None, events=None, history=None) -> None:
        super().__init__()
        self.fleet = fleet
        self.readonly = readonly
        self.locked_readonly = readonly  # started with --readonly: the palette cannot turn actions back on
        self.fixed = snapshots is not None
        self.nodes = {entry.name: NodeState(entry) for entry in fleet.nodes}
        for snap in snapshots or ():
            self.nodes[snap.name].snapshot = snap
        for name, points in (history or {}).items():
            self.nodes[name].history.extend(points)
        self.event_log: list = list(events or [])
        self.fleet_changed: Signal[str] = Signal(self, "fleet-changed")
        self.events_changed: Signal[list] = Signal(self, "events-changed")
        self._stopping = threading.Event()
        self.known_hosts = None

    # --- start and stop ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(FleetScreen())
        if self.fixed:
            return
        # Thread workers run on the loop's default executor, which has min(32, cores + 4) threads: on
        # two cores six nodes would hold them all and every other node would wait. One poll thread
        # per node, plus room for actions, keeps a hanging node from delaying any other.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=2 * len(self.nodes) + 8, thread_name_prefix="pacsdeck-console")
        )
        self.known_hosts = KnownHosts(self.fleet.known_hosts)
        for state in self.nodes.values():
            state.transport = open_transport(state.entry, self.known_hosts)
            self.run_worker(
                lambda name=state.entry.name: self._poll_loop(name),
                thread=True,
                group=f"poll:{state.entry.name}",
                exclusive=True,
                name=f"poll {state.entry.name}",
            )

    def on_unmount(self) -> None:
        self.shutdown()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the poll loops and close every transport (in parallel, bounded: a hung one is left)."""
        self._stopping.set()
        for state in self.nodes.values():
            state.wake.set()
        closers = [
            threading.Thread(target=_close_quietly, args=(s.transport,), daemon=True)
            for s in self.nodes.values()
            if s.transport is not None
        ]
        for t in closers:
            t.start()
        deadline = time.monotonic() + timeout
        for t in closers:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- polling ----------------------------------------------------------------------------------

    def _poll_loop(self, name: str) -> None:
        """Runs in this node's own thread: poll, post, wait its interval (or a refresh request)."""
        state = self.nodes[name]
        worker = get_current_worker()
        previous = None
        while not (worker.is_cancelled or self._stopping.is_set()):
            state.wake.clear()
            # never raises; bounded by call_timeout
            snapshot = poll(state.entry, state.transport, previous, refusals=True)
            previous = snapshot
            if self._stopping.is_set():
                break
            self.post_message(SnapshotReady(snapshot))
            state.wake.wait(state.entry.poll_interval)

    def on_snapshot_ready(self, message: SnapshotReady) -> None:

        snap = message.snapshot
        state = self.nodes.get(snap.name)
        if state is None:
            return
        new_events = events(state.snapshot, snap)
        state.snapshot = snap
        state.history.append((snap.polled_at, snap.ingest_rate, snap.disk_free_bytes))
        self.fleet_changed.publish(snap.name)
        if new_events:
            self.event_log.extend(new_events)
            del self.event_log[:-500]
            self.events_changed.publish(new_events)

    # --- what screens read ------------------------------------------------------------------------

    def snapshot(self, name: str):
        state = self.nodes[name]
        # Before its first poll has come back a node still has a row: the table never has a hole.
        return state.snapshot or NodeSnapshot(
            state.entry.name,
            state.entry.site,
            state.entry.tags,
            status="polling",
            reason="first poll in progress",
            polled_at=None,
        )

    def current_snapshots(self) -> list:
        return [self.snapshot(name) for name in self.nodes]

    def history(self, name: str) -> list[tuple]:
        return list(self.nodes[name].history)

    # --- what screens ask for ---------------------------------------------------------------------

    def open_node(self, name: str, fix=None) -> None:
        """The node screen; `fix` (a refused Association) opens it on the form that registers that sender."""
        if name in self.nodes:
            self.push_screen(NodeScreen(name, fix=fix))

    def start_rollout(self, names: list[str]) -> None:
        """The AE form for these nodes, then their dry-run diff and the roll-out (console.screens.rollout)."""
        if self.readonly:
            self.notify("the console is read-only: no roll-out", severity="warning")
            return
        rollout_screen.start(self, names)

    def refresh_node(self, name: str) -> None:
        self.nodes[name].wake.set()

    def action_refresh_all(self) -> None:
        for state in self.nodes.values():
            state.wake.set()
        if not self.fixed:
            self.notify("refreshing every node")

    def call_node(
        self, name: str, method: str, params: dict | None, callback: Callable, *, owner=None, read_only: bool = False
    ) -> None:
        """One agent call in a thread worker; callback(result, error) back on the UI thread, unless
        `owner` (a screen) has gone meanwhile. error: RPCError or TransportError."""
        state = self.nodes[name]

        def deliver(result, error) -> None:
            if owner is None or (owner.is_attached and owner.is_running):
                callback(result, error)

        if not read_only and self.readonly:  # the bindings and buttons are hidden; this is the backstop
            deliver(None, RPCError(UNAVAILABLE, "the console is read-only"))
            return
        if self.fixed or state.transport is None:
            raw = self.snapshot(name).raw
            if read_only and method in raw:
                deliver(raw[method], None)
            else:
                deliver(None, RPCError(UNAVAILABLE, "not connected (fixed snapshots)"))
            return

        def work() -> None:
            try:
                result, error = state.transport.call(method, params or {}), None
            except Exception as err:  # noqa: BLE001 - RPCError or TransportError, shown to the person
                result, error = None, err
            if not self._stopping.is_set():
                self.call_from_thread(deliver, result, error)

        self.run_worker(work, thread=True, group=f"call:{name}", name=f"{method} on {name}")

    # --- host keys --------------------------------------------------------------------------------

    def start_trust(self, name: str) -> None:
        """Fetch the key the host offers (nothing sent but the key exchange), then ask the person."""
        state = self.nodes[name]
        entry = state.entry
        snap = self.snapshot(name)
        if entry.transport != "ssh":
            self.notify(f"{name} is a local node: no host key to trust", severity="warning")
            return
        if snap.status != "untrusted" or self.fixed:
            self.notify(f"{name}: nothing to trust (status {snap.status})", severity="warning")
            return

        def scan() -> None:
            try:
                key = scan_host_key(entry.host, entry.port, entry.connect_timeout)
            except Exception as err:  # noqa: BLE001 - socket or SSH errors, told to the person
                self.call_from_thread(self.notify, f"{name}: cannot fetch the host key: {err}", severity="error")
                return
            pinned = self.known_hosts.lookup_all(entry.host, entry.port)
            expected = pinned.get(key.get_name()) or next(iter(pinned.values()), None)
            offer = HostKeyOffer(
                name,
                entry.host,
                entry.port,
                key.get_name(),
                fingerprint(key),
                fingerprint(expected) if expected is not None else None,
            )
            self.call_from_thread(self._offer_trust, offer, key)

        self.run_worker(scan, thread=True, group=f"trust:{name}", exclusive=True)

    def _offer_trust(self, offer: HostKeyOffer, key) -> None:
        if offer.expected_fingerprint == offer.fingerprint:
            self.notify(f"{offer.node}: this key is already pinned; reconnecting")
            self.run_worker(lambda: self._reconnect(offer.node), thread=True)
            return

        def decided(trust: bool | None) -> None:
            if trust and not offer.changed:
                self.run_worker(lambda: self._trust(offer, key), thread=True, group=f"trust:{offer.node}")

        self.push_screen(TrustScreen(offer), decided)

    def _trust(self, offer: HostKeyOffer, key) -> None:
        self.known_hosts.trust(offer.host, offer.port, key)
        self.call_from_thread(self.notify, f"{offer.node}: pinned {offer.key_type} {offer.fingerprint}")
        self._reconnect(offer.node)

    def _reconnect(self, name: str) -> None:
        """A fresh transport (no backoff left from the refusal), then an immediate poll."""
        state = self.nodes[name]
        old, state.transport = state.transport, open_transport(state.entry, self.known_hosts)
        _close_quietly(old)
        state.wake.set()

    # --- help, read-only, palette -------------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_sections(), self.readonly))

    def key_sections(self) -> list[tuple[str, list[Binding]]]:
        def keep(bindings, mutating=frozenset()) -> list[Binding]:
            hidden = MUTATING_ACTIONS | {"register_refused", "roll_out"} | mutating
            return [b for b in bindings if not (self.readonly and b.action in hidden)]

        return [
            ("fleet", keep(FleetScreen.BINDINGS)),
            ("node", keep(NodeScreen.BINDINGS)),
            *((f"node: {p.TITLE}", keep(p.BINDINGS, p.MUTATING)) for p in PANES),
            ("anywhere", keep(self.BINDINGS) + [Binding("ctrl+p", "command_palette", "Command palette")]),
        ]

    def action_toggle_readonly(self) -> None:
        if self.locked_readonly:
            self.notify("started with --readonly: actions stay hidden", severity="warning")
            return
        self.readonly = not self.readonly
        for screen in self.screen_stack:
            screen.query(".mutating").set(display=not self.readonly)
        self.refresh_bindings()
        self.notify("read-only: actions hidden" if self.readonly else "actions shown")

    def filter_fleet(self, text: str) -> None:
        while not isinstance(self.screen, FleetScreen) and len(self.screen_stack) > 1:
            self.pop_screen()
        if isinstance(self.screen, FleetScreen):
            self.screen.set_filter(text)


def _close_quietly(transport) -> None:
    if transport is None:
        return
    try:
        transport.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing left to do
        pass
