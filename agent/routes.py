"""routes.list, routes.add, routes.remove: auto-routing rules that forward new instances to registered AEs."""

from __future__ import annotations

from storage.index import catalog
from storage.index import routes as r

from . import validate as v
from .aets import refused
from .protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from .schema import STR, TIME, Arr, Map, Obj

ROUTE = Obj({"name": STR, "match": Map(STR), "destinations": Arr(STR), "created_at": TIME, "updated_at": TIME})


def _public(route: catalog.RouteRecord) -> dict:
    return {
        "name": route.name,
        "match": dict(route.match),
        "destinations": list(route.destinations),
        "created_at": iso_time(route.created_at),
        "updated_at": iso_time(route.updated_at),
    }


def _checked(check, value):
    try:
        return check(value)
    except r.RouteError as err:
        raise RPCError(INVALID_PARAMS, str(err), {"field": err.field}) from None


def _name(value) -> str:
    v.safe_text(value, "name", max_len=64)
    return _checked(r.check_name, value)


def list_routes(ctx, params: dict) -> dict:
    return {"routes": [_public(x) for x in catalog.routes(ctx.require_node().index)]}


def add(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    name = _name(params.get("name"))
    match = _checked(r.check_match, params.get("match"))
    destinations = params.get("destinations")
    if not isinstance(destinations, list) or not 1 <= len(destinations) <= r.MAX_DESTINATIONS:
        raise v.invalid("destinations", f"a list of 1 to {r.MAX_DESTINATIONS} registered AE titles")
    titles = list(dict.fromkeys(v.ae_title(t, f"destinations[{i}]") for i, t in enumerate(destinations)))
    try:
        return {"route": _public(catalog.add_route(index, name, match, titles))}
    except (catalog.Missing, catalog.NoAddress) as err:
        raise refused(err, "destinations") from None
    except catalog.Exists:
        raise RPCError(CONFLICT, f"a route named {name!r} exists; remove it first", {"field": "name"}) from None


def remove(ctx, params: dict) -> dict:
    index = ctx.require_node().index
    name = _name(params.get("name"))
    try:
        catalog.remove_route(index, name)
    except catalog.Missing:
        raise RPCError(NOT_FOUND, f"no route named {name!r}; routes.list shows them", {"field": "name"}) from None
    return {"removed": name}


_NAME_PARAM = Param("string", "route name: letters, digits, '_', '.', '-' (max 64)", required=True)
METHODS = (
    Method("routes.list", list_routes, "Auto-routing rules", result=Obj({"routes": Arr(ROUTE)})),
    Method(
        "routes.add",
        add,
        "Forward every new instance that matches to registered AEs",
        {
            "name": _NAME_PARAM,
            "match": Param(
                "object", "{calling_ae or DICOM keyword: pattern with * and ?}; {} matches everything", required=True
            ),
            "destinations": Param(
                "array", "registered AE titles to forward to", required=True, extra={"items": {"type": "string"}}
            ),
        },
        audit=True,
        result=Obj({"route": ROUTE}),
    ),
    Method(
        "routes.remove",
        remove,
        "Delete a route; instances already queued are still forwarded",
        {"name": _NAME_PARAM},
        audit=True,
        result=Obj({"removed": STR}),
    ),
)
