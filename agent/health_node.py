"""PACS checks for health.check: pools (space, inodes, read-only, fsync, forecast), node, index, backup, queue."""

from __future__ import annotations

import errno
import os
import secrets
import time

import psutil

from storage.index import catalog_activity
from storage.pools.pool import TEMP_SUFFIX
from storage.workers import running_node_pid

from .health_host import CRIT, OK, UNKNOWN, WARN, check
from .node_status import _probe_address, listening

_PROBE_BYTES = 4096
_INTEGRITY_TTL = 300.0  # quick_check reads the whole index; a console polling every 5 s must not repeat it
_FORECAST_TTL = 300.0  # the ingest-rate query scans the instances table
_FAILED_JOBS_WINDOW = 86400.0


def _worst(*statuses: str) -> str:
    order = {OK: 0, UNKNOWN: 1, WARN: 2, CRIT: 3}
    return max(statuses, key=order.__getitem__)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"


def pool_filesystem(node, pool, hc) -> dict:
    name = f"pool:{pool.name}:filesystem"
    try:
        st = os.statvfs(pool.root)
    except OSError as err:
        return check(
            name,
            CRIT,
            None,
            "%",
            None,
            f"pool {pool.name}: cannot examine {pool.root} ({err.strerror}); "
            "is the disk mounted? New instances go to the next pool meanwhile",
        )
    used_pct = 100.0 * (st.f_blocks - st.f_bfree) / st.f_blocks if st.f_blocks else 0.0
    inode_pct = 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else 0.0
    read_only = bool(st.f_flag & os.ST_RDONLY)
    space = None
    try:
        space = node.placement.space(pool)
    except OSError:
        pass
    logical_pct = space.used_percent if space is not None and space.logical else None
    detail = {
        "path": str(pool.root),
        "tier": pool.tier,
        "total_bytes": st.f_blocks * st.f_frsize,
        "free_bytes": st.f_bavail * st.f_frsize,
        "used_percent": round(used_pct, 2),
        "inodes_used_percent": round(inode_pct, 2),
        "read_only": read_only,
        "capacity_used_percent": None if logical_pct is None else round(logical_pct, 2),
        "room_bytes": None if space is None else space.room,
    }
    td, ti = hc["disk_percent"], hc["inodes_percent"]
    threshold = f"{td.describe('%')}; inodes {ti.describe('%')}"
    value = max(used_pct, logical_pct or 0.0)
    if read_only:
        return check(
            name,
            CRIT,
            round(value, 1),
            "%",
            threshold,
            f"pool {pool.name} ({pool.root}) is on a read-only filesystem: new instances go to the next "
            "pool. Look in dmesg for I/O errors (the kernel remounts a failing disk read-only), repair it, "
            f"then remount it read-write (mount -o remount,rw {pool.root})",
            **detail,
        )
    status = _worst(td.status(value), ti.status(inode_pct))
    what = "capacity" if logical_pct is not None and logical_pct >= used_pct else "filesystem"
    message = (
        f"pool {pool.name}: {what} {value:.1f}% used, {_gib(st.f_bavail * st.f_frsize)} free, "
        f"inodes {inode_pct:.1f}% used"
    )
    if status != OK:
        message += (
            "; free space now: migrate old studies to the next tier (pools.migrate), add a pool or grow the filesystem"
        )
    return check(name, status, round(value, 1), "%", threshold, message, **detail)


