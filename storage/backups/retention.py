"""Which complete backups a target keeps: the newest `last`, and the newest of each of the latest `daily` days,
`weekly` ISO weeks and `monthly` months (local time), as rsnapshot and `restic forget --keep-*` count them."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence

from storage.config.backups import Keep


def _newest_per(times: Sequence[tuple[str, float]], period: Callable[[float], tuple], count: int) -> set[str]:
    kept: list[str] = []
    seen: set[tuple] = set()
    for bid, at in sorted(times, key=lambda t: t[1], reverse=True):
        key = period(at)
        if key not in seen:
            seen.add(key)
            kept.append(bid)
            if len(kept) == count:
                break
    return set(kept)


def _day(at: float) -> tuple:
    t = time.localtime(at)
    return (t.tm_year, t.tm_yday)


def _week(at: float) -> tuple:
    return tuple(datetime.date.fromtimestamp(at).isocalendar()[:2])


def _month(at: float) -> tuple:
    t = time.localtime(at)
    return (t.tm_year, t.tm_mon)


def keep_set(backups: Sequence[tuple[str, float]], keep: Keep) -> set[str]:
    """The ids to keep among (id, finished_at); with no rule at all, every one (nothing is ever deleted)."""
    if keep.unlimited:
        return {bid for bid, _ in backups}
    kept: set[str] = set()
    if keep.last:
        kept |= {bid for bid, _ in sorted(backups, key=lambda t: t[1], reverse=True)[: keep.last]}
    for count, period in ((keep.daily, _day), (keep.weekly, _week), (keep.monthly, _month)):
        if count:
            kept |= _newest_per(backups, period, count)
    return kept
