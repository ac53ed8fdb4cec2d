"""The agent's wire format: JSON-RPC 2.0 envelopes, error kinds, exit codes and the schema version (stdlib only)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

# Adding a field to a result is free; renaming or removing one bumps this.
SCHEMA_VERSION = 1
JSONRPC = "2.0"

# One request or response per line. A line longer than this is answered with an error and skipped,
# so a runaway client cannot make the agent buffer without bound.
MAX_LINE_BYTES = 1024 * 1024

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
    def from_error(cls, error: dict) -> "RPCError":
        """Rebuild the exception from a response's `error` member (client side)."""
        data = dict(error.get("data") or {}) if isinstance(error, dict) else {}
        kind = data.pop("kind", INTERNAL)
        if kind not in CODES:
            kind = INTERNAL
        return cls(kind, str(error.get("message", "error")) if isinstance(error, dict) else str(error), data,
                   code=error.get("code") if isinstance(error, dict) else None)

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


def decode_line(line: bytes):
    """Parse one line. Invalid UTF-8 survives as lone surrogates so validators can name the field."""
    try:
        return json.loads(line.decode("utf-8", errors="surrogateescape"))
    except ValueError as err:
        raise RPCError(INVALID_PARAMS, f"parse error: not valid JSON ({err})", code=PARSE_ERROR) from None


def parse_request(message) -> tuple[object, str, dict, bool]:
    """(id, method, params, is_notification) from a request object, or RPCError for a bad envelope."""
    if not isinstance(message, dict):
        raise RPCError(INVALID_PARAMS, "invalid request: expected a JSON object", code=INVALID_REQUEST)
    has_id = "id" in message
    req_id = message.get("id")
    if has_id and (isinstance(req_id, bool) or not isinstance(req_id, (str, int, float, type(None)))):
        raise RPCError(INVALID_PARAMS, "invalid request: id must be a string, a number or null",
                       code=INVALID_REQUEST)
    if message.get("jsonrpc") != JSONRPC:
        raise RPCError(INVALID_PARAMS, 'invalid request: "jsonrpc" must be "2.0"', code=INVALID_REQUEST)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RPCError(INVALID_PARAMS, 'invalid request: "method" must be a non-empty string',
                       code=INVALID_REQUEST)
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
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