def pool_fsync(pool, hc) -> dict:
    """Write, fsync and remove a small file, as ingest does per instance; a slow or failing disk shows here."""
    name = f"pool:{pool.name}:fsync"
    t = hc["fsync_ms"]
    # The temp suffix makes a probe left behind by a crash one more temp file the node's startup sweeps.
    path = os.path.join(pool.root, f".health-probe-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    started = time.perf_counter()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as err:
        hint = {
            errno.EROFS: "the filesystem is read-only: check dmesg for disk errors, repair, then remount it rw",
            errno.ENOSPC: "the filesystem is full: free space or migrate studies to the next tier",
            errno.EACCES: f"permission denied: the node's account must own {pool.root}",
            errno.EIO: "I/O error: the disk is failing; check dmesg and SMART and replace it",
        }.get(err.errno, "check the disk and the mount")
        return check(
            name,
            CRIT,
            None,
            "ms",
            t.describe(" ms"),
            f"pool {pool.name}: cannot write a test file in {pool.root} ({err.strerror}); {hint}. "
            "New instances go to the next pool meanwhile",
        )
    ms = (time.perf_counter() - started) * 1000
    status = t.status(ms)
    message = f"pool {pool.name}: 4 KiB write + fsync in {ms:.1f} ms"
    if status != OK:
        message += "; the disk is slow to make data durable, which slows every C-STORE: check iostat and SMART"
    return check(name, status, round(ms, 2), "ms", t.describe(" ms"), message)


def _ingest_by_pool(ctx, node, window_s: float) -> dict[str, catalog_activity.PoolIngest]:
    cached = ctx.cache.get("forecast") if ctx is not None else None
    if cached and time.monotonic() - cached[0] < _FORECAST_TTL:
        return cached[1]
    found = catalog_activity.ingest_by_pool(node.index, time.time() - window_s)
    if ctx is not None:
        ctx.cache["forecast"] = (time.monotonic(), found)
    return found


def pool_forecasts(ctx, node, hc) -> list[dict]:
    """Days until each pool has no room left, at the rate instances now in it arrived over the window."""
    t = hc["forecast_days"]
    window_s = hc.forecast_window_days * 86400
    ingest = _ingest_by_pool(ctx, node, window_s)
    now = time.time()
    out = []
    for pool in node.pools:
        name = f"pool:{pool.name}:forecast"
        try:
            room = node.placement.space(pool).room
        except OSError as err:
            out.append(
                check(
                    name,
                    UNKNOWN,
                    None,
                    "days",
                    t.describe(" days"),
                    f"pool {pool.name}: no forecast, its folder cannot be examined ({err.strerror})",
                )
            )
            continue
        history = ingest.get(pool.name, catalog_activity.PoolIngest(0, None))
        received, first = history.received_bytes, history.first_received_at
        # A node younger than the window has a shorter history; never extrapolate from under an hour.
        span = max(3600.0, min(window_s, now - first)) if first else window_s
        per_day = received / span * 86400
        detail = {"room_bytes": room, "ingest_bytes_per_day": round(per_day), "window_days": round(span / 86400, 2)}
        if room <= 0:
            out.append(
                check(
                    name,
                    CRIT,
                    0.0,
                    "days",
                    t.describe(" days"),
                    f"{pool.name} has no room left above its "
                    "reserve now: migrate studies (pools.migrate) or add capacity",
                    **detail,
                )
            )
            continue
        if per_day <= 0:
            out.append(
                check(
                    name,
                    OK,
                    None,
                    "days",
                    t.describe(" days"),
                    f"{pool.name}: no ingest in the last "
                    f"{hc.forecast_window_days:g} days, nothing to forecast; {_gib(room)} of room",
                    **detail,
                )
            )
            continue
        days = room / per_day
        status = t.status(days)
        history = f"the last {span / 86400:.1f} days" if span >= 86400 else f"only {span / 3600:.1f} hours of data"
        when = f"~{days:.0f} days" if days < 3650 else "more than 10 years"
        message = (
            f"{pool.name} full in {when} ({_gib(per_day)}/day over {history}; {_gib(room)} of room above the reserve)"
        )
        if status != OK:
            message += ": add capacity or a migration rule that moves older studies to the next tier"
        out.append(check(name, status, round(days, 1), "days", t.describe(" days"), message, **detail))
    return out


def node_process(ctx, node, hc) -> list[dict]:
    cfg = node.config
    t = hc["node_rss_mb"]
    up = listening(ctx, _probe_address(cfg.bind), cfg.port)
    pid = running_node_pid(cfg.node_dir)
    start_hint = f"start it: `pacsdeck node run --config {cfg.path}` (or its systemd service)"
    if pid is None:
        return [
            check(
                "node_process",
                CRIT,
                None,
                "MiB",
                t.describe(" MiB"),
                f"the node is not running, so nothing receives studies; {start_hint}",
            ),
            check(
                "scp_listening",
                CRIT if not up else WARN,
                up,
                None,
                "listening",
                f"port {cfg.port} is not listening"
                if not up
                else f"something else listens on port {cfg.port} while the node is stopped: find it (ss -ltnp)",
            ),
        ]
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        rss = threads = associations = 0
        for p in procs:
            with p.oneshot():
                rss += p.memory_info().rss
                threads += p.num_threads()
            associations += sum(
                1
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == cfg.port
            )
    except psutil.Error as err:
        return [
            check(
                "node_process",
                UNKNOWN,
                None,
                "MiB",
                t.describe(" MiB"),
                f"node pid {pid} holds the lock but cannot be examined ({err})",
            )
        ]
    workers = len(procs) - 1 if len(procs) > 1 else 1
    expected = cfg.worker_count()
    rss_mb = rss / 2**20
    status = t.status(rss_mb)
    message = (
        f"running (pid {pid}, {workers} worker{'s' if workers != 1 else ''}), {rss_mb:.0f} MiB RSS, "
        f"{threads} threads, {associations} open associations"
    )
    if expected > 1 and workers < expected:
        status = _worst(status, WARN)
        message += f"; only {workers} of {expected} workers are alive: restart the node"
    if t.status(rss_mb) != OK:
        message += "; memory use is high: restart the node in a quiet moment and report it"
    return [
        check(
            "node_process",
            status,
            round(rss_mb, 1),
            "MiB",
            t.describe(" MiB"),
            message,
            pid=pid,
            workers=workers,
            threads=threads,
            open_associations=associations,
            rss_bytes=rss,
            rss_note="summed over the supervisor and its workers; shared pages count once per process",
        ),
        check(
            "scp_listening",
            OK if up else CRIT,
            up,
            None,
            "listening",
            f"the SCP accepts TCP on {cfg.bind}:{cfg.port}"
            if up
            else f"the node runs but nothing accepts on port {cfg.port}: see its log, then restart it",
        ),
    ]


def index_integrity(ctx, node) -> dict:
    cached = ctx.cache.get("quick_check") if ctx is not None else None
    if cached and time.monotonic() - cached[0] < _INTEGRITY_TTL:
        return cached[1]
    started = time.perf_counter()
    try:
        rows = catalog_activity.quick_check(node.index)
    except Exception as err:  # noqa: BLE001 - sqlite3.DatabaseError and friends: the answer is "broken"
        rows = [str(err)]
    ms = (time.perf_counter() - started) * 1000
    if rows == ["ok"]:
        result = check(
            "index_integrity",
            OK,
            "ok",
            None,
            "quick_check ok",
            f"index quick_check ok ({ms:.0f} ms)",
            checked_at=time.time(),
        )
    else:
        result = check(
            "index_integrity",
            CRIT,
            rows[0],
            None,
            "quick_check ok",
            f"the index is damaged ({'; '.join(rows[:3])}): stop the node, keep a copy of index.sqlite, "
            "then rebuild it from the pools with `pacsdeck node reindex`",
            problems=rows[:20],
        )
    if ctx is not None:
        ctx.cache["quick_check"] = (time.monotonic(), result)
    return result


def backup_age(node, hc) -> dict:
    t = hc["backup_age_hours"]
    last = catalog_activity.last_backup_at(node.index)
    if last is None:
        return check(
            "backup_age",
            UNKNOWN,
            None,
            "hours",
            t.describe(" h"),
            "no successful backup is recorded for this node: configure and run backups (backups.run) "
            "so the index and studies can be restored",
        )
    hours = (time.time() - last) / 3600
    status = t.status(hours)
    message = f"last successful backup {hours:.1f} hours ago"
    if status != OK:
        message += ": backups are not running; check queue.list for failed backup jobs"
    return check("backup_age", status, round(hours, 2), "hours", t.describe(" h"), message)


def queue_backlog(node, hc) -> list[dict]:
    tb, to = hc["queue_backlog"], hc["queue_oldest_hours"]
    backlog = catalog_activity.queue_backlog(node.index, time.time() - _FAILED_JOBS_WINDOW)
    count, oldest, failed = backlog.pending, backlog.oldest_created_at, backlog.failed
    age_h = (time.time() - oldest) / 3600 if oldest else 0.0
    status = _worst(tb.status(count), to.status(age_h) if count else OK)
    message = f"{count} jobs pending" + (f", oldest {age_h:.1f} hours old" if count else "")
    if status != OK:
        message += ": the queue is not draining; look at queue.list for the job that is stuck"
    if failed:
        status = _worst(status, WARN)
        message += f"; {failed} jobs failed in the last 24 hours: see queue.list and retry them (queue.retry)"
    return [
        check(
            "queue_backlog",
            status,
            count,
            "jobs",
            f"{tb.describe()}; oldest {to.describe(' h')}",
            message,
            oldest_age_s=round(age_h * 3600, 1),
            failed_last_24h=failed,
        )
    ]
