"""DICOM UID validation and the hashed, never-raw placement of files by UID."""

from __future__ import annotations

import hashlib
import re
import secrets

# PS3.5 9.1: components of digits, no leading zero unless the component is "0", at most 64 chars.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # used with fullmatch: no trailing newline


class InvalidUID(ValueError):
    """A value that should be a UID is not one; the message says which attribute and why."""


def check_uid(value, keyword: str) -> str:
    """Return the UID without its padding, or raise InvalidUID naming the attribute."""
    if value is None:
        raise InvalidUID(f"{keyword} missing")
    text = str(value).rstrip("\x00 ")
    if not text:
        raise InvalidUID(f"{keyword} empty")
    if len(text) > 64:
        raise InvalidUID(f"{keyword} longer than 64 chars")
    if not _UID_RE.fullmatch(text):
        raise InvalidUID(f"{keyword} not a valid UID")
    return text


def check_raw_uid(raw: bytes, keyword: str) -> str:
    """A UID's value as it was encoded, checked strictly (PS3.5 9.1 and 6.2): ASCII digits and dots,
    no leading zero in a component, at most 64 characters, and only the one trailing NUL that pads
    it to an even length; a space, a newline or a second NUL is refused."""
    if raw.endswith(b"\0") and len(raw) % 2 == 0:
        raw = raw[:-1]
    if not raw:
        raise InvalidUID(f"{keyword} empty")
    if len(raw) > 64:
        raise InvalidUID(f"{keyword} longer than 64 chars")
    if not raw.isascii() or not _UID_RE.fullmatch(raw.decode("ascii")):
        raise InvalidUID(f"{keyword} not a valid UID: {raw[:70]!r}")
    return raw.decode("ascii")


def uid_digest(uid: str) -> str:
    """A fixed-length, filesystem-safe name for a validated UID (128 bits of SHA-256)."""
    return hashlib.sha256(uid.encode("ascii")).hexdigest()[:32]


def instance_path(study_uid: str, sop_uid: str) -> str:
    """A new file name for an instance inside a pool: `aa/<study digest>/<instance digest>-<random>.dcm`.

    One folder per study, spread over 256 top folders. The random part makes every write a new
    name, so a second copy (a duplicate racing in, an overwrite) never replaces a file an index row
    points at. Both UIDs must already have passed check_uid; only their digests reach the disk.
    """
    study = uid_digest(study_uid)
    return f"{study[:2]}/{study}/{uid_digest(sop_uid)}-{secrets.token_hex(4)}.dcm"
