"""AE title edits as the console makes them: a draft, its aets.add/update params, the sentence a confirmation shows.

No Textual here: the AE titles tab and its form screen build drafts, this module turns them into calls
and words. `from_refusal` is the one-key fix: a rejected association whose calling AE is not registered
becomes the draft that registers it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocol import FORBIDDEN, RPCError

from .results import Aet, Association

OPERATIONS = ("store", "find", "move", "get")
# An agent whose aets.add still requires a port, even for a store-only sender the node never calls
# back, gets DICOM's well-known port: the least surprising value. One that does not require it gets none.
SENDER_PORT = 104
# The node's own words for the fix (storage/node.py rejection_reason); agent/diagnose.py keys on them too.
UNREGISTERED = "is not registered"


@dataclass(frozen=True)
class AetDraft:
    """What the form holds: an AE title's fields as the person typed them (port None: not given)."""

    ae_title: str = ""
    host: str = ""
    port: int | None = None
    description: str = ""
    operations: tuple[str, ...] = OPERATIONS
    move_destination: bool = False
    tls: bool = False


def draft_of(aet: Aet) -> AetDraft:
    return AetDraft(
        ae_title=aet.ae_title,
        host=aet.host or "",
        port=aet.port,
        description=aet.description,
        operations=tuple(aet.operations),
        move_destination=aet.move_destination,
        tls=aet.tls,
    )


def from_refusal(association: Association, port_required: bool = True) -> AetDraft | None:
    """The draft that lets a refused sender in, or None when this association was not refused for that.
    `port_required`: whether this node's aets.add demands a port (rpc.discover says)."""
    if association.result != "rejected" or UNREGISTERED not in (association.reason or ""):
        return None
    if not association.calling_ae:
        return None
    return AetDraft(
        ae_title=association.calling_ae,
        host=association.peer_host or "",
        port=SENDER_PORT if port_required else None,
        operations=("store",),
    )


def add_params(draft: AetDraft) -> dict:
    """aets.add's params; a port not given is left out (the agent says whether it needs one)."""
    params: dict = {
        "ae_title": draft.ae_title,
        "host": draft.host,
        "operations": list(draft.operations),
        "move_destination": draft.move_destination,
        "tls": draft.tls,
    }
    if draft.port is not None:
        params["port"] = draft.port
    if draft.description:
        params["description"] = draft.description
    return params


def update_params(old: Aet, draft: AetDraft) -> dict:
    """aets.update's params: the AE title and only the fields that differ from `old` (just the title: nothing)."""
    before = draft_of(old)
    params: dict = {"ae_title": old.ae_title}
    for name in ("host", "port", "description", "operations", "move_destination", "tls"):
        value = getattr(draft, name)
        if value != getattr(before, name) and not (name == "port" and value is None):
            params[name] = list(value) if name == "operations" else value
    return params


def _shown(name: str, value) -> str:
    if name == "operations":
        return ", ".join(value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "–" if value in (None, "") else str(value)


def describe_add(draft: AetDraft, node: str) -> str:
    where = f"{draft.host or '–'}:{draft.port if draft.port is not None else '–'}"
    text = f"Register {draft.ae_title} on {node}: {where}, operations {_shown('operations', draft.operations)}"
    if draft.move_destination:
        text += ", C-MOVE destination"
    if draft.tls:
        text += ", TLS"
    return text + "?"


def describe_update(old: Aet, params: dict, node: str) -> str:
    before = draft_of(old)
    changes = [
        f"{name.replace('_', ' ')} {_shown(name, getattr(before, name))} → {_shown(name, value)}"
        for name, value in params.items()
        if name != "ae_title"
    ]
    return f"Change {old.ae_title} on {node}: " + "; ".join(changes) + "?"


def describe_remove(aet: Aet, node: str) -> str:
    return (
        f"Remove {aet.ae_title} ({_shown('host', aet.host)}:{_shown('port', aet.port)}) from {node}? "
        "The node refuses its associations at once."
    )


def refusal(action: str, error: Exception) -> str:
    """One line for a failed AE call; a role that may not is said as such, not as an error dump."""
    if isinstance(error, RPCError):
        if error.kind == FORBIDDEN:
            role = error.data.get("role")
            needed = error.data.get("required_role")
            who = f"your role ({role})" if role else "you"
            return f"{action} refused: {who} may not do this" + (f"; it needs {needed}" if needed else "")
        field = error.data.get("field")
        return f"{action}: {field + ': ' if field and field not in error.message else ''}{error.message}"
    return f"{action}: {error}"


def echo_line(title: str, echo) -> str:
    """aets.echo's result in one line: ok with timings, or the diagnosis."""
    if echo.ok:
        rtt = f"{echo.rtt_ms:.1f} ms" if echo.rtt_ms is not None else "–"
        total = f"{echo.total_ms:.1f} ms" if echo.total_ms is not None else "–"
        return f"echo {title}: ok (C-ECHO {rtt}, association and all {total})"
    if echo.diagnosis is None:
        return f"echo {title}: failed (status {echo.status})"
    return f"echo {title}: {echo.diagnosis.kind}: {echo.diagnosis.message}"
