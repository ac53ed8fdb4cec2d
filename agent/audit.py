"""The audit log: who called what, when, with which (redacted) params and result; and audit.recent."""

from __future__ import annotations

import base64
import hashlib
import json
import logging

from storage.index import catalog_users

from .protocol import NESTED, iso_time
from .registry import Method, Param
from .schema import ANY, INT, STR, TIME, Arr, Map, Obj
from .validate import limit as valid_limit
from .validate import safe_text

log = logging.getLogger(__name__)

SECRET_KEYS = frozenset({"password", "new_password", "secret", "token", "passphrase"})
# The row records the attempt, not the payload, and must be writable whatever the params: the
# summary below is at most this deep, this many items per level and this much JSON.
_MAX_STRING = 200
_MAX_ITEMS = 50
_MAX_DEPTH = 8
MAX_PARAMS_JSON = 4096
TRUNCATED = "…(truncated)"


def fingerprint(key: str) -> str:
    """`TYPE SHA256:...` as ssh-keygen -l prints it; the audit log keeps this instead of the key."""
    parts = key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        return "<not a key>"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{parts[0]} SHA256:{digest}"


def redact(value, key: str | None = None, depth: int = 0):
    """A copy safe to store: secrets as '***', keys as fingerprints; long strings, lists and depth cut."""
    if key in SECRET_KEYS and value is not None:
        return "***"
    if isinstance(value, (dict, list)) and depth >= _MAX_DEPTH:
        return NESTED
    if key == "ssh_keys" and isinstance(value, list):
        return _cut(
            [fingerprint(k) if isinstance(k, str) else redact(k, depth=depth + 1) for k in value[:_MAX_ITEMS]],
            len(value),
        )
    if isinstance(value, dict):
        kept = {str(k)[:64]: redact(v, k, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
        if len(value) > _MAX_ITEMS:
            kept[TRUNCATED] = f"{len(value) - _MAX_ITEMS} more"
        return kept
    if isinstance(value, list):
        return _cut([redact(v, depth=depth + 1) for v in value[:_MAX_ITEMS]], len(value))
    if isinstance(value, str) and len(value) > _MAX_STRING:
        return f"{value[:_MAX_STRING]}...({len(value)} chars)"
    return value


def _cut(items: list, total: int) -> list:
    return items + [f"{TRUNCATED} {total - len(items)} more"] if total > len(items) else items


def summary(params: dict) -> dict:
    """What an audit row keeps of a call's params: redacted, and at most MAX_PARAMS_JSON bytes of JSON."""
    safe = redact(params)
    text = json.dumps(safe, sort_keys=True)
    if len(text) <= MAX_PARAMS_JSON:
        return safe
    # 1 KiB of that JSON: quoted once more it at most doubles, so the row stays well under the cap.
    return {TRUNCATED: f"{text[:1024]}...({len(text)} bytes of JSON)"}


def _storable(text: str, max_len: int) -> str:
    """Cut, with lone surrogates (invalid UTF-8 in the request) escaped: sqlite stores only UTF-8."""
    return text[:max_len].encode("utf-8", "backslashreplace").decode("utf-8")


def record(ctx, user: str, method: str, params: dict, result: str, message: str = "") -> None:
    """Append one row; bounded params, so a refused call's row is written whatever it sent.

    A failure (e.g. the index unwritable) is logged loudly but does not turn a done change into an error.
    """
    if ctx.accounts is None:
        log.error("audit not written (no index): %s %s %s", user, method, result)
        return
    try:
        ctx.accounts.append_audit(
            _storable(user, 64), _storable(method, 64), summary(params), result, _storable(message, 500)
        )
    except Exception:  # the change itself is already committed
        log.exception("cannot write the audit log: %s %s %s", user, method, result)


def recent(ctx, params: dict) -> dict:
    accounts = ctx.require_accounts()
    user = safe_text(params.get("user"), "user", max_len=64, required=False, allow_punctuation=True)
    method = safe_text(params.get("method"), "method", max_len=64, required=False)
    entries = catalog_users.recent_audit(accounts, valid_limit(params.get("limit")), user=user, method=method)
    return {
        "entries": [
            {
                "id": e.id,
                "at": iso_time(e.at),
                "user": e.user,
                "method": e.method,
                "params": e.params,
                "result": e.result,
                "message": e.message,
            }
            for e in entries
        ]
    }


# result: "ok" or the error kind the call failed with; params: the call's, redacted (see summary()).
ENTRY = Obj({"id": INT, "at": TIME, "user": STR, "method": STR, "params": Map(ANY), "result": STR, "message": STR})


METHODS = (
    Method(
        "audit.recent",
        recent,
        "Latest audit log entries, newest first",
        {
            "limit": Param("integer", "how many (1-1000, default 100)"),
            "user": Param("string", "only this caller, e.g. alice or local:root"),
            "method": Param("string", "only this method, e.g. aets.add"),
        },
        result=Obj({"entries": Arr(ENTRY)}),
    ),
)
