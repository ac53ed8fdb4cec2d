"""Auto-routing: rules that forward newly stored instances to registered AEs, matched where they are committed."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

CALLING_AE = "calling_ae"
MAX_KEYS = 32
MAX_DESTINATIONS = 16
MAX_PATTERN = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Values a pattern cannot sensibly match: binary data and sequences.
_UNMATCHABLE_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"}
_BAD_PATTERN = re.compile(r"[\x00-\x1f\x7f\\]")


class RouteError(ValueError):
    """A route definition is wrong; `field` names the part (match.Modality, destinations[1], ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def check_name(value) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise RouteError("name", "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


def check_match(value) -> dict[str, str]:
    """{calling_ae or a DICOM keyword: pattern with * and ? wildcards}; {} matches every instance."""
    if not isinstance(value, dict):
        raise RouteError("match", 'a mapping of DICOM keyword (or calling_ae) to pattern, e.g. {"Modality": "CT"}')
    if len(value) > MAX_KEYS:
        raise RouteError("match", f"at most {MAX_KEYS} keys")
    out = {}
    for key, pattern in value.items():
        where = f"match.{key}" if isinstance(key, str) and key.isprintable() and len(key) <= 64 else "match"
        if key != CALLING_AE:
            tag = tag_for_keyword(key) if isinstance(key, str) else None
            if tag is None:
                raise RouteError(
                    where, "not a DICOM keyword (such as Modality, SOPClassUID, StationName) nor calling_ae"
                )
            vr = dictionary_VR(tag)  # may be "OB or OW", "US or SS", ...
            if any(part in _UNMATCHABLE_VRS for part in vr.split(" or ")):
                raise RouteError(where, f"{key} holds {vr} data, which cannot be matched")
        if not isinstance(pattern, str):
            raise RouteError(where, "a text pattern, with * and ? as wildcards")
        if len(pattern) > MAX_PATTERN:
            raise RouteError(where, f"at most {MAX_PATTERN} characters")
        if _BAD_PATTERN.search(pattern) or any("\ud800" <= ch <= "\udfff" for ch in pattern):
            raise RouteError(where, "must be one line of UTF-8 without backslash or control characters")
        out[key] = pattern
    return out


def compile_pattern(pattern: str) -> re.Pattern:
    """C-FIND style wildcard matching (PS3.4 C.2.2.2.4): `*` any run, `?` one character, the rest
    literal and case-sensitive, like the GLOB that storage/index/query.py builds for the index."""
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _values(ds: Dataset, keyword: str) -> list[str]:
    """The element's value as text, whole and (multi-valued) each value; '' when absent."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value that does not decode matches only as empty
        return [""]
    if value is None:
        return [""]
    if isinstance(value, (list, tuple, MultiValue)):
        items = [str(v) for v in value]
        return ["\\".join(items), *items]
    return [str(value).strip()]


@dataclass(frozen=True)
class Route:
    name: str
    match: tuple[tuple[str, re.Pattern], ...]
    destinations: tuple[str, ...]

    def matches(self, ds: Dataset, calling_ae: str) -> bool:
        for key, pattern in self.match:
            values = [calling_ae] if key == CALLING_AE else _values(ds, key)
            if not any(pattern.fullmatch(v) for v in values):
                return False
        return True


def version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM routes_version WHERE id = 1").fetchone()
    return row[0] if row else 0


def load(conn: sqlite3.Connection) -> list[dict]:
    rows = conn.execute("SELECT * FROM routes ORDER BY name").fetchall()
    return [
        {
            "name": r["name"],
            "match": json.loads(r["match"]),
            "destinations": json.loads(r["destinations"]),
            "created_at": r["created_at"],
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]


def put(conn: sqlite3.Connection, name: str, match: dict, destinations: list[str]) -> bool:
    """Insert a route; False if one has that name already."""
    now = time.time()
    cur = conn.execute(
        "INSERT INTO routes (name, match, destinations, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(name) DO NOTHING",
        (name, json.dumps(match, sort_keys=True), json.dumps(destinations), now, now),
    )
    return cur.rowcount > 0


def using(conn: sqlite3.Connection, ae_title: str) -> list[str]:
    """Names of the routes that forward to this AE title."""
    return [r["name"] for r in load(conn) if ae_title in r["destinations"]]


def remove(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM routes WHERE name = ?", (name,)).rowcount > 0


class Router:
    """The routes compiled once per process and re-read only when routes_version changes, checked
    once per group commit inside its transaction: matching costs a few regex matches per instance,
    and no route means no work at all."""

    def __init__(self):
        self._version: int | None = None
        self.routes: tuple[Route, ...] = ()

    def refresh(self, conn: sqlite3.Connection) -> None:
        current = version(conn)
        if current == self._version:
            return
        self.routes = tuple(
            Route(
                r["name"],
                tuple((k, compile_pattern(p)) for k, p in sorted(r["match"].items())),
                tuple(r["destinations"]),
            )
            for r in load(conn)
        )
        self._version = current

    def destinations(self, ds: Dataset | None, calling_ae: str) -> list[str]:
        if not self.routes or ds is None:
            return []
        out: dict[str, None] = {}
        for route in self.routes:
            if route.matches(ds, calling_ae):
                out.update(dict.fromkeys(route.destinations))
        return list(out)
