"""Placement: which pool takes a new instance (tier order, capacity, reserve), and how full each pool is."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.config.settings import PoolConfig

from .pool import Pool

if TYPE_CHECKING:
    from storage.index.database import Index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSpace:
    """How full one pool is. With a logical `capacity` the indexed bytes count against it (and the
    filesystem's free space still caps what fits); without one the filesystem's own figures do."""

    name: str
    tier: str
    instances: int
    indexed_bytes: int  # sum of the sizes of the instances indexed in this pool
    capacity: int  # logical capacity, else the filesystem's size
    used: int  # bytes counted against `capacity`
    free: int  # bytes that still fit (never more than the filesystem has free)
    reserve: int  # bytes of `free` that new instances never take
    disk_total: int
    disk_free: int  # what an unprivileged writer may still use
    logical: bool  # capacity is the configured one, not the filesystem's
    device: int  # st_dev: two pools on one filesystem do not relieve each other
    disk_used: int = 0  # the whole filesystem's use, whatever holds it (not only this pool)

    @property
    def room(self) -> int:
        return max(0, self.free - self.reserve)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / self.capacity if self.capacity else 100.0


class Placement:
    """New instances go to the first pool of the first tier with room above its reserve, then to
    the next tier (overflow), else nowhere (the caller answers 0xA700)."""

    def __init__(self, pool_configs: tuple[PoolConfig, ...], pools: list[Pool], index: Index):
        self.configs = {c.name: c for c in pool_configs}
        self.pools = pools
        self.index = index
        tiers: list[str] = []
        for pool in pools:
            if pool.tier not in tiers:
                tiers.append(pool.tier)
        self.tiers = tiers  # in the order node.yaml first names them
        self._overflowing = False
        self._lock = threading.Lock()

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)

    def tier_rank(self, pool: Pool) -> int:
        return self.tiers.index(pool.tier)

    def in_tier_order(self) -> list[Pool]:
        return sorted(self.pools, key=self.tier_rank)  # stable: config order within a tier

    def usage(self) -> dict[str, tuple[int, int]]:
        """{pool: (instances, bytes)} as the index counts them (kept by triggers, one small read)."""
        rows = self.index.connection().execute("SELECT pool, instances, bytes FROM pool_usage").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def space(self, pool: Pool, usage: dict[str, tuple[int, int]] | None = None) -> PoolSpace:
        """Raises OSError when the pool's folder cannot be examined."""
        cfg = self.configs.get(pool.name)
        instances, indexed = (usage if usage is not None else self.usage()).get(pool.name, (0, 0))
        st = os.statvfs(pool.root)
        disk_total, disk_free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        if cfg is not None and cfg.capacity is not None:
            capacity, used, logical = cfg.capacity, indexed, True
            free = max(0, min(capacity - indexed, disk_free))
        else:
            capacity, used, logical = disk_total, disk_total - st.f_bfree * st.f_frsize, False
            free = disk_free
        reserve = 0
        if cfg is not None:
            reserve = max(cfg.reserve_bytes, int(capacity * cfg.reserve_percent / 100))
        return PoolSpace(
            name=pool.name,
            tier=pool.tier,
            instances=instances,
            indexed_bytes=indexed,
            capacity=capacity,
            used=used,
            free=free,
            reserve=reserve,
            disk_total=disk_total,
            disk_free=disk_free,
            logical=logical,
            device=os.stat(pool.root).st_dev,
            disk_used=disk_total - st.f_bfree * st.f_frsize,
        )

    def candidates(self, size: int, tiers_after: str | None = None) -> tuple[list[Pool], list[str]]:
        """Pools that have room for `size` bytes, in placement order, and why the others do not.

        `tiers_after`: only pools of tiers after this one (migration targets)."""
        usage = self.usage()
        ok, refused = [], []
        start = self.tiers.index(tiers_after) + 1 if tiers_after is not None else 0
        for pool in self.in_tier_order():
            if self.tier_rank(pool) < start:
                continue
            try:
                space = self.space(pool, usage)
            except OSError as err:
                refused.append(f"{pool.name}: {err.strerror}")
                continue
            if space.room >= size:
                ok.append(pool)
            else:
                refused.append(f"{pool.name}: full ({space.free} bytes free, {space.reserve} reserved)")
        return ok, refused

    def placed(self, pool: Pool) -> None:
        """Log when new instances start or stop overflowing past the first tier (once per change)."""
        overflowing = self.tier_rank(pool) > 0
        if overflowing == self._overflowing:
            return
        with self._lock:
            if overflowing == self._overflowing:
                return
            self._overflowing = overflowing
        if overflowing:
            log.warning(
                "overflow: the %s tier has no room; new instances go to pool %s (tier %s)",
                self.tiers[0],
                pool.name,
                pool.tier,
            )
        else:
            log.info("overflow over: new instances go to pool %s again", pool.name)
