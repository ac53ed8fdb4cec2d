"""pools.list, pools.migrate, pools.verify: disk pools and tiers, their migration plan and checksums."""

from __future__ import annotations

from storage.pools.migration import MigrationBusy, migrate
from storage.pools.plan import MigrationReport, Move, Skipped
from storage.pools.stats import PoolStats, StorageStats, TierStats, pool_stats
from storage.pools.verify import Problem, VerifyReport, verify

from . import validate as v
from .protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, RPCError
from .registry import Method, Param
from .schema import BOOL, INT, NUM, STR, Arr, Enum, Null, Obj


def _pool_name(ctx, value, field: str) -> str:
    name = v.safe_text(value, field, max_len=32)
    if ctx.require_node().placement.pool(name) is None:
        raise RPCError(NOT_FOUND, f"{field}: no pool named {name!r}", {"field": field})
    return name


def list_pools(ctx, params: dict) -> dict:
    return _storage_wire(pool_stats(ctx.require_node().placement))


def run_migration(ctx, params: dict) -> dict:
    """No study list: apply the node's rules. The default is a dry run: the plan, nothing moved."""
    node = ctx.require_node()
    studies = params.get("StudyInstanceUID")
    if studies is not None:
        if not isinstance(studies, list) or not studies or len(studies) > 1000:
            raise v.invalid("StudyInstanceUID", "a list of 1 to 1000 Study Instance UIDs")
        studies = [v.uid(s, f"StudyInstanceUID[{i}]") for i, s in enumerate(studies)]
    target = _pool_name(ctx, params["target_pool"], "target_pool") if params.get("target_pool") is not None else None
    dry_run = v.boolean(params.get("dry_run", True), "dry_run")
    wait = v.boolean(params.get("wait", False), "wait")
    try:
        report = migrate(node, study_uids=studies, target=target, dry_run=dry_run, wait=wait)
    except ValueError as err:
        raise RPCError(INVALID_PARAMS, str(err)) from None
    except MigrationBusy as err:
        raise RPCError(CONFLICT, f"{err}; try again when it has finished") from None
    return _migration_wire(report)


def run_verify(ctx, params: dict) -> dict:
    node = ctx.require_node()
    sample = params.get("sample", 100)
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample <= 1_000_000:
        raise v.invalid("sample", "an integer from 0 (every instance) to 1000000")
    pool = _pool_name(ctx, params["pool"], "pool") if params.get("pool") is not None else None
    return _verify_wire(verify(node, sample=sample, pool=pool))


# --- wire results, field by field: a storage rename never renames a key --------------------------


def _pool_wire(p: PoolStats) -> dict:
    out = {
        "name": p.name,
        "tier": p.tier,
        "path": str(p.path),
        "high_watermark": p.high_watermark,
        "low_watermark": p.low_watermark,
    }
    s = p.space
    if s is None:
        out.update(error=p.error, instances=p.instances, accepting=p.accepting)
        return out
    out.update(
        instances=p.instances,
        indexed_bytes=s.indexed_bytes,
        capacity=s.capacity,
        capacity_is_logical=s.logical,
        used=s.used,
        free=s.free,
        reserve=s.reserve,
        room=s.room,
        used_percent=round(s.used_percent, 2),
        disk_total=s.disk_total,
        disk_free=s.disk_free,
        disk_used=s.disk_used,
        accepting=p.accepting,
        above_high_watermark=p.above_high_watermark,
    )
    return out


def _tier_wire(t: TierStats) -> dict:
    return {
        "tier": t.tier,
        "pools": list(t.pools),
        "instances": t.instances,
        "capacity": t.capacity,
        "used": t.used,
        "free": t.free,
        "room": t.room,
    }


def _storage_wire(stats: StorageStats) -> dict:
    return {
        "pools": [_pool_wire(p) for p in stats.pools],
        "tiers": [_tier_wire(t) for t in stats.tiers],
        "overflow": stats.overflow,
    }


def _move_wire(m: Move) -> dict:
    return {
        "study_uid": m.study_uid,
        "source": m.source,
        "target": m.target,
        "instances": m.instances,
        "bytes": m.bytes,
        "reason": m.reason,
    }


def _skipped_wire(s: Skipped) -> dict:
    """Only the fields that apply (a study that does not exist has no source)."""
    fields = (
        ("study_uid", s.study_uid),
        ("source", s.source),
        ("target", s.target),
        ("bytes", s.bytes),
        ("why", s.why),
        ("rule", s.rule),
    )
    return {key: value for key, value in fields if value is not None}


