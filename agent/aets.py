"""aets.list/add/update/remove/echo: the registered AE titles the running node re-reads per association."""

from __future__ import annotations

from storage.index import routes
from storage.config.values import OPERATIONS
from storage.config.tls import client_context

from . import validate as v
from storage.dimse.echo import echo as c_echo
from .protocol import CONFLICT, NOT_FOUND, RPCError, iso_time
from .registry import Method, Param


def _public(aet: dict) -> dict:
    return {**aet, "created_at": iso_time(aet["created_at"]), "updated_at": iso_time(aet["updated_at"])}


def _missing(title: str, field: str = "ae_title") -> RPCError:
    return RPCError(NOT_FOUND, f"no AE title {title!r} is registered; aets.list shows them", {"field": field})


def addressed(row, title: str, field: str, use: str = "send to"):
    """The registered AE `row` (looked up by the caller) when it has a host and port; else the error
    that says which is missing. What aets.echo, studies.send and routes.add each need."""
    if row is None:
        raise _missing(title, field)
    if not row["host"] or not row["port"]:
        raise v.invalid(field, f"{title} has no host and port to {use}; set them with aets.update")
    return row


def list_aets(ctx, params: dict) -> dict:
    return {"aets": [_public(a) for a in ctx.require_node().index.aets()]}


def add(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    title = v.ae_title(params.get("ae_title"))
    fields = {
        "host": v.host(params.get("host")),
        "port": v.port(params.get("port")),
        "description": v.description(params.get("description", "")),
        "operations": v.operations(params.get("operations", list(OPERATIONS))),
        "move_destination": v.boolean(params.get("move_destination", False), "move_destination"),
        "tls": v.boolean(params.get("tls", False), "tls"),
    }
    with index.transaction() as conn:
        if conn.execute("SELECT 1 FROM aets WHERE ae_title=?", (title,)).fetchone():
            raise RPCError(CONFLICT, f"AE title {title!r} is already registered; use aets.update",
                           {"field": "ae_title"})
        index.put_aet(conn, title, **fields)
    return {"aet": _public(index.aet(title))}


def update(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    title = v.ae_title(params.get("ae_title"))
    changes = {}
    if "host" in params:
        changes["host"] = v.host(params["host"])
    if "port" in params:
        changes["port"] = v.port(params["port"])
    if "description" in params:
        changes["description"] = v.description(params["description"])
    if "operations" in params:
        changes["operations"] = v.operations(params["operations"])
    if "move_destination" in params:
        changes["move_destination"] = v.boolean(params["move_destination"], "move_destination")
    if "tls" in params:
        changes["tls"] = v.boolean(params["tls"], "tls")
    if not changes:
        raise v.invalid("params", "nothing to change; give host, port, description, operations, move_destination "
                                  "or tls")
    with index.transaction() as conn:
        row = conn.execute("SELECT ae_title FROM aets WHERE ae_title=?", (title,)).fetchone()
        if row is None:
            raise _missing(title)
        current = index.aet(title)
        merged = {k: current[k] for k in ("host", "port", "description", "operations", "move_destination", "tls")}
        merged.update(changes)
        index.put_aet(conn, title, **merged)
    return {"aet": _public(index.aet(title))}


def remove(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    title = v.ae_title(params.get("ae_title"))
    with index.transaction() as conn:
        # Removing a destination under a route would turn every forward to it into a failure.
        used_by = routes.using(conn, title)
        if used_by:
            raise RPCError(CONFLICT, f"{title} is a destination of route(s) {', '.join(used_by)}; remove it from "
                           "them first (routes.remove, then routes.add without it)",
                           {"field": "ae_title", "routes": used_by})
        if not index.remove_aet(conn, title):
            raise _missing(title)
    return {"removed": title}


def echo(ctx, params: dict) -> dict:
    node = ctx.require_node()
    title = v.ae_title(params.get("ae_title"))
    timeout = v.timeout(params.get("timeout"))
    aet = addressed(node.index.aet(title), title, "ae_title", use="call")
    return c_echo(node.config.ae_title, title, aet["host"], aet["port"], timeout,
                  tls=client_context(node.config.tls) if aet.get("tls") else None)


_TITLE = Param("string", "AE title, 1-16 printable ASCII characters", required=True)
_FIELDS = {
    "host": Param("string", "host name or IP address"),
    "port": Param("integer", "DICOM port, 1-65535"),
    "description": Param("string", "free text, one line, at most 256 characters"),
    "operations": Param("array", "what this AE may do here", extra={"items": {"enum": list(OPERATIONS)}}),
    "move_destination": Param("boolean", "may be the destination of a C-MOVE"),
    "tls": Param("boolean", "the node's associations to this AE (C-MOVE, forwards, echo) use DICOM TLS"),
}
METHODS = (
    Method("aets.list", list_aets, "Registered AE titles"),
    Method("aets.add", add, "Register an AE title; the running node accepts it at once", {
        "ae_title": _TITLE,
        **_FIELDS,
        "host": Param("string", "host name or IP address", required=True),
        "port": Param("integer", "DICOM port, 1-65535", required=True),
    }, audit=True),
    Method("aets.update", update, "Change a registered AE title's host, port, operations, ...", {
        "ae_title": _TITLE, **_FIELDS}, audit=True),
    Method("aets.remove", remove, "Unregister an AE title; the running node rejects it at once", {
        "ae_title": _TITLE}, audit=True),
    Method("aets.echo", echo, "C-ECHO from this node to a registered AE: status, round trip, diagnosis", {
        "ae_title": _TITLE,
        "timeout": Param("number", "seconds per step (0.1-60, default 5)"),
    }, audit=True),
)
