"""associations.recent: the node's association log, newest first, for "the modality can't send"."""

from __future__ import annotations

import json

from .protocol import iso_time
from .registry import Method, Param
from . import validate as v

RESULTS = ("requested", "accepted", "released", "rejected", "aborted", "dropped")


def recent(ctx, params: dict) -> dict:
    node = ctx.require_node()
    limit = v.limit(params.get("limit"))
    where, args = [], []
    if params.get("calling_ae") is not None:
        where.append("calling_ae = ?")
        args.append(v.ae_title(params["calling_ae"], "calling_ae"))
    if params.get("result") is not None:
        if params["result"] not in RESULTS:
            raise v.invalid("result", f"one of {', '.join(RESULTS)}")
        where.append("result = ?")
        args.append(params["result"])
    sql = ("SELECT * FROM associations" + (f" WHERE {' AND '.join(where)}" if where else "")
           + " ORDER BY id DESC LIMIT ?")
    rows = node.index.connection().execute(sql, (*args, limit)).fetchall()
    entries = []
    for r in rows:
        d = dict(r)
        d["started_at"] = iso_time(d["started_at"])
        d["ended_at"] = iso_time(d["ended_at"])
        d["rejected_contexts"] = _json_list(d["rejected_contexts"])
        entries.append(d)
    return {"associations": entries}


def _json_list(text: str) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


METHODS = (
    Method("associations.recent", recent, "Latest DICOM associations: who, from where, result, why rejected", {
        "limit": Param("integer", "how many (1-1000, default 100)"),
        "calling_ae": Param("string", "only this calling AE title"),
        "result": Param("string", "only this result", extra={"enum": list(RESULTS)}),
    }),
)
