"""The migration plan: which studies move from which pool to which, and why (age, watermark, request); the report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import PoolsContext


@dataclass(frozen=True)
class Move:
    """One study's instances in one pool, to go to another pool, and why."""

    study_uid: str
    source: str
    target: str
    instances: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class Skipped:
    """What the plan leaves where it is, and why. A field is None when it does not apply: a study
    that does not exist has no source, a pool above its watermark with nowhere to go no study."""

    why: str
    study_uid: str | None = None
    source: str | None = None
    target: str | None = None
    bytes: int | None = None
    rule: str | None = None  # the rule (or "requested") that wanted it moved


@dataclass(frozen=True)
class MigrationRun:
    """What a real run did, once it had something to move and a job to record it in."""

    job_id: int
    state: str  # jobs.DONE, jobs.FAILED or jobs.CANCELLED
    moved_instances: int
    moved_bytes: int
    failed_instances: int
    errors: tuple[str, ...]  # the first jobs.MAX_ERRORS
    seconds: float

    @property
    def mb_per_s(self) -> float | None:
        return self.moved_bytes / 1e6 / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class MigrationReport:
    """A migration's plan and what it skipped; `run` is None for a dry run and for a run with nothing to move.
    `reason` says why nothing is planned (None when something is)."""

    dry_run: bool
    plan: tuple[Move, ...]
    skipped: tuple[Skipped, ...]
    run: MigrationRun | None = None
    reason: str | None = None

    @property
    def studies(self) -> int:
        return len({m.study_uid for m in self.plan})

    @property
    def instances(self) -> int:
        return sum(m.instances for m in self.plan)

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.plan)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(
    node: PoolsContext, *, study_uids: list[str] | None = None, target: str | None = None, now: float | None = None
) -> tuple[list[Move], list[Skipped]]:
    """What a migration would move, and what it would have to skip (with why). Changes nothing.

    With `study_uids` those studies go to `target` (default: the next tier with room). Without,
    the rules apply: first every pool above its high watermark sheds its least-recently-accessed
    studies until it would be under its low watermark, then the age rules in their order.
    """
    placement = node.placement
    conn = node.index.connection()
    now = time.time() if now is None else now
    moves: list[Move] = []
    skipped: list[Skipped] = []
    planned: set[tuple[str, str]] = set()
    room: dict[str, int] = {}

    def add(move: Move) -> bool:
        if (move.study_uid, move.source) in planned:
            return True
        if move.target not in room:
            try:
                room[move.target] = placement.space(placement.pool(move.target)).room
            except OSError:
                room[move.target] = 0
        if room[move.target] < move.bytes:
            skipped.append(
                Skipped(
                    study_uid=move.study_uid,
                    source=move.source,
                    target=move.target,
                    bytes=move.bytes,
                    why=f"pool {move.target} has no room for it ({room[move.target]} bytes left above its reserve)",
                    rule=move.reason,
                )
            )
            return False
        room[move.target] -= move.bytes
        planned.add((move.study_uid, move.source))
        moves.append(move)
        return True

    if study_uids is not None:
        for uid in study_uids:
            rows = conn.execute(
                "SELECT pool, count(*), sum(size) FROM instances WHERE study_uid=? GROUP BY pool", (uid,)
            ).fetchall()
            if not rows:
                skipped.append(Skipped(study_uid=uid, why="no such study"))
            for pool_name, count, size in rows:
                dest = target
                if dest is None:
                    source = placement.pool(pool_name)
                    later = placement.candidates(size, tiers_after=source.tier)[0] if source else []
                    if not later:
                        skipped.append(Skipped(study_uid=uid, source=pool_name, why="no later tier has room"))
                        continue
                    dest = later[0].name
                if pool_name != dest:
                    add(Move(uid, pool_name, dest, count, size, "requested"))
        return moves, skipped

    for pool in placement.in_tier_order():
        cfg = placement.configs.get(pool.name)
        if cfg is None or cfg.high_watermark is None:
            continue
        try:
            space = placement.space(pool)
        except OSError:
            continue
        if space.used_percent <= cfg.high_watermark:
            continue
        targets = placement.candidates(1, tiers_after=pool.tier)[0]
        if not space.logical:  # filesystem figures: moving to the same filesystem frees nothing
            targets = [t for t in targets if os.stat(t.root).st_dev != space.device]
        if not targets:
            skipped.append(
                Skipped(
                    source=pool.name,
                    why=f"above its high watermark ({space.used_percent:.1f}% >"
                    f" {cfg.high_watermark:g}%) but no later tier has room on another filesystem",
                )
            )
            continue
        to_free = space.used - int(space.capacity * cfg.low_watermark / 100)
        freed = 0
        for uid, count, size, last in conn.execute(
            "SELECT study_uid, count(*), sum(size), max(last_access) FROM instances WHERE pool=?"
            " GROUP BY study_uid ORDER BY max(last_access), study_uid",
            (pool.name,),
        ):
            if freed >= to_free:
                break
            reason = (
                f"watermark: {pool.name} at {space.used_percent:.1f}% (high {cfg.high_watermark:g}%,"
                f" low {cfg.low_watermark:g}%); least recently accessed, last {_iso(last)}"
            )
            if not add(Move(uid, pool.name, targets[0].name, count, size, reason)):
                break
            freed += size

    for i, rule in enumerate(node.config.migration.rules):
        column = "last_access" if rule.since == "last_access" else "received_at"
        cutoff = now - rule.after_days * 86400
        for uid, count, size, last in conn.execute(
            f"SELECT study_uid, count(*), sum(size), max({column}) FROM instances WHERE pool=?"
            f" GROUP BY study_uid HAVING max({column}) <= ? ORDER BY max({column}), study_uid",
            (rule.source, cutoff),
        ):
            what = "last accessed" if rule.since == "last_access" else "received"
            reason = (
                f"age: {what} {(now - last) / 86400:.1f} days ago; migration.rules[{i}] moves"
                f" {rule.source} to {rule.target} after {rule.after_days:g} days"
            )
            if not add(Move(uid, rule.source, rule.target, count, size, reason)):
                break
    return moves, skipped


