"""associations.recent: the node's association log, newest first, for "the modality can't send"."""

from __future__ import annotations

from storage.index import catalog_activity

from . import validate as v
from .protocol import iso_time
from .registry import Method, Param
from .schema import INT, STR, TIME, Arr, Enum, Null, Obj

RESULTS = ("requested", "accepted", "released", "rejected", "aborted", "dropped")
# A presentation context the node refused, as the association log keeps it.
CONTEXT = Obj({"abstract_syntax": STR, "transfer_syntaxes": Arr(STR), "reason": STR})
ENTRY = Obj(
    {
        "id": INT,
        "started_at": TIME,
        "ended_at": Null(TIME),
        "calling_ae": STR,
        "called_ae": STR,
        "peer_host": STR,
        "peer_port": Null(INT),
        "result": Enum(*RESULTS),
        "reason": STR,
        "rejected_contexts": Arr(CONTEXT),
        "instances": INT,
        "failures": INT,
        "bytes": INT,
    }
)


def public(a: catalog_activity.AssociationEntry) -> dict:
    return {
        "id": a.id,
        "started_at": iso_time(a.started_at),
        "ended_at": iso_time(a.ended_at),
        "calling_ae": a.calling_ae,
        "called_ae": a.called_ae,
        "peer_host": a.peer_host,
        "peer_port": a.peer_port,
        "result": a.result,
        "reason": a.reason,
        "rejected_contexts": list(a.rejected_contexts),
        "instances": a.instances,
        "failures": a.failures,
        "bytes": a.bytes,
    }


def recent(ctx, params: dict) -> dict:
    node = ctx.require_node()
    limit = v.limit(params.get("limit"))
    calling_ae = v.ae_title(params["calling_ae"], "calling_ae") if params.get("calling_ae") is not None else None
    result = params.get("result")
    if result is not None and result not in RESULTS:
        raise v.invalid("result", f"one of {', '.join(RESULTS)}")
    return {"associations": [public(a) for a in catalog_activity.associations(node.index, limit, calling_ae, result)]}


METHODS = (
    Method(
        "associations.recent",
        recent,
        "Latest DICOM associations: who, from where, result, why rejected",
        {
            "limit": Param("integer", "how many (1-1000, default 100)"),
            "calling_ae": Param("string", "only this calling AE title"),
            "result": Param("string", "only this result", extra={"enum": list(RESULTS)}),
        },
        result=Obj({"associations": Arr(ENTRY)}),
    ),
)
