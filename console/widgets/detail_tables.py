"""Tables of the node screen filled from agent results: checks, pools, migration plan, jobs, associations."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from . import format as fmt


def refill(table: DataTable, columns: tuple[str, ...], rows: list[tuple[str, tuple]]) -> None:
    """Replace the rows (key, cells), keeping the cursor on the same key; every cell as plain Text."""
    if not table.columns:
        for label in columns:
            table.add_column(label, key=label)
    selected = None
    if table.row_count and 0 <= table.cursor_row < table.row_count:
        selected = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(fmt.text(c)) for c in cells), key=key)
    keys = [key for key, _ in rows]
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def fill_checks(table: DataTable, checks: list[dict]) -> None:
    rows = []
    for i, c in enumerate(checks):
        value = c.get("value")
        shown = "" if value is None else f"{value}{' ' + c['unit'] if c.get('unit') else ''}"
        rows.append(
            (f"{i}:{c.get('name')}", (c.get("status"), c.get("name"), shown, c.get("threshold"), c.get("message")))
        )
    refill(table, ("status", "check", "value", "threshold", "message"), rows)


def fill_pools(table: DataTable, result: dict | None) -> None:
    rows = []
    for p in (result or {}).get("pools", []):
        state = p.get("error") or (
            "above high watermark" if p.get("above_high_watermark") else "accepting" if p.get("accepting") else "full"
        )
        marks = "" if p.get("high_watermark") is None else f"{p.get('low_watermark')}–{p.get('high_watermark')}%"
        rows.append(
            (
                p["name"],
                (
                    p["name"],
                    p.get("tier"),
                    p.get("instances"),
                    fmt.size(p.get("used")),
                    fmt.size(p.get("capacity")),
                    fmt.pct(p.get("used_percent")),
                    marks,
                    state,
                ),
            )
        )
    refill(table, ("pool", "tier", "instances", "used", "capacity", "used %", "watermarks", "state"), rows)


def fill_plan(table: DataTable, report: dict) -> None:
    rows = [
        (
            f"m{i}",
            (
                m.get("study_uid"),
                m.get("instances"),
                fmt.size(m.get("bytes")),
                f"{m.get('source')} → {m.get('target')}",
                m.get("reason"),
            ),
        )
        for i, m in enumerate(report.get("plan", []))
    ]
    rows += [
        (f"s{i}", (s.get("study_uid") or s.get("source"), "", "", "skipped", s.get("why")))
        for i, s in enumerate(report.get("skipped", []))
    ]
    refill(table, ("study", "instances", "size", "move", "why"), rows)


def fill_jobs(table: DataTable, jobs: list[dict]) -> None:
    rows = []
    for j in jobs:
        progress = (
            f"{j.get('items_done', 0)}/{j.get('items_total')}"
            if j.get("items_total")
            else fmt.count(j.get("items_done"))
        )
        rows.append(
            (
                str(j["id"]),
                (
                    j["id"],
                    j.get("kind"),
                    j.get("state"),
                    f"{j.get('attempts', 0)}/{j.get('max_attempts', '?')}",
                    j.get("destination"),
                    progress,
                    j.get("next_attempt_at"),
                    j.get("last_error"),
                ),
            )
        )
    refill(table, ("id", "kind", "state", "attempts", "destination", "items", "next attempt", "last error"), rows)


def fill_associations(table: DataTable, entries: list[dict]) -> None:
    rows = [
        (
            str(a.get("id", i)),
            (
                a.get("started_at"),
                a.get("calling_ae"),
                a.get("called_ae"),
                f"{a.get('peer_host')}:{a.get('peer_port')}",
                a.get("result"),
                a.get("instances"),
                a.get("reason"),
            ),
        )
        for i, a in enumerate(entries)
    ]
    refill(table, ("started", "calling AE", "called AE", "peer", "result", "instances", "reason"), rows)


def overview_text(snap) -> Text:
    """node.status and the snapshot's figures as aligned `label  value` lines."""
    status = snap.raw.get("node.status") or {}
    node = status.get("node") or {}
    process = status.get("process") or {}
    counts = status.get("counts") or {}
    lines = [
        ("status", snap.status + (f" ({snap.reason})" if snap.reason else "")),
        ("version", fmt.text(snap.version)),
        ("AE title", fmt.text(snap.ae_title)),
        ("port", fmt.text(snap.port)),
        ("config", fmt.text(node.get("config"))),
        ("listening", fmt.text(status.get("listening"))),
        (
            "process",
            f"pid {process.get('pid')}, {process.get('workers')} workers, up {fmt.age(process.get('uptime_s'))}"
            if process
            else fmt.DASH,
        ),
        ("instances", fmt.text(snap.instances if snap.instances is not None else counts.get("instances"))),
        ("studies", fmt.text(counts.get("studies"))),
        ("primary used", fmt.pct(snap.primary_used_pct)),
        ("archive used", fmt.pct(snap.archive_used_pct)),
        ("disk free", fmt.size(snap.disk_free_bytes)),
        ("ingest", f"{fmt.rate(snap.ingest_rate)} instances/s"),
        ("queue", f"{fmt.count(snap.queue_pending)} pending, {fmt.count(snap.queue_failed)} failed"),
        ("backup age", fmt.age(snap.backup_age_s)),
        ("worst check", fmt.text(snap.worst_check)),
        ("latency", f"{snap.latency_ms:.1f} ms" if snap.latency_ms is not None else fmt.DASH),
        ("polled", fmt.clock(snap.polled_at)),
    ]
    text = Text()
    for label, value in lines:
        text.append(f"{label:<14}", style="bold")
        text.append(f"{value}\n")
    return text