def _migration_wire(report: MigrationReport) -> dict:
    out = {
        "dry_run": report.dry_run,
        "plan": [_move_wire(m) for m in report.plan],
        "skipped": [_skipped_wire(s) for s in report.skipped],
        "studies": report.studies,
        "instances": report.instances,
        "bytes": report.bytes,
        "reason": report.reason,
    }
    run = report.run
    if run is not None:
        out.update(
            job_id=run.job_id,
            state=run.state,
            moved_instances=run.moved_instances,
            moved_bytes=run.moved_bytes,
            failed_instances=run.failed_instances,
            errors=list(run.errors),
            seconds=round(run.seconds, 3),
            mb_per_s=round(run.mb_per_s, 1) if run.mb_per_s is not None else None,
        )
    return out


def _problem_wire(p: Problem) -> dict:
    out = {
        "sop_uid": p.sop_uid,
        "study_uid": p.study_uid,
        "pool": p.pool,
        "path": p.path,
        "expected_sha256": p.expected_sha256,
        "problem": p.problem,
    }
    if p.problem == "unreadable":
        out["detail"] = p.detail  # may be null: not every OSError has a strerror
    elif p.problem == "corrupt":
        out.update(actual_sha256=p.actual_sha256, size=p.size, expected_size=p.expected_size)
    return out


def _verify_wire(report: VerifyReport) -> dict:
    return {
        "job_id": report.job_id,
        "checked": report.checked,
        "ok": report.ok,
        "problems": [_problem_wire(p) for p in report.problems],
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
    }


# The shapes of the wire results above (from storage/pools/stats.py, plan.py and verify.py).
_POOL = Obj(
    {
        "name": STR,
        "tier": STR,
        "path": STR,
        "high_watermark": Null(NUM),
        "low_watermark": Null(NUM),
        "instances": INT,
        "accepting": BOOL,
    },
    {
        # Present unless `error` says the pool's folder cannot be examined.
        "indexed_bytes": INT,
        "capacity": INT,
        "capacity_is_logical": BOOL,
        "used": INT,
        "free": INT,
        "reserve": INT,
        "room": INT,
        "used_percent": NUM,
        # The pool holds indexed_bytes; disk_* are its filesystem's figures, shared with whatever else is on it.
        "disk_total": INT,
        "disk_free": INT,
        "disk_used": INT,
        "above_high_watermark": BOOL,
        "error": STR,
    },
)
_TIER = Obj({"tier": STR, "pools": Arr(STR), "instances": INT, "capacity": INT, "used": INT, "free": INT, "room": INT})
_MOVE = Obj({"study_uid": STR, "source": STR, "target": STR, "instances": INT, "bytes": INT, "reason": STR})
_SKIPPED = Obj({"why": STR}, {"study_uid": STR, "source": STR, "target": STR, "bytes": INT, "rule": STR})
MIGRATION = Obj(
    {
        "dry_run": BOOL,
        "plan": Arr(_MOVE),
        "skipped": Arr(_SKIPPED),
        "studies": INT,
        "instances": INT,
        "bytes": INT,
        # Why nothing is planned (no rules configured, or which rule found nothing and why); null with a plan.
        "reason": Null(STR),
    },
    {
        # A real run that moved something adds its job and what it did.
        "job_id": INT,
        "state": STR,
        "moved_instances": INT,
        "moved_bytes": INT,
        "failed_instances": INT,
        "errors": Arr(STR),
        "seconds": NUM,
        "mb_per_s": Null(NUM),
    },
)
_PROBLEM = Obj(
    {
        "sop_uid": STR,
        "study_uid": STR,
        "pool": STR,
        "path": STR,
        "expected_sha256": STR,
        "problem": Enum("unknown_pool", "missing", "unreadable", "corrupt"),
    },
    {"detail": Null(STR), "actual_sha256": STR, "size": INT, "expected_size": INT},
)
VERIFY = Obj({"job_id": INT, "checked": INT, "ok": INT, "problems": Arr(_PROBLEM), "bytes": INT, "seconds": NUM})

METHODS = (
    Method(
        "pools.list",
        list_pools,
        "Used, free and capacity per pool and tier; overflow state",
        result=Obj({"pools": Arr(_POOL), "tiers": Arr(_TIER), "overflow": BOOL}),
    ),
    Method(
        "pools.migrate",
        run_migration,
        "The migration plan (dry_run, the default) or the migration itself",
        {
            "StudyInstanceUID": Param(
                "array", "studies to move; without it the node's rules apply", extra={"items": {"type": "string"}}
            ),
            "target_pool": Param("string", "pool to move to; default: the next tier with room"),
            "dry_run": Param("boolean", "only return the plan (default true)"),
            "wait": Param(
                "boolean",
                "wait for a migration already running instead of failing with conflict "
                "(default false; the call blocks until that one ends)",
            ),
        },
        audit=True,
        result=MIGRATION,
    ),
    Method(
        "pools.verify",
        run_verify,
        "Re-read instances and compare size and SHA-256 with the index",
        {
            "sample": Param("integer", "how many random instances; 0 = all (default 100)"),
            "pool": Param("string", "only this pool"),
        },
        result=VERIFY,
    ),
)
