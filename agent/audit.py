"""The audit log: who called what, when, with which (redacted) params and result; and audit.recent."""

from __future__ import annotations

import base64
import hashlib
import logging

from .protocol import iso_time
from .registry import Method, Param
from .validate import limit as valid_limit
from .validate import safe_text

log = logging.getLogger(__name__)

SECRET_KEYS = frozenset({"password", "new_password", "secret", "token", "passphrase"})
_MAX_STRING = 200  # longer strings are cut: the log records the attempt, not a 10 KB payload
_MAX_ITEMS = 50


def fingerprint(key: str) -> str:
    """`TYPE SHA256:...` as ssh-keygen -l prints it; the audit log keeps this instead of the key."""
    parts = key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        return "<not a key>"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{parts[0]} SHA256:{digest}"


def redact(value, key: str | None = None):
    """A copy safe to store: secrets as '***', keys as fingerprints, long strings and lists cut."""
    if key in SECRET_KEYS and value is not None:
        return "***"
    if key == "ssh_keys" and isinstance(value, list):
        return [fingerprint(k) if isinstance(k, str) else redact(k) for k in value[:_MAX_ITEMS]]
    if isinstance(value, dict):
        return {str(k)[:64]: redact(v, k) for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, list):
        return [redact(v) for v in value[:_MAX_ITEMS]]
    if isinstance(value, str) and len(value) > _MAX_STRING:
        return f"{value[:_MAX_STRING]}...({len(value)} chars)"
    return value


def record(ctx, user: str, method: str, params: dict, result: str, message: str = "") -> None:
    """Append one row. A failure is logged loudly but does not turn a done change into an error."""
    if ctx.accounts is None:
        log.error("audit not written (no index): %s %s %s", user, method, result)
        return
    try:
        ctx.accounts.append_audit(user, method, redact(params), result, message[:500])
    except Exception:  # noqa: BLE001 - the change itself is already committed
        log.exception("cannot write the audit log: %s %s %s", user, method, result)


def recent(ctx, params: dict) -> dict:
    accounts = ctx.require_accounts()
    user = safe_text(params.get("user"), "user", max_len=64, required=False, allow_punctuation=True)
    method = safe_text(params.get("method"), "method", max_len=64, required=False)
    rows = accounts.recent_audit(valid_limit(params.get("limit")), user=user, method=method)
    for row in rows:
        row["at"] = iso_time(row["at"])
    return {"entries": rows}


METHODS = (
    Method("audit.recent", recent, "Latest audit log entries, newest first", {
        "limit": Param("integer", "how many (1-1000, default 100)"),
        "user": Param("string", "only this caller, e.g. alice or local:root"),
        "method": Param("string", "only this method, e.g. aets.add"),
    }),
)
