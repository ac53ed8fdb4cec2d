"""Result shapes as JSON Schema fragments: short builders to declare them, and a validator for that subset."""

from __future__ import annotations

import json

# The subset: `type` (a name or a list: ["string", "null"] is a nullable string), `properties`,
# `required`, `additionalProperties` (true, false or a schema), `items` and `enum`; {} accepts
# anything. Stdlib only, like agent.protocol, so a client could check what it decodes with it.
#
# Obj() closes an object (additionalProperties false) so that a field added to a result without
# being declared fails the tests. Clients must still ignore fields they do not know: adding a field
# is free (STYLE 11), and an older console talks to newer nodes.

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
ANY: dict = {}
TIME = {"type": "string", "description": "ISO 8601, UTC"}  # protocol.iso_time


def Obj(required: dict[str, dict], optional: dict[str, dict] | None = None, *, extra: bool | dict = False) -> dict:
    """An object with these keys always present and `optional` ones sometimes; `extra`: what else may be there."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": extra,
    }


def Map(values: dict) -> dict:
    """An object used as a map: any keys, every value of this shape."""
    return {"type": "object", "additionalProperties": values}


def Arr(items: dict) -> dict:
    return {"type": "array", "items": items}


def Enum(*values) -> dict:
    return {"enum": list(values)}


def Null(schema: dict) -> dict:
    """`schema`, or null."""
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    kinds = schema.get("type")
    if kinds is None:
        return schema  # anything already includes null
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


# --- the validator ---------------------------------------------------------------------------------

_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_MAX_ERRORS = 20


def _kind(value) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


def mismatches(value, schema: dict, path: str = "$") -> list[str]:
    """Where `value` does not fit `schema`, as 'path: what' lines (empty: it fits). At most 20."""
    out: list[str] = []
    _check(value, schema, path, out)
    return out[:_MAX_ERRORS]


def _check(value, schema: dict, path: str, out: list[str]) -> None:
    if len(out) >= _MAX_ERRORS:
        return
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[k](value) for k in kinds):
            out.append(f"{path}: expected {' or '.join(kinds)}, got {_kind(value)} {_short(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {_short(value)} is not one of {schema['enum']}")
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                out.append(f"{path}: missing required key {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            where = f"{path}.{name}"
            if name in properties:
                _check(item, properties[name], where, out)
            elif extra is False:
                out.append(f"{where}: not declared (declare it in the method's result schema)")
            elif isinstance(extra, dict):
                _check(item, extra, where, out)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", out)


def _short(value) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
