"""Values in node.yaml: ConfigError and the validators and parsers every section shares, each naming the field."""

from __future__ import annotations

import re

OPERATIONS = ("store", "find", "move", "get")


class ConfigError(ValueError):
    """A node.yaml value is wrong; the message names the field (`pools[1].path: not writable`)."""


_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]*[A-Za-z0-9])?$")


def validate_ae_title(value, where: str) -> str:
    """AE title rules from PS3.5 (VR AE): 1-16 chars, printable ASCII, no backslash, not all spaces."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {type(value).__name__}")
    if not value.isascii() or _AE_FORBIDDEN.search(value):
        raise ConfigError(f"{where}: only printable ASCII without backslash is allowed: {value!r}")
    stripped = value.strip()
    if not stripped:
        raise ConfigError(f"{where}: must not be empty")
    if len(stripped) > 16:
        raise ConfigError(f"{where}: at most 16 characters, got {len(stripped)}: {stripped!r}")
    return stripped


def validate_port(value, where: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer port number, got {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{where}: must be between {low} and 65535, got {value}")
    return value


def validate_host(value, where: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOST_RE.match(value):
        raise ConfigError(f"{where}: not a host name or IP address: {value!r}")
    return value


def validate_operations(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where}: must be a non-empty list of {', '.join(OPERATIONS)}")
    for i, op in enumerate(value):
        if op not in OPERATIONS:
            raise ConfigError(f"{where}[{i}]: unknown operation {op!r}; use {', '.join(OPERATIONS)}")
    return tuple(dict.fromkeys(value))


def parse_bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value, where: str) -> int:
    """Bytes from an integer or a string like `500GB`, `1.5TiB`, `2MB` (decimal and binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: a size in bytes or like 500GB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return value
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"{where}: a size in bytes or like 500GB, 1.5TiB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def parse_percent(value, where: str) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: a percentage from 0 to 100, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: a percentage from 0 to 100, got {value!r}")
    return float(value)


def parse_duration(value, where: str) -> float:
    """Seconds from a number or a string like `30s`, `15m`, `1h`, `1d`."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: seconds or like 15m, 1h, 1d, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(value) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{where}: seconds or like 15m, 1h, 1d, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < 1:
        raise ConfigError(f"{where}: at least 1 second, got {value!r}")
    return seconds


def parse_seconds(value, where: str, low: float, high: float) -> float:
    """Seconds as a number (fractions allowed, for tests) or a duration such as 30s, 5m."""
    seconds = parse_duration(value, where) if isinstance(value, str) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not low <= seconds <= high:
        raise ConfigError(f"{where}: seconds from {low:g} to {high:g} (or like 30s, 5m), got {value!r}")
    return float(seconds)
