"""How the console writes figures in a cell: percentages, rates, ages, sizes and times (no Textual)."""

from __future__ import annotations

import time

DASH = "–"  # a value the node did not give (no queue, no backups, unreachable)


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}%"


def rate(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def count(value: int | None) -> str:
    return DASH if value is None else str(value)


def age(seconds: float | None) -> str:
    """Largest sensible unit: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return DASH
    seconds = max(0.0, float(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def size(value: int | float | None) -> str:
    if value is None:
        return DASH
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns at TiB


def clock(at: float | None) -> str:
    """UTC wall-clock time, HH:MM:SSZ: the same on every admin's screen and in the node's logs."""
    return DASH if at is None else time.strftime("%H:%M:%SZ", time.gmtime(at))


def text(value) -> str:
    return DASH if value is None or value == "" else str(value)


def trend(title: str, now: str, extreme: str, span_s: float | None) -> str:
    """A sparkline's label that gives its scale: `ingest, instances/s — now 0.0, max 12.4 over 5m`."""
    window = f" over {age(span_s)}" if span_s else ""
    return f"{title} — now {now}, {extreme}{window}"


def clip(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"
