"""The fleet-wide AE roll-out: a diff per node of the AE file (aets_file.py), batches that stop at the first
failed node (Ansible's `serial`), an echo from each node reached. Data and IO only; no Textual here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.protocol import SCHEMA_VERSION, RPCError, iso_time

from .aets_file import AetDefinition
from .inventory import Fleet, NodeEntry
from .results import Aet, AetsList, Echo, read
from .transport.base import Transport, TransportError

ADD, CHANGE, SAME = "add", "change", "already there"
# A node's state in the summary. PLANNED: the dry run found something to do there.
CHANGED, UNCHANGED, FAILED, NOT_ATTEMPTED, PLANNED = "changed", "unchanged", "failed", "not attempted", "planned"
STATES = (CHANGED, UNCHANGED, FAILED, NOT_ATTEMPTED, PLANNED)
EXIT_DONE, EXIT_STOPPED, EXIT_BAD_INPUT = 0, 1, 2
ECHO_TIMEOUT = 3.0  # seconds per step of aets.echo (connect, associate, echo): a dead peer costs ~3 s, not 15


# --- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AetChange:
    """What one AE needs on one node: `fields` the ones added or changed, `before`/`after` their values."""

    ae_title: str
    action: str  # ADD, CHANGE or SAME
    fields: tuple[str, ...] = ()
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    host: str | None = None  # where the AE will be, once applied: what the echo calls
    port: int | None = None

    def to_json(self) -> dict:
        return {
            "ae_title": self.ae_title,
            "action": self.action,
            "fields": list(self.fields),
            "before": self.before,
            "after": self.after,
        }


def diff(wanted: AetDefinition, current: Aet | None) -> AetChange:
    """The change that makes `current` (None: not registered) what the file says; fields it leaves out stay."""
    given = wanted.given()
    if current is None:
        return AetChange(wanted.ae_title, ADD, tuple(given), {}, given, wanted.host, wanted.port)
    before, after = {}, {}
    for name, value in given.items():
        have = getattr(current, name)
        same = set(have) == set(value) if name == "operations" else have == value
        if not same:
            before[name] = list(have) if name == "operations" else have
            after[name] = value
    host = wanted.host if wanted.host is not None else current.host
    port = wanted.port if wanted.port is not None else current.port
    return AetChange(wanted.ae_title, CHANGE if after else SAME, tuple(after), before, after, host, port)


@dataclass
class NodeRollout:
    """One node's part: its plan (or why it could not be read), then what applying it did."""

    name: str
    plan: tuple[AetChange, ...] = ()
    error: str | None = None  # the plan could not be read, or applying failed
    state: str = NOT_ATTEMPTED
    applied: list[str] = field(default_factory=list)  # AE titles added or changed, in order
    echoes: list[dict] = field(default_factory=list)
    seconds: float | None = None

    @property
    def pending(self) -> tuple[AetChange, ...]:
        return tuple(c for c in self.plan if c.action != SAME)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.error,
            "plan": [c.to_json() for c in self.plan],
            "applied": list(self.applied),
            "echoes": list(self.echoes),
            "seconds": self.seconds,
        }


def _call_error(method: str, title: str | None, err: Exception) -> str:
    what = f"{method} {title}" if title else method
    if isinstance(err, RPCError):
        return f"{what}: {err.kind}: {err.message}"
    return f"{what}: {getattr(err, 'reason', None) or err}"


def plan_node(name: str, transport: Transport, aets: Sequence[AetDefinition]) -> NodeRollout:
    """Read the node's aets.list and diff every AE of the file against it. Never raises."""
    node = NodeRollout(name)
    try:
        listed: AetsList = read("aets.list", transport.call("aets.list"))
    except (RPCError, TransportError) as err:
        node.error, node.state = _call_error("aets.list", None, err), FAILED
        return node
    except Exception as err:  # noqa: BLE001 - one node's surprise is its failure, never the whole roll-out's
        node.error, node.state = f"aets.list: unexpected {type(err).__name__}: {err}", FAILED
        return node
    have = {a.ae_title: a for a in listed.aets}
    node.plan = tuple(diff(a, have.get(a.ae_title)) for a in aets)
    node.state = PLANNED if node.pending else UNCHANGED
    return node


