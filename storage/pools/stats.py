"""Space per pool and per tier, and whether new instances overflow past the first tier: what pools.list reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .placement import Placement, PoolSpace


@dataclass(frozen=True)
class PoolStats:
    """One pool: its place and watermarks, and its space unless its folder cannot be examined."""

    name: str
    tier: str
    path: Path
    high_watermark: float | None
    low_watermark: float | None
    instances: int
    accepting: bool  # room for a typical instance of this node
    space: PoolSpace | None  # None: `error` says why
    error: str | None = None
    above_high_watermark: bool = False


@dataclass(frozen=True)
class TierStats:
    """The pools of one tier added up (the pools whose space could be read). Sizes in bytes."""

    tier: str
    pools: tuple[str, ...]
    instances: int
    capacity: int
    used: int
    free: int
    room: int


@dataclass(frozen=True)
class StorageStats:
    """Every pool in tier order, the tiers in node.yaml order, and the overflow state."""

    pools: tuple[PoolStats, ...]
    tiers: tuple[TierStats, ...]
    overflow: bool  # the first tier takes nothing more: new instances land on a later tier


def pool_stats(placement: Placement) -> StorageStats:
    """Space per pool and per tier: what pools.list shows."""
    usage = placement.usage()
    count = sum(n for n, _ in usage.values())
    # "Accepting" means room for a typical instance of this node, not for one byte.
    typical = max(1, sum(b for _, b in usage.values()) // count) if count else 1
    pools: list[PoolStats] = []
    tiers: dict[str, list[PoolStats]] = {}
    for pool in placement.in_tier_order():
        cfg = placement.configs.get(pool.name)
        high = cfg.high_watermark if cfg else None
        place = {
            "name": pool.name,
            "tier": pool.tier,
            "path": pool.root,
            "high_watermark": high,
            "low_watermark": cfg.low_watermark if cfg else None,
        }
        try:
            space = placement.space(pool, usage)
        except OSError as err:
            pools.append(
                PoolStats(
                    **place,
                    instances=usage.get(pool.name, (0, 0))[0],
                    accepting=False,
                    space=None,
                    error=f"{pool.root}: {err.strerror}",
                )
            )
            continue
        stats = PoolStats(
            **place,
            instances=space.instances,
            accepting=space.room >= typical,
            space=space,
            above_high_watermark=high is not None and space.used_percent > high,
        )
        pools.append(stats)
        tiers.setdefault(pool.tier, []).append(stats)
    first = placement.tiers[0] if placement.tiers else None
    return StorageStats(
        pools=tuple(pools),
        tiers=tuple(_tier(t, tiers[t]) for t in placement.tiers if t in tiers),
        overflow=first is not None and not any(p.accepting for p in pools if p.tier == first),
    )


def _tier(tier: str, pools: list[PoolStats]) -> TierStats:
    spaces = [p.space for p in pools if p.space is not None]
    return TierStats(
        tier=tier,
        pools=tuple(p.name for p in pools),
        instances=sum(s.instances for s in spaces),
        capacity=sum(s.capacity for s in spaces),
        used=sum(s.used for s in spaces),
        free=sum(s.free for s in spaces),
        room=sum(s.room for s in spaces),
    )