def why_nothing(
    node: PoolsContext, skipped: list[Skipped], *, study_uids: list[str] | None = None, now: float | None = None
) -> str:
    """Why a plan is empty, in words a newcomer can act on: no rule configured, or which rule (and which
    watermark) found nothing, and why."""
    if study_uids is not None:
        return (
            f"nothing to move: {len(skipped)} of the requested studies skipped (see skipped)"
            if skipped
            else "nothing to move: the requested studies are already on their target pool"
        )
    placement = node.placement
    conn = node.index.connection()
    now = time.time() if now is None else now
    said: list[str] = []
    if skipped:
        said.append(f"{len(skipped)} skipped (see skipped)")
    for pool in placement.in_tier_order():
        cfg = placement.configs.get(pool.name)
        if cfg is None or cfg.high_watermark is None:
            continue
        try:
            space = placement.space(pool)
        except OSError as err:
            said.append(f"{pool.name}: its folder cannot be examined ({err.strerror})")
            continue
        if space.used_percent <= cfg.high_watermark:
            said.append(
                f"{pool.name} is at {space.used_percent:.1f}%, under its high watermark ({cfg.high_watermark:g}%)"
            )
    rules = node.config.migration.rules
    if not rules:
        said.append("no migration rules configured (migration.rules in node.yaml)")
    for i, rule in enumerate(rules):
        column = "last_access" if rule.since == "last_access" else "received_at"
        what = "last accessed" if rule.since == "last_access" else "received"
        # A study's age is that of its newest instance there, as plan() counts it.
        count, oldest = conn.execute(
            f"SELECT count(*), min(age) FROM (SELECT max({column}) AS age FROM instances WHERE pool=?"
            " GROUP BY study_uid)",
            (rule.source,),
        ).fetchone()
        if not count:
            said.append(f"migration.rules[{i}]: no study on {rule.source}")
        else:
            there = f"{count} {'study' if count == 1 else 'studies'} there"
            said.append(
                f"migration.rules[{i}]: no study on {rule.source} {what} more than {rule.after_days:g} days ago"
                f" ({there}, the oldest {what} {(now - oldest) / 86400:.1f} days ago)"
            )
    return "nothing to move: " + "; ".join(said)
