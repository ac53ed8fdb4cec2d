"""DICOM dates and times as values (PS3.5 6.2 DA, TM): keys that compare in time order, for C-FIND matching.

The index keeps each value as received, for the responses, and beside it a key: a DA as `YYYYMMDD`
text, a TM as microseconds since midnight. Matching compares keys (PS3.4 C.2.2.2.1 single value,
C.2.2.2.5 range), so `14:04:38` (the ACR-NEMA form PS3.5 asks readers to accept) is before
`1405`, and `1015` is not `101530`. A value that is not a valid DA or TM has no key and matches
nothing but universal matching.
"""

from __future__ import annotations

import re

_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_MICRO = 1_000_000


def da_key(text) -> str | None:
    """`YYYYMMDD` from a DA (`YYYYMMDD`, or the ACR-NEMA `YYYY.MM.DD`); None if it is not a date."""
    m = _DA.fullmatch(str(text or "").strip())
    if m is None:
        return None
    year, month, day = m.groups()
    if not ("01" <= month <= "12" and "01" <= day <= "31"):
        return None
    return year + month + day


def _tm_parts(text) -> tuple[int, int] | None:
    """(microseconds since midnight, length of the unit the value is precise to), or None."""
    m = _TM.fullmatch(str(text or "").strip())
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm is not None and int(mm) > 59) or (ss is not None and int(ss) > 60):
        return None
    value = int(hh) * 3600 * _MICRO + int(mm or 0) * 60 * _MICRO + int(ss or 0) * _MICRO
    if frac is not None:
        value += int(frac.ljust(6, "0"))
        unit = 10 ** (6 - len(frac))
    elif ss is not None:
        unit = _MICRO
    elif mm is not None:
        unit = 60 * _MICRO
    else:
        unit = 3600 * _MICRO
    return value, unit


def tm_key(text) -> int | None:
    """Microseconds since midnight from a TM (`HH`, `HHMM`, `HHMMSS`, `HHMMSS.FFFFFF`, or the
    ACR-NEMA `HH:MM:SS`); a partial time is its first instant. None if it is not a time."""
    parts = _tm_parts(text)
    return None if parts is None else parts[0]


def tm_upper(text) -> int | None:
    """The last microsecond a TM names, for the upper bound of a range: `-1015` includes 10:15:59.999999."""
    parts = _tm_parts(text)
    return None if parts is None else parts[0] + parts[1] - 1


class BadValue(ValueError):
    """A date or time in a query that is not one."""


def date_range(value: str) -> tuple[str | None, str | None]:
    """(low, high) keys of a DA query value: one date (low == high) or a range `A-B`, `A-`, `-B`."""
    if "-" not in value:
        key = da_key(value)
        if key is None:
            raise BadValue(f"not a date (YYYYMMDD): {value!r}")
        return key, key
    low, _, high = value.partition("-")
    keys = []
    for part in (low, high):
        key = da_key(part) if part else None
        if part and key is None:
            raise BadValue(f"not a date (YYYYMMDD): {part!r}")
        keys.append(key)
    return keys[0], keys[1]


def time_range(value: str) -> tuple[int | None, int | None, bool]:
    """(low, high, single) keys of a TM query value. A single time matches that time exactly
    (PS3.4 C.2.2.2.1); a range's upper bound includes its whole unit (`-1015`: to 10:15:59.999999)."""
    if "-" not in value:
        key = tm_key(value)
        if key is None:
            raise BadValue(f"not a time (HHMMSS): {value!r}")
        return key, key, True
    low, _, high = value.partition("-")
    low_key = tm_key(low) if low else None
    high_key = tm_upper(high) if high else None
    if (low and low_key is None) or (high and high_key is None):
        raise BadValue(f"not a time range (HHMMSS-HHMMSS): {value!r}")
    return low_key, high_key, False
