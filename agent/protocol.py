"""The wire format: JSON-RPC 2.0 envelopes, error kinds, exit codes, schema version, typed decode() (stdlib only)."""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import UTC, datetime
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

# Adding a field to a result is free; renaming or removing one bumps this.
SCHEMA_VERSION = 1
JSONRPC = "2.0"

# One request or response per line. A line longer than this is answered with an error and skipped,
# so a runaway client cannot make the agent buffer without bound.
MAX_LINE_BYTES = 1024 * 1024

# json.loads recurses once per [ or { and ~1000 levels end the process with RecursionError, so a line
# nested deeper than this is refused before it is parsed. No request or response needs more than ~10.
MAX_DEPTH = 64
# What stands in for a value nested too deep, when the server reads the envelope of a refused line.
NESTED = "…(nested)"

# The stable error kinds (`error.data.kind`), what scripts and the console switch on.
INVALID_PARAMS = "invalid_params"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"
KINDS = (INVALID_PARAMS, NOT_FOUND, FORBIDDEN, CONFLICT, UNAVAILABLE, INTERNAL)

# JSON-RPC error codes per kind: the spec's own where one fits, else the server range -32000..-32099.
CODES = {
    INVALID_PARAMS: -32602,
    NOT_FOUND: -32004,
    FORBIDDEN: -32003,
    CONFLICT: -32009,
    UNAVAILABLE: -32010,
    INTERNAL: -32603,
}
# Envelope-level failures keep the spec's codes; their kind says what a client should do about it.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601

# `pacsdeck agent call` exit status per kind; 0 is success. One meaning per number.
EXIT_CODES = {
    INTERNAL: 1,
    INVALID_PARAMS: 2,
    NOT_FOUND: 3,
    FORBIDDEN: 4,
    CONFLICT: 5,
    UNAVAILABLE: 6,
}


class RPCError(Exception):
    """A call failed with a stable kind and a message a person can act on; `data` adds detail (e.g. field)."""

    def __init__(self, kind: str, message: str, data: dict | None = None, code: int | None = None):
        if kind not in CODES:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.data = dict(data or {})
        self.code = code if code is not None else CODES[kind]

    def to_error(self) -> dict:
        return {"code": self.code, "message": self.message, "data": {**self.data, "kind": self.kind}}

    @classmethod
    def from_error(cls, error: dict) -> RPCError:
        """Rebuild the exception from a response's `error` member (client side)."""
        data = dict(error.get("data") or {}) if isinstance(error, dict) else {}
        kind = data.pop("kind", INTERNAL)
        if kind not in CODES:
            kind = INTERNAL
        return cls(
            kind,
            str(error.get("message", "error")) if isinstance(error, dict) else str(error),
            data,
            code=error.get("code") if isinstance(error, dict) else None,
        )

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


# --- envelopes -------------------------------------------------------------------------------------


def request(method: str, params: dict | None = None, id: int | str | None = 1) -> dict:
    """A request object; id None makes it a notification (no response)."""
    msg = {"jsonrpc": JSONRPC, "method": method, "params": params or {}}
    if id is not None:
        msg["id"] = id
    return msg


def result_response(id, result) -> dict:
    return {"jsonrpc": JSONRPC, "id": id, "result": result}


def error_response(id, err: RPCError) -> dict:
    return {"jsonrpc": JSONRPC, "id": id, "error": err.to_error()}