def _parallel(jobs: dict[str, Callable[[], None]]) -> None:
    """Run each job in its own daemon thread and wait for all; each transport call carries its own timeout,
    so a dead node bounds its own thread."""
    threads = [threading.Thread(target=job, daemon=True, name=f"rollout-{n}") for n, job in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def plan(names: Sequence[str], transports: dict[str, Transport], aets: Sequence[AetDefinition]) -> list[NodeRollout]:
    """Every selected node's plan, read in parallel, in the order of `names`."""
    found: dict[str, NodeRollout] = {}

    def job(name: str) -> Callable[[], None]:
        def run() -> None:
            found[name] = plan_node(name, transports[name], aets)

        return run

    _parallel({n: job(n) for n in names})
    return [found[n] for n in names]


# --- applying -------------------------------------------------------------------------------------


def apply_node(node: NodeRollout, transport: Transport, echo_timeout: float = ECHO_TIMEOUT) -> None:
    """Apply one node's plan through aets.add / aets.update (roles and audit apply), then echo each AE that
    has a host and port. A failed call (forbidden, conflict, unreachable, ...) makes the node FAILED; a failed
    echo is reported, not a failure: the peer may simply be off."""
    started = time.perf_counter()
    try:
        if node.error is not None:  # its plan could not be read: this is where the roll-out stops
            node.state = FAILED
            return
        for change in node.pending:
            method = "aets.add" if change.action == ADD else "aets.update"
            try:
                transport.call(method, {"ae_title": change.ae_title, **change.after})
            except (RPCError, TransportError) as err:
                node.error, node.state = _call_error(method, change.ae_title, err), FAILED
                return
            node.applied.append(change.ae_title)
        node.state = CHANGED if node.applied else UNCHANGED
        for change in node.plan:
            if change.host is not None and change.port is not None:
                node.echoes.append(_echo(transport, change, echo_timeout))
    finally:
        node.seconds = round(time.perf_counter() - started, 3)


def _echo(transport: Transport, change: AetChange, timeout: float) -> dict:
    out = {"ae_title": change.ae_title, "host": change.host, "port": change.port, "ok": False}
    try:
        # Three steps of `timeout` each at worst, plus the call's own margin.
        answer = transport.call("aets.echo", {"ae_title": change.ae_title, "timeout": timeout}, timeout=4 * timeout + 5)
        echo: Echo = read("aets.echo", answer)
    except (RPCError, TransportError) as err:
        return {**out, "rtt_ms": None, "diagnosis": None, "error": _call_error("aets.echo", change.ae_title, err)}
    diagnosis = None if echo.diagnosis is None else {"kind": echo.diagnosis.kind, "message": echo.diagnosis.message}
    return {**out, "ok": echo.ok, "rtt_ms": echo.rtt_ms, "diagnosis": diagnosis, "error": None}


def apply(
    nodes: Sequence[NodeRollout],
    transports: dict[str, Transport],
    batch: int = 1,
    on_node: Callable[[NodeRollout], None] | None = None,
    echo_timeout: float = ECHO_TIMEOUT,
) -> NodeRollout | None:
    """Apply the plans `batch` nodes at a time, in parallel within a batch, in order; stop after the first
    batch with a failed node (nodes after it stay NOT_ATTEMPTED). Returns the first failed node, or None."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    for n in nodes:
        n.state = NOT_ATTEMPTED  # a node whose plan failed fails when its batch comes, not before
    for start in range(0, len(nodes), batch):
        group = nodes[start : start + batch]
        _parallel({n.name: _applier(n, transports[n.name], echo_timeout) for n in group})
        for n in group:
            if on_node is not None:
                on_node(n)
        failed = next((n for n in group if n.state == FAILED), None)
        if failed is not None:
            return failed
    return None


def _applier(node: NodeRollout, transport: Transport, echo_timeout: float) -> Callable[[], None]:
    def run() -> None:
        try:
            apply_node(node, transport, echo_timeout)
        except Exception as err:  # noqa: BLE001 - a surprise on one node stops the roll-out as its failure
            node.error, node.state = f"unexpected {type(err).__name__}: {err}", FAILED

    return run


# --- selecting nodes, the summary -----------------------------------------------------------------


def select(fleet: Fleet, names: str | None) -> list[NodeEntry]:
    """The nodes of `--nodes a,b` in that order (the first one is the canary), default every node in fleet
    order; ValueError for an unknown name."""
    if not names:
        return list(fleet.nodes)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ValueError("expected node names separated by commas")
    known = {e.name: e for e in fleet.nodes}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"no node {', '.join(unknown)} in the fleet; nodes: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(wanted)]


def exit_code(nodes: Sequence[NodeRollout]) -> int:
    """0 every node done (or, in a dry run, every plan read); 1 a node failed, so the roll-out stopped there."""
    return EXIT_STOPPED if any(n.state == FAILED for n in nodes) else EXIT_DONE


def document(
    nodes: Sequence[NodeRollout],
    aets: Sequence[AetDefinition],
    *,
    fleet: Fleet,
    source: Path | None,
    dry_run: bool,
    batch: int,
    seconds: float,
) -> dict:
    """The `--json` document: stable keys, times in seconds, timestamps ISO 8601."""
    failed = next((n.name for n in nodes if n.state == FAILED), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso_time(time.time()),
        "fleet": str(fleet.source) if fleet.source else None,
        "file": str(source) if source else None,
        "dry_run": dry_run,
        "batch": batch,
        "aets": [a.ae_title for a in aets],
        "exit_code": exit_code(nodes),
        "stopped_at": failed,
        "seconds": round(seconds, 3),
        "counts": {s: sum(1 for n in nodes if n.state == s) for s in STATES},
        "nodes": [n.to_json() for n in nodes],
    }


def _value(name: str, value) -> str:
    if name == "operations":
        return ",".join(value)
    return "''" if value == "" else str(value)


def change_text(c: AetChange) -> str:
    if c.action == ADD:
        return f"add {c.ae_title}" + (
            f" ({', '.join(f'{k}={_value(k, c.after[k])}' for k in c.fields)})" if c.fields else ""
        )
    changes = ", ".join(f"{k} {_value(k, c.before[k])} -> {_value(k, c.after[k])}" for k in c.fields)
    return f"change {c.ae_title} ({changes})"


def render_plan(nodes: Sequence[NodeRollout]) -> str:
    """The plan, one line per node: what will be added, changed, what is already there."""
    width = max((len(n.name) for n in nodes), default=4)
    lines = ["plan:"]
    for n in nodes:
        if n.error is not None:
            lines.append(f"  {n.name.ljust(width)}  cannot plan: {n.error}")
            continue
        parts = [change_text(c) for c in n.pending]
        same = [c.ae_title for c in n.plan if c.action == SAME]
        if same:
            parts.append(f"{SAME}: {', '.join(same)}")
        lines.append(f"  {n.name.ljust(width)}  {'; '.join(parts)}")
    return "\n".join(lines)


def render_node(node: NodeRollout, width: int = 0) -> str:
    """One node's outcome: its state, what it applied or why it failed, then its echoes."""
    text = f"  {node.name.ljust(width)}  {node.state}"
    if node.state == FAILED:
        text += f": {node.error}"
        if node.applied:
            text += f" (applied before it failed: {', '.join(node.applied)})"
    elif node.applied:
        text += f": {', '.join(node.applied)}"
    for e in node.echoes:
        if e["ok"]:
            text += f"\n  {''.ljust(width)}    echo {e['ae_title']} ok" + (
                f" {e['rtt_ms']:.1f} ms" if e["rtt_ms"] is not None else ""
            )
        else:
            why = e["error"] or (
                f"{e['diagnosis']['kind']}: {e['diagnosis']['message']}" if e["diagnosis"] else "failed"
            )
            text += f"\n  {''.ljust(width)}    echo {e['ae_title']} failed: {why}"
    return text


def render_summary(nodes: Sequence[NodeRollout], dry_run: bool) -> str:
    width = max((len(n.name) for n in nodes), default=4)
    lines = []
    untouched = [n for n in nodes if n.state == NOT_ATTEMPTED]
    if untouched:
        lines += [render_node(n, width) for n in untouched]
    counts = ", ".join(
        f"{sum(1 for n in nodes if n.state == s)} {s}" for s in STATES if any(n.state == s for n in nodes)
    )
    failed = next((n for n in nodes if n.state == FAILED), None)
    stop = f"; stopped at {failed.name}" if failed is not None and not dry_run else ""
    lines.append(
        f"{'dry run, nothing changed: ' if dry_run else ''}{len(nodes)} nodes: {counts}{stop}; exit {exit_code(nodes)}"
    )
    return "\n".join(lines)
