"""A sparkline on a stated scale: a rate from 0 (Textual's Sparkline scales min..max: 0/s drew full bars)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from . import format as fmt

EIGHTHS = " ▁▂▃▄▅▆▇█"  # a cell filled by 0 to 8 eighths


def bars(data: Sequence[float], width: int, height: int, floor: float | None = None, least: float = 0.0) -> list[str]:
    """`height` lines of `width` cells, top line first. The scale runs from `floor` (default: the data's minimum,
    but at least `least` below its maximum, so that noise is not drawn as swings) to the data's maximum; a value
    at the bottom of the scale draws nothing, any value above it at least one eighth."""
    if width <= 0 or height <= 0:
        return []
    if not data:
        return [" " * width] * height
    high = max(data)
    low = min(min(data), high - least) if floor is None else floor
    steps = height * 8
    levels = []
    for column in range(width):
        start = column * len(data) // width
        bucket = data[start : max(start + 1, (column + 1) * len(data) // width)]
        value = max(bucket)
        if value <= low:
            # A constant series on its own scale (free space that did not move) is a level line, not nothing.
            level = steps // 2 if floor is None and high == low else 0
        else:
            level = max(1, round((value - low) / (high - low) * steps))
        levels.append(level)
    lines = []
    for row in range(height):
        base = (height - 1 - row) * 8
        lines.append("".join(EIGHTHS[min(8, max(0, level - base))] for level in levels))
    return lines


class Spark(Widget):
    """`data` drawn as bars on the scale `bars()` says; the label beside it says what the scale is."""

    DEFAULT_CSS = "Spark { height: 3; }"

    data: reactive[tuple[float, ...]] = reactive(tuple)

    def __init__(self, *, floor: float | None = None, least: float = 0.0, **kw) -> None:
        super().__init__(**kw)
        self.floor = floor
        self.least = least

    def render(self) -> Text:
        return Text("\n".join(bars(self.data, self.size.width, self.size.height, self.floor, self.least)))


def trends(history: Sequence[tuple]) -> tuple[tuple[tuple[float, ...], str], tuple[tuple[float, ...], str]]:
    """From the polls seen, (polled_at, ingest rate, free bytes): the ingest series and its label, then the free
    space series and its label; each label says the value now and the series' max (ingest) or min (free space)."""
    span = history[-1][0] - history[0][0] if len(history) > 1 else None
    ingest = tuple(h[1] for h in history if h[1] is not None)
    free = tuple(h[2] for h in history if h[2] is not None)
    ingest_label = (
        fmt.trend("ingest, instances/s", fmt.rate(ingest[-1]), f"max {fmt.rate(max(ingest))}", span)
        if ingest
        else "ingest, instances/s — no figure yet"
    )
    free_label = (
        fmt.trend("free disk space", fmt.size(free[-1]), f"min {fmt.size(min(free))}", span)
        if free
        else "free disk space — no figure yet"
    )
    return (ingest, ingest_label), (free, free_label)
