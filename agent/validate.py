"""Parameter validators: each returns a clean value or raises invalid_params naming the field."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date

from storage.config.values import ConfigError, validate_ae_title, validate_host, validate_operations, validate_port

from .protocol import INVALID_PARAMS, RPCError

MAX_TEXT = 256
MAX_KEY = 8192  # an ssh-rsa 16384-bit public key is ~2.8 KB in base64; nothing legitimate is longer
MIN_RSA_BITS = 2048  # NIST SP 800-131A disallows RSA signature keys under 2048 bits after 2013

# Fragments that mean "someone is trying to reach a shell or a path", never part of a real value.
_INJECTION = (
    (";", "';'"),
    ("$(", "'$('"),
    ("`", "a backtick"),
    ("../", "'../'"),
    ("..\\", "'..\\'"),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_DATE = re.compile(r"^\d{8}$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DICOM_PATTERN = re.compile(r"^[^\x00-\x1f\x7f\\]*$")

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


def invalid(field: str, message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, f"{field}: {message}", {"field": field})


def _has_surrogates(value: str) -> bool:
    # Bytes that were not UTF-8 arrive as lone surrogates (see protocol.decode_line).
    return any("\ud800" <= ch <= "\udfff" for ch in value)


def safe_text(
    value,
    field: str,
    *,
    max_len: int = MAX_TEXT,
    required: bool = True,
    allow_empty: bool = False,
    allow_punctuation: bool = False,
) -> str | None:
    """A single-line UTF-8 string with no control characters; by default no shell or path fragments."""
    if value is None:
        if required:
            raise invalid(field, "required")
        return None
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, got {type(value).__name__}")
    if _has_surrogates(value):
        raise invalid(field, "not valid UTF-8")
    if len(value) > max_len:
        raise invalid(field, f"at most {max_len} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise invalid(field, "must be one line without control characters")
    if not allow_punctuation:
        for fragment, name in _INJECTION:
            if fragment in value:
                raise invalid(field, f"must not contain {name}")
        if value.startswith("-"):
            raise invalid(field, "must not start with '-'")
    if not value and not allow_empty:
        raise invalid(field, "must not be empty")
    return value


def _translate(err: ConfigError, field: str) -> RPCError:
    # storage's validators start the message with the `where` we passed, made precise ("operations[1]").
    message = str(err)
    where = message.split(":", 1)[0]
    return RPCError(INVALID_PARAMS, message, {"field": where if where.startswith(field) else field})


def ae_title(value, field: str = "ae_title") -> str:
    safe_text(value, field, max_len=64)
    try:
        return validate_ae_title(value, field)
    except ConfigError as err:
        raise _translate(err, field) from None


def host(value, field: str = "host") -> str:
    safe_text(value, field, max_len=253)
    try:
        return validate_host(value, field)
    except ConfigError as err:
        raise _translate(err, field) from None


def port(value, field: str = "port") -> int:
    try:
        return validate_port(value, field)
    except ConfigError as err:
        raise _translate(err, field) from None


def operations(value, field: str = "operations") -> list[str]:
    try:
        return list(validate_operations(value, field))
    except ConfigError as err:
        raise _translate(err, field) from None


def boolean(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, f"must be true or false, got {value!r:.40}")
    return value


def description(value, field: str = "description") -> str:
    # Free text shown to people and never executed, so punctuation such as ';' is fine here.
    return safe_text(value, field, max_len=MAX_TEXT, allow_empty=True, allow_punctuation=True)


def user_name(value, field: str = "name") -> str:
    safe_text(value, field, max_len=32)
    if not _USER_NAME.match(value):
        raise invalid(field, "lowercase letters, digits, '_', '.', '-', starting with a letter or '_' (max 32)")
    return value


def limit(value, field: str = "limit", default: int = 100, maximum: int = 1000) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise invalid(field, f"an integer from 1 to {maximum}")
    return value


def timeout(value, field: str = "timeout", default: float = 5.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 60:
        raise invalid(field, "seconds, from 0.1 to 60")
    return float(value)


def uid(value, field: str) -> str:
    safe_text(value, field, max_len=64)
    if not _UID.match(value):
        raise invalid(field, "not a valid DICOM UID")
    return value


def dicom_pattern(value, field: str, max_len: int = 64) -> str:
    """A C-FIND style match value: literal text plus '*' and '?' wildcards; never executed, only matched."""
    safe_text(value, field, max_len=max_len, allow_punctuation=True)
    if not _DICOM_PATTERN.match(value):
        raise invalid(field, "must not contain a backslash or control characters")
    return value


def date_range(value, field: str = "StudyDate") -> tuple[str | None, str | None]:
    """`YYYYMMDD`, `A-B`, `A-` or `-B` (PS3.4 C.2.2.2.5 range matching) -> (low, high), inclusive."""
    safe_text(value, field, max_len=17, allow_punctuation=True)
    if "-" in value:
        low, _, high = value.partition("-")
        if not low and not high:
            raise invalid(field, "a date YYYYMMDD or a range A-B, A- or -B")
    else:
        low = high = value
    for part in (low, high):
        if part and not (_DATE.match(part) and _real_date(part)):
            raise invalid(field, f"{part!r} is not a date YYYYMMDD")
    if low and high and low > high:
        raise invalid(field, "the range starts after it ends")
    return low or None, high or None


def _real_date(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def ssh_key(value, field: str) -> tuple[str, str]:
    """An OpenSSH public key line -> (type, base64 blob). The comment is dropped; options are refused.

    The blob is parsed as a key (paramiko) and must encode back to itself: a key cut short or with
    bytes added would otherwise land in authorized_keys as a line no client can ever use.
    """
    # Base64 never holds ';', '$(', backticks or '../', so the full check costs a real key nothing.
    safe_text(value, field, max_len=MAX_KEY)
    parts = value.strip().split()
    if len(parts) < 2:
        raise invalid(field, "expected 'TYPE BASE64 [comment]', e.g. 'ssh-ed25519 AAAA... alice@laptop'")
    key_type, blob_b64 = parts[0], parts[1]
    if key_type not in SSH_KEY_TYPES:
        raise invalid(field, f"key type must be one of {', '.join(SSH_KEY_TYPES)} (no options before it)")
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, f"not a valid {key_type} key (the key is not valid base64)") from None
    key = _parse_key(key_type, blob, field)
    if key_type == "ssh-rsa" and key.get_bits() < MIN_RSA_BITS:
        raise invalid(field, f"the ssh-rsa key has {key.get_bits()} bits; at least {MIN_RSA_BITS} are needed")
    return key_type, blob_b64


def _parse_key(key_type: str, blob: bytes, field: str):
    import paramiko  # here, not at the top: ~150 ms that only users.add/update need, not every agent start

    try:
        key = paramiko.PKey.from_type_string(key_type, blob)
        # paramiko pads a short blob with zero bytes and ignores bytes after the key: compare.
        same = key.get_name() == key_type and key.asbytes() == blob
    except Exception as err:  # noqa: BLE001 - SSHException, ValueError, struct.error...: where the data ended
        raise invalid(field, f"not a valid {key_type} key ({_why(err)})") from None
    if not same:
        raise invalid(field, f"not a valid {key_type} key (the key data is cut short or has bytes added)")
    return key


def _why(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 80 and text.isprintable() else type(err).__name__


def reject_unknown(params: dict, allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            shown = key if isinstance(key, str) and len(key) <= 64 and key.isprintable() else repr(key)[:64]
            raise invalid(shown, f"unknown parameter; expected {', '.join(sorted(allowed)) or 'none'}")