def encode(message) -> bytes:
    """One line of ASCII JSON: escapes keep stray control bytes and odd code points off the wire."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


class TooDeep(RPCError):
    """A line nested deeper than MAX_DEPTH: a parse error, raised before json.loads could recurse."""

    def __init__(self):
        super().__init__(
            INVALID_PARAMS,
            f"parse error: nested deeper than {MAX_DEPTH} levels",
            {"max_depth": MAX_DEPTH},
            code=PARSE_ERROR,
        )


def decode_line(line: bytes):
    """Parse one line. Invalid UTF-8 survives as lone surrogates so validators can name the field."""
    if nested_deeper(line, MAX_DEPTH):
        raise TooDeep()
    try:
        return json.loads(line.decode("utf-8", errors="surrogateescape"), parse_constant=_not_json, parse_float=_finite)
    except ValueError as err:
        raise RPCError(INVALID_PARAMS, f"parse error: not valid JSON ({err})", code=PARSE_ERROR) from None
    except RecursionError:  # a second guard: nested_deeper() should leave nothing this deep
        raise TooDeep() from None


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; encode() could not answer


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:32]} is too large for a number")
    return value


# Every byte but the ones that shape JSON: brackets, and quotes to tell which brackets are in strings.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def _unescaped(line: bytes, filler: bytes) -> bytes:
    """Escaped backslashes and quotes replaced by `filler` (per byte), so every '"' left opens or ends a string.

    JSON escapes pair from the left of a run of backslashes, as bytes.replace does; UTF-8 never
    puts these ASCII bytes inside a multi-byte character.
    """
    return line.replace(b"\\\\", filler * 2).replace(b'\\"', filler * 2)


def nested_deeper(line: bytes, limit: int) -> bool:
    """Whether [ and { outside strings nest deeper than `limit`; cheap: C-speed filters, then brackets only."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False  # the common case; brackets inside strings only make this count larger
    structure = b"".join(_unescaped(line, b"").translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    depth = 0
    for byte in structure:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def cut_deep(line: bytes, limit: int = MAX_DEPTH) -> bytes:
    """The line with each value nested deeper than `limit` replaced by the NESTED string: safe to parse.

    For a refused line only (a byte-by-byte loop, ~0.1 s per MiB): the server reads its envelope to
    answer with the request's id and to audit the call.
    """
    marker = json.dumps(NESTED).encode()
    pieces, kept, depth, in_string = [], 0, 0, False
    for i, byte in enumerate(_unescaped(line, b"_")):  # same length, so offsets stay put
        if byte == 0x22:  # "
            in_string = not in_string
        elif in_string:
            continue
        elif byte in b"[{":
            depth += 1
            if depth == limit + 1:
                pieces.append(line[kept:i])
        elif byte in b"]}":
            if depth == limit + 1:
                pieces.append(marker)
                kept = i + 1
            depth -= 1
    pieces.append(line[kept:] if depth <= limit else marker)
    return b"".join(pieces)


def parse_request(message) -> tuple[object, str, dict, bool]:
    """(id, method, params, is_notification) from a request object, or RPCError for a bad envelope."""
    if not isinstance(message, dict):
        raise RPCError(INVALID_PARAMS, "invalid request: expected a JSON object", code=INVALID_REQUEST)
    has_id = "id" in message
    req_id = message.get("id")
    if has_id and (isinstance(req_id, bool) or not isinstance(req_id, (str, int, float, type(None)))):
        raise RPCError(INVALID_PARAMS, "invalid request: id must be a string, a number or null", code=INVALID_REQUEST)
    if message.get("jsonrpc") != JSONRPC:
        raise RPCError(INVALID_PARAMS, 'invalid request: "jsonrpc" must be "2.0"', code=INVALID_REQUEST)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RPCError(INVALID_PARAMS, 'invalid request: "method" must be a non-empty string', code=INVALID_REQUEST)
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RPCError(INVALID_PARAMS, "params must be a JSON object (named parameters)", {"field": "params"})
    return req_id, method, params, not has_id


def unwrap(response: dict):
    """Client side: the result of a response, or raise its RPCError."""
    if not isinstance(response, dict) or response.get("jsonrpc") != JSONRPC:
        raise RPCError(INTERNAL, f"not a JSON-RPC 2.0 response: {response!r:.200}")
    if "error" in response:
        raise RPCError.from_error(response["error"])
    return response.get("result")


def iso_time(ts: float | None) -> str | None:
    """Timestamps on the wire: ISO 8601, UTC, seconds with milliseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- typed results (client side) --------------------------------------------------------------------
#
# A client declares the results it reads as frozen dataclasses, field names as on the wire, and
# decode() checks an answer against that declaration once, where it arrives. Both directions of
# STYLE 11 hold: a field an older agent does not send takes the field's default, and a field a newer
# agent adds is ignored. Only a value of the wrong type (or a missing field without a default) fails.

_T = TypeVar("_T")


class ProtocolError(RPCError):
    """An answer that does not fit the shape the client declared for it: says where (a JSON path) and what."""

    def __init__(self, path: str, problem: str, method: str | None = None):
        where = f"{method}: {path}" if method else path
        super().__init__(INTERNAL, f"{where}: {problem}", {"path": path, **({"method": method} if method else {})})
        self.path = path
        self.problem = problem
        self.method = method


class _Mismatch(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(path, problem)
        self.path, self.problem = path, problem


def decode(cls: type[_T], value, method: str | None = None) -> _T:
    """`value` (parsed JSON) as the dataclass `cls`, checked field by field; ProtocolError if it does not fit.

    Field types: str, int, float (an int is a number too, kept as it came), bool, None, `X | None` and
    other unions (first fit wins), list[X], tuple[X, ...], dict[str, X], nested dataclasses, and
    object/Any for any JSON value. A key missing from the answer takes the field's default (an error
    if it has none); keys the class does not declare are ignored. `method` starts the message:
    `health.check: $.checks[2].status: expected string, got integer 3`.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"decode() needs a dataclass, not {cls!r}")
    try:
        return _decode(cls, value, "$")
    except _Mismatch as err:
        raise ProtocolError(err.path, err.problem, method) from None


_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _decode(kind, value, path: str):
    if kind is object or kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        return _decode_object(kind, value, path)
    origin = get_origin(kind)
    if origin is UnionType or origin is Union:
        return _decode_union(get_args(kind), value, path)
    if origin in (list, tuple):
        args = get_args(kind)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"decode() reads a tuple as tuple[X, ...], not {kind!r}")
        if not isinstance(value, list):
            raise _Mismatch(path, _expected("array", value))
        item = args[0] if args else object
        return origin(_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_kind, item = get_args(kind) or (str, object)
        if key_kind is not str:
            raise TypeError(f"decode() reads a JSON object as dict[str, X], not {kind!r}")
        if not isinstance(value, dict):
            raise _Mismatch(path, _expected("object", value))
        return {k: _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if kind is dict or kind is list:
        return _decode(kind[str, object] if kind is dict else kind[object], value, path)
    if kind is type(None) or kind is None:
        if value is not None:
            raise _Mismatch(path, _expected("null", value))
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise _Mismatch(path, _expected("boolean", value))
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # JSON has one number type; 3.0 is an integer (as agent.schema judges it)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Mismatch(path, _expected("integer", value))
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Mismatch(path, _expected("number", value))
        return value  # an int stays an int: 85 is shown as 85, not 85.0
    if kind is str:
        if not isinstance(value, str):
            raise _Mismatch(path, _expected("string", value))
        return value
    raise TypeError(f"decode() cannot read {kind!r} (at {path})")


def _decode_object(cls, value, path: str):
    if not isinstance(value, dict):
        raise _Mismatch(path, _expected("object", value))
    kwargs = {}
    for name, kind, required in _fields(cls):
        if name in value:
            kwargs[name] = _decode(kind, value[name], f"{path}.{name}")
        elif required:
            raise _Mismatch(path, f"missing required key {name!r}")
    return cls(**kwargs)  # absent keys: the dataclass's own defaults


def _decode_union(kinds: tuple, value, path: str):
    others = [k for k in kinds if k is not type(None)]
    if value is None and len(others) < len(kinds):
        return None
    if len(others) == 1:  # X | None: errors inside X keep their deeper path
        return _decode(others[0], value, path)
    for kind in others:
        try:
            return _decode(kind, value, path)
        except _Mismatch:
            continue
    names = [_type_name(k) for k in kinds]
    raise _Mismatch(path, _expected(" or ".join(dict.fromkeys(names)), value))


def _type_name(kind) -> str:
    if dataclasses.is_dataclass(kind) or kind is dict or get_origin(kind) is dict:
        return "object"
    if kind in (list, tuple) or get_origin(kind) in (list, tuple):
        return "array"
    return _JSON_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


@functools.cache
def _fields(cls) -> tuple[tuple[str, object, bool], ...]:
    """(name, type, required) per init field; types resolved once per class (they are strings under PEP 563)."""
    hints = get_type_hints(cls)
    return tuple(
        (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
        if f.init
    )


def _expected(what: str, value) -> str:
    got = _json_kind(value)
    return f"expected {what}, got {got}" if value is None else f"expected {what}, got {got} {_short(value)}"


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (dict, list)):
        return "object" if isinstance(value, dict) else "array"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
