"""Names on the wire: the old param and result field names kept beside the canonical ones, in one table.

The rule (README "Names on the wire"): a DICOM attribute is named by its DICOM keyword everywhere
(`StudyInstanceUID`, also for a list of them, as C-FIND's list of UID matching does); everything
else is snake_case, one word per concept: `destination` is an AE title that receives DICOM, `pool`
a storage pool (`source_pool`, `target_pool` when a role is needed), sizes are `bytes`, durations
`duration_s`.

A param alias is accepted for one release: the registry maps it to its canonical name before the
handler runs (handlers only ever see canonical names), publishes it in rpc.discover as deprecated,
and says in the result that it was used. A renamed result field is sent under both names, with the
same value, until a schema_version bump removes the old one (STYLE 11).
"""

from __future__ import annotations

import copy
import logging

from .protocol import RPCError
from .schema import STR, Arr
from .validate import invalid

log = logging.getLogger(__name__)

# method -> {deprecated param name: canonical param name}
PARAMS: dict[str, dict[str, str]] = {
    "pools.migrate": {"study_uids": "StudyInstanceUID", "target": "target_pool"},
    "preview.render": {"sop_instance_uid": "SOPInstanceUID"},
}

# method -> {path of a deprecated result field: its canonical name, beside it in the same object}.
# A path is keys joined by '.', with '[]' after a key whose value is a list of objects.
RESULTS: dict[str, dict[str, str]] = {
    "node.status": {
        "pools[].bytes": "indexed_bytes",
        "pools[].disk_total_bytes": "disk_total",
        "pools[].disk_free_bytes": "disk_free",
    },
    "pools.migrate": {
        "plan[].study_uid": "StudyInstanceUID",
        "plan[].source": "source_pool",
        "plan[].target": "target_pool",
        "skipped[].study_uid": "StudyInstanceUID",
        "skipped[].source": "source_pool",
        "skipped[].target": "target_pool",
        "seconds": "duration_s",
    },
    "pools.verify": {
        "problems[].sop_uid": "SOPInstanceUID",
        "problems[].study_uid": "StudyInstanceUID",
        "problems[].size": "bytes",
        "problems[].expected_size": "expected_bytes",
        "seconds": "duration_s",
    },
    "preview.render": {"sop_instance_uid": "SOPInstanceUID", "transfer_syntax": "TransferSyntaxUID"},
    "queue.list": {"jobs[].study_uid": "StudyInstanceUID"},
}

DEPRECATED_PARAMS = "deprecated_params"
_DEPRECATED_PARAMS_SCHEMA = {
    **Arr(STR),
    "description": "present only when the call used deprecated param names: those names, as sent "
    "(rpc.discover shows each one's alias_of)",
}


# --- params ---------------------------------------------------------------------------------------


def param_schema(canonical_schema: dict, canonical: str) -> dict:
    """How rpc.discover shows a deprecated alias: the canonical param's schema, marked."""
    return {
        **canonical_schema,
        "description": f"deprecated alias of {canonical}, accepted for one release: {canonical_schema['description']}",
        "deprecated": True,
        "alias_of": canonical,
    }


def accept(method: str, params: dict, aliases: dict[str, str]) -> tuple[dict, list[str]]:
    """`params` with every alias renamed to its canonical name, and the aliases used (in the order sent).

    Giving an alias and its canonical name together is invalid_params: which one was meant?
    """
    used = [name for name in params if name in aliases]
    if not used:
        return params, []
    out = dict(params)
    for alias in used:
        canonical = aliases[alias]
        if canonical in params:
            raise invalid(alias, f"deprecated alias of {canonical}; give {canonical} only, not both")
        out[canonical] = out.pop(alias)
        _warn_once(method, alias, canonical)
    return out, used


_warned: set[tuple[str, str]] = set()


def _warn_once(method: str, alias: str, canonical: str) -> None:
    # Once per process: a console session calling every few seconds must not fill the agent's log.
    if (method, alias) in _warned:
        return
    _warned.add((method, alias))
    log.warning(
        "%s: param %r is deprecated, use %r (the old name is accepted for one release)", method, alias, canonical
    )


def as_sent(err: RPCError, used: list[str], aliases: dict[str, str]) -> RPCError:
    """An error about a param the caller sent under its alias names the param as the caller sent it."""
    field = err.data.get("field")
    if not isinstance(field, str):
        return err
    for alias in used:
        canonical = aliases[alias]
        if field == canonical or field.startswith((f"{canonical}[", f"{canonical}.")):
            err.data["field"] = alias + field[len(canonical) :]
            if err.message.startswith(field):
                err.message = err.data["field"] + err.message[len(field) :]
            break
    return err


# --- results --------------------------------------------------------------------------------------


def _segments(path: str) -> list[tuple[str, bool]]:
    return [(part[:-2], True) if part.endswith("[]") else (part, False) for part in path.split(".")]


def result_schema(method: str, schema: dict, renamed: dict[str, str], has_param_aliases: bool) -> dict:
    """The declared result schema with each canonical field declared beside its deprecated one, and
    `deprecated_params` when the method has param aliases. Raises if a path names no declared field."""
    schema = copy.deepcopy(schema)  # the declarations share fragments (STR, ECHO_RESULT, ...)
    for path, canonical in renamed.items():
        *parents, (old, _) = _segments(path)
        node = schema
        for key, many in parents:
            node = node.get("properties", {}).get(key)
            if node is None:
                break
            if many:
                node = node.get("items")
        properties = node.get("properties", {}) if isinstance(node, dict) else {}
        if old not in properties or canonical in properties:
            raise RuntimeError(f"{method}: result rename {path} -> {canonical} does not fit the declared schema")
        declared = properties[old]
        node["properties"] = {}  # rebuilt so that rpc.discover lists the canonical field right after the old one
        for key, item in properties.items():
            if key == old:
                node["properties"][old] = {**declared, "description": _deprecated_text(canonical, declared)}
                node["properties"][canonical] = declared
            else:
                node["properties"][key] = item
        if old in node.get("required", ()):
            node["required"].append(canonical)
    if has_param_aliases:
        schema["properties"][DEPRECATED_PARAMS] = _DEPRECATED_PARAMS_SCHEMA
    return schema


def _deprecated_text(canonical: str, schema: dict) -> str:
    text = f"deprecated: the same value as {canonical}, which new code reads; sent until the schema version changes"
    return f"{text} ({schema['description']})" if "description" in schema else text


def with_canonical(result, renamed: dict[str, str]):
    """A copy of `result` where each deprecated field present has its canonical twin beside it."""
    for path, canonical in renamed.items():
        result = _fill(result, _segments(path), canonical)
    return result


def _fill(value, segments: list[tuple[str, bool]], canonical: str):
    if not isinstance(value, dict):
        return value
    (key, many), rest = segments[0], segments[1:]
    if key not in value:
        return value
    if not rest:  # the deprecated field itself: its twin goes right after it
        if canonical in value:
            return value
        out = {}
        for k, item in value.items():
            out[k] = item
            if k == key:
                out[canonical] = item
        return out
    child = value[key]
    if many:
        child = [_fill(item, rest, canonical) for item in child] if isinstance(child, list) else child
    else:
        child = _fill(child, rest, canonical)
    return {**value, key: child}
