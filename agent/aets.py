"""aets.list/add/update/remove/echo: the registered AE titles the running node re-reads per association."""

from __future__ import annotations

from storage.config.settings import OPERATIONS
from storage.config.tls import client_context
from storage.dimse import echo as c_echo
from storage.index import catalog

from . import validate as v
from .protocol import CONFLICT, NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from .schema import BOOL, INT, NUM, STR, TIME, Arr, Enum, Null, Obj

# What echo() returns: aets.echo's result, and each AE's `echo` in diagnose.run.
ECHO_RESULT = Obj(
    {
        "ok": BOOL,
        "calling_ae": STR,
        "called_ae": STR,
        "host": STR,
        "port": INT,
        "address": Null(STR),
        "status": Null(INT),
        "rtt_ms": Null(NUM),
        "total_ms": Null(NUM),
        # Set when ok is false: which layer failed; a rejection adds the A-ASSOCIATE-RJ fields.
        "diagnosis": Null(
            Obj(
                {
                    "kind": Enum(
                        c_echo.DNS,
                        c_echo.REFUSED,
                        c_echo.UNREACHABLE,
                        c_echo.TIMEOUT,
                        c_echo.REJECTED,
                        c_echo.ABORTED,
                        c_echo.FAILED,
                    ),
                    "message": STR,
                },
                {"result": INT, "source": INT, "diagnostic": INT, "reason": STR},
            )
        ),
    }
)

AET = Obj(
    {
        "ae_title": STR,
        "host": Null(STR),
        "port": Null(INT),
        "description": STR,
        "operations": Arr(Enum(*OPERATIONS)),
        "move_destination": BOOL,
        "tls": BOOL,
        "created_at": TIME,
        "updated_at": TIME,
    }
)


def public(aet: catalog.Aet) -> dict:
    """An AE title as the wire shows it (aets.*, and the AE part of other results)."""
    return {
        "ae_title": aet.ae_title,
        "host": aet.host,
        "port": aet.port,
        "description": aet.description,
        "operations": list(aet.operations),
        "move_destination": aet.move_destination,
        "tls": aet.tls,
        "created_at": iso_time(aet.created_at),
        "updated_at": iso_time(aet.updated_at),
    }


def _missing(title: str, field: str = "ae_title") -> RPCError:
    return RPCError(NOT_FOUND, f"no AE title {title!r} is registered; aets.list shows them", {"field": field})


def _unaddressed(title: str, field: str, use: str = "send to") -> RPCError:
    return v.invalid(field, f"{title} has no host and port to {use}; set them with aets.update")


def addressed(index, title: str, field: str, use: str = "send to") -> catalog.Aet:
    """The registered AE when it has a host and port; else the error that says which is missing.
    What aets.echo and studies.send each need."""
    found = catalog.aet(index, title)
    if found is None:
        raise _missing(title, field)
    if not found.addressed:
        raise _unaddressed(title, field, use)
    return found


def refused(err: catalog.CatalogError, field: str) -> RPCError:
    """Missing / NoAddress about an AE title in parameter `field` (a list's item when it has a position)."""
    where = field if err.position is None else f"{field}[{err.position}]"
    return _missing(err.name, where) if isinstance(err, catalog.Missing) else _unaddressed(err.name, where)


def list_aets(ctx, params: dict) -> dict:
    return {"aets": [public(a) for a in catalog.aets(ctx.require_node().index)]}


