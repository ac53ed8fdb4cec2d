"""Route edits as the console makes them: a draft, its routes.add params, the sentences a confirmation shows.

No Textual here: the Routes tab and its form build drafts, this module turns them into calls and words.
A refusal is said as for AE titles (console.aet_edits.refusal: a role that may not, in plain words).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocol import FORBIDDEN, RPCError

from .aet_edits import refusal
from .results import Aet, Route, failure

CALLING_AE = "calling_ae"  # the one match key that is not a DICOM keyword (storage/index/routes.py)
EVERYTHING = "everything"


@dataclass(frozen=True)
class RouteDraft:
    """What the form holds: a name, (key, pattern) rows as typed (empty ones dropped), the chosen AE titles."""

    name: str = ""
    match: tuple[tuple[str, str], ...] = ()
    destinations: tuple[str, ...] = ()


def can_receive(aet: Aet) -> bool:
    """A route forwards with C-STORE: only an AE with an address can be its destination (the agent says so too)."""
    return bool(aet.host) and aet.port is not None


def add_params(draft: RouteDraft) -> dict:
    return {"name": draft.name, "match": dict(draft.match), "destinations": list(draft.destinations)}


def match_text(match: dict[str, str] | tuple[tuple[str, str], ...]) -> str:
    """`Modality=CT, calling_ae=CT*`, or `everything` for the empty match."""
    pairs = match.items() if isinstance(match, dict) else match
    return ", ".join(f"{key}={pattern}" for key, pattern in pairs) or EVERYTHING


def describe_add(draft: RouteDraft, node: str) -> str:
    what = (
        f"every new instance whose {match_text(draft.match)}"
        if draft.match
        else "EVERY new instance (no match: the route matches everything)"
    )
    return f"Add route {draft.name} on {node}: forward {what} to {', '.join(draft.destinations)}?"


def describe_remove(route: Route, node: str) -> str:
    return (
        f"Remove route {route.name} ({match_text(route.match)} → {', '.join(route.destinations)}) from {node}? "
        "New instances are no longer forwarded; those already queued still are."
    )


def unreadable(method: str, error: Exception) -> str:
    """The pane's note when a read is refused: admin-only data said as such, anything else as it came."""
    if isinstance(error, RPCError) and error.kind == FORBIDDEN:
        return refusal(method, error)
    return failure(method, error)
