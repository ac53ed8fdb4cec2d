"""`pacsdeck fleet status` and `fleet trust` without the TUI: one poll as a table or JSON, and the trust step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.protocol import SCHEMA_VERSION, iso_time

from .hostkeys import KnownHosts, fingerprint, host_pattern, scan_host_key
from .inventory import LOCAL, Fleet, load_fleet
from .snapshot import STATUSES, NodeSnapshot, fleet_exit_code, poll_fleet
from .transport import open_transport

# `fleet status`: 0 all up, 1 degraded, 2 down/unreachable/untrusted/critical (snapshot.fleet_exit_code),
# 3 the fleet file is unusable (nothing was polled). Same numbers as a Nagios plugin's OK/WARNING/CRITICAL/UNKNOWN.
EXIT_FLEET_CONFIG = 3
# `fleet trust`: 0 pinned (or already pinned), 1 not pinned (refused, not confirmed, cannot reach), 2 bad
# arguments (unknown or local node), 3 the fleet file is unusable.
TRUST_OK, TRUST_REFUSED, TRUST_USAGE = 0, 1, 2

COLUMNS = (
    "node",
    "site",
    "status",
    "version",
    "AE:port",
    "primary%",
    "archive%",
    "ingest/s",
    "queue p/f",
    "backup",
    "worst check",
    "reason",
)


def close_transports(transports: dict) -> None:
    """Close every node's session at once, each given 5 s (a hung SSH close must not hold the others)."""
    closers = [threading.Thread(target=t.close, daemon=True) for t in transports.values()]
    for c in closers:
        c.start()
    for c in closers:
        c.join(timeout=5)


def status_timeout(fleet: Fleet) -> float:
    """Long enough for the slowest node's connect and its three calls; a dead node costs only its own timeouts."""
    return max(e.connect_timeout + 3 * e.call_timeout for e in fleet.nodes) + 1.0


def collect(fleet: Fleet, timeout: float | None = None, ingest_sample: float = 0.0) -> list[NodeSnapshot]:
    """One poll of every node (two, `ingest_sample` seconds apart, to give an ingest rate); transports closed."""
    known = KnownHosts(fleet.known_hosts)
    transports = {e.name: open_transport(e, known) for e in fleet.nodes}
    timeout = timeout or status_timeout(fleet)
    try:
        snaps = poll_fleet(fleet, transports, timeout)
        if ingest_sample > 0:
            threading.Event().wait(ingest_sample)
            snaps = poll_fleet(fleet, transports, timeout, previous={s.name: s for s in snaps})
        return snaps
    finally:
        close_transports(transports)


def status_document(fleet: Fleet, snapshots: list[NodeSnapshot]) -> dict:
    """The `--json` document: stable keys, sizes in bytes, times in seconds, timestamps ISO 8601."""
    code = fleet_exit_code(snapshots)
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso_time(time.time()),
        "fleet": str(fleet.source) if fleet.source else None,
        "exit_code": code,
        "counts": {s: sum(1 for n in snapshots if n.status == s) for s in STATUSES},
        "nodes": [_row_json(n) for n in snapshots],
    }


def _row_json(snap: NodeSnapshot) -> dict:
    data = snap.to_json()
    data["polled_at"] = iso_time(snap.polled_at)
    return data


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def _cells(s: NodeSnapshot) -> list[str]:
    queue = "-" if s.queue_pending is None else f"{s.queue_pending}/{s.queue_failed}"
    return [
        s.name,
        s.site or "-",
        s.status,
        s.version or "-",
        f"{s.ae_title}:{s.port}" if s.ae_title else "-",
        _pct(s.primary_used_pct),
        _pct(s.archive_used_pct),
        "-" if s.ingest_rate is None else f"{s.ingest_rate:.1f}",
        queue,
        _age(s.backup_age_s),
        s.worst_check or ("ok" if s.checks else "-"),
        s.reason or "",
    ]


def render_table(snapshots: list[NodeSnapshot]) -> str:
    """The human table: one row per node, columns as wide as their widest cell, the reason last and whole."""
    rows = [list(COLUMNS)] + [_cells(s) for s in snapshots]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    numeric = {"primary%", "archive%", "ingest/s", "queue p/f", "backup"}
    lines = []
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if COLUMNS[i] in numeric else row[i].ljust(widths[i]) for i in range(len(widths))
        ]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    code = fleet_exit_code(snapshots)
    counts = ", ".join(
        f"{sum(1 for s in snapshots if s.status == st)} {st}"
        for st in STATUSES
        if any(s.status == st for s in snapshots)
    )
    lines.append(f"{len(snapshots)} nodes: {counts}; exit {code}")
    return "\n".join(lines)


# --- trust ----------------------------------------------------------------------------------------


def trust(
    fleet: Fleet,
    name: str,
    *,
    yes: bool,
    replace: bool,
    out: Callable[[str], None],
    confirm: Callable[[str], bool],
    timeout: float | None = None,
) -> int:
    """Scan NODE's host key, show it, and pin it after confirmation. A changed key needs `replace`."""
    try:
        entry = fleet.node(name)
    except KeyError:
        out(f"pacsdeck: no node {name!r} in {fleet.source}; nodes: {', '.join(e.name for e in fleet.nodes)}")
        return TRUST_USAGE
    if entry.transport == LOCAL:
        out(f"pacsdeck: {name} is a local node: there is no SSH host key to trust")
        return TRUST_USAGE
    known = KnownHosts(fleet.known_hosts)
    pinned = known.lookup_all(entry.host, entry.port)
    try:
        key = scan_host_key(entry.host, entry.port, timeout or entry.connect_timeout, prefer=tuple(pinned))
    except Exception as err:  # noqa: BLE001 - any failure to fetch the key is reported, nothing is pinned
        why = getattr(err, "strerror", None) or str(err) or type(err).__name__
        out(f"pacsdeck: cannot fetch the host key of {host_pattern(entry.host, entry.port)}: {why}")
        return TRUST_REFUSED
    offered = fingerprint(key)
    out(
        f"node         {name}\nhost         {entry.host}\nport         {entry.port}\nkey type     {key.get_name()}\n"
        f"fingerprint  {offered}"
    )
    if any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes() for k in pinned.values()):
        out(f"already trusted in {fleet.known_hosts}")
        return TRUST_OK
    if pinned:
        was = ", ".join(f"{t} {fingerprint(k)}" for t, k in pinned.items())
        out(
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            f"@  WARNING: THE HOST KEY OF {name} HAS CHANGED\n"
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            f"pinned:  {was}\noffered: {key.get_name()} {offered}\n"
            "Someone may be intercepting the connection (man in the middle), or the server was reinstalled.\n"
            "Verify the new fingerprint on the server itself (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)."
        )
        if not replace:
            out("refused: the pinned key is kept; after verifying, run again with --replace")
            return TRUST_REFUSED
    if not yes and not confirm(
        f"{'Replace the pinned key' if pinned else 'Trust this key'} for {name}? Type yes to pin it: "
    ):
        out("not confirmed: nothing was pinned")
        return TRUST_REFUSED
    known.trust(entry.host, entry.port, key)
    out(f"pinned {key.get_name()} {offered} for {host_pattern(entry.host, entry.port)} in {fleet.known_hosts}")
    return TRUST_OK


def load(path: str | Path | None) -> Fleet:
    """The fleet for a command; FleetConfigError propagates for the CLI to report (exit 3)."""
    return load_fleet(Path(path) if path else None)