def add(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    title = v.ae_title(params.get("ae_title"))
    operations = tuple(v.operations(params.get("operations", list(OPERATIONS))))
    move_destination = v.boolean(params.get("move_destination", False), "move_destination")
    # A store-only sender is never called back, so it needs no address; a C-MOVE destination, an AE
    # that may query or retrieve (and be echoed by support staff) keeps the address it always needed.
    sender_only = set(operations) == {"store"} and not move_destination
    new = catalog.AetFields(
        host=_optional(params, "host", v.host, sender_only),
        port=_optional(params, "port", v.port, sender_only),
        description=v.description(params.get("description", "")),
        operations=operations,
        move_destination=move_destination,
        tls=v.boolean(params.get("tls", False), "tls"),
    )
    try:
        return {"aet": public(catalog.add_aet(index, title, new))}
    except catalog.Exists:
        raise RPCError(
            CONFLICT, f"AE title {title!r} is already registered; use aets.update", {"field": "ae_title"}
        ) from None


def _optional(params: dict, field: str, check, may_be_absent: bool):
    if params.get(field) is None and may_be_absent:
        return None
    if params.get(field) is None:
        raise v.invalid(
            field, 'required (only a store-only sender, operations ["store"], may go without host and port)'
        )
    return check(params[field], field)


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
        changes["operations"] = tuple(v.operations(params["operations"]))
    if "move_destination" in params:
        changes["move_destination"] = v.boolean(params["move_destination"], "move_destination")
    if "tls" in params:
        changes["tls"] = v.boolean(params["tls"], "tls")
    if not changes:
        raise v.invalid(
            "params", "nothing to change; give host, port, description, operations, move_destination or tls"
        )
    current = catalog.aet(index, title)
    # A store-only sender registered without an address cannot become a C-MOVE destination without one.
    merged = current and (changes.get("host", current.host), changes.get("port", current.port))
    if changes.get("move_destination") and merged and not all(merged):
        raise _unaddressed(title, "move_destination", use="send C-MOVE results to")
    try:
        return {"aet": public(catalog.update_aet(index, title, **changes))}
    except catalog.Missing:
        raise _missing(title) from None


def remove(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    title = v.ae_title(params.get("ae_title"))
    try:
        catalog.remove_aet(index, title)
    except catalog.InUse as err:
        # Removing a destination under a route would turn every forward to it into a failure.
        raise RPCError(
            CONFLICT,
            f"{title} is a destination of route(s) {', '.join(err.routes)}; remove it from "
            "them first (routes.remove, then routes.add without it)",
            {"field": "ae_title", "routes": err.routes},
        ) from None
    except catalog.Missing:
        raise _missing(title) from None
    return {"removed": title}


def echo(ctx, params: dict) -> dict:
    node = ctx.require_node()
    title = v.ae_title(params.get("ae_title"))
    timeout = v.timeout(params.get("timeout"))
    aet = addressed(node.index, title, "ae_title", use="call")
    return c_echo.echo(
        node.config.ae_title,
        title,
        aet.host,
        aet.port,
        timeout,
        tls=client_context(node.config.tls) if aet.tls else None,
    )


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
    Method("aets.list", list_aets, "Registered AE titles", result=Obj({"aets": Arr(AET)})),
    Method(
        "aets.add",
        add,
        "Register an AE title; the running node accepts it at once",
        {
            "ae_title": _TITLE,
            **_FIELDS,
            "host": Param("string", 'host name or IP address; optional for a store-only sender (operations ["store"])'),
            "port": Param("integer", 'DICOM port, 1-65535; optional for a store-only sender (operations ["store"])'),
        },
        audit=True,
        result=Obj({"aet": AET}),
    ),
    Method(
        "aets.update",
        update,
        "Change a registered AE title's host, port, operations, ...",
        {"ae_title": _TITLE, **_FIELDS},
        audit=True,
        result=Obj({"aet": AET}),
    ),
    Method(
        "aets.remove",
        remove,
        "Unregister an AE title; the running node rejects it at once",
        {"ae_title": _TITLE},
        audit=True,
        result=Obj({"removed": STR}),
    ),
    Method(
        "aets.echo",
        echo,
        "C-ECHO from this node to a registered AE: status, round trip, diagnosis",
        {
            "ae_title": _TITLE,
            "timeout": Param("number", "seconds per step (0.1-60, default 5)"),
        },
        audit=True,
        result=ECHO_RESULT,
    ),
)
