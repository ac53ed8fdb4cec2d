"""Backup schedules and retention: a short `every` schedule fires in a running node as a `backup` job, and
retention keeps exactly the set its `keep` rules name."""

from __future__ import annotations

import time
from datetime import datetime

from storage.backups.retention import keep_set
from storage.backups.scheduler import next_due
from storage.config.backups import Keep, parse_schedule

from .conftest import make_node, storescu
from .test_backups import ok, studies


def test_a_schedule_fires_in_the_running_node(tmp_path):
    node = make_node(
        tmp_path / "node",
        ae_title="SCHED",
        workers=1,
        backups=[
            {"name": "nas", "type": "dir", "path": str(tmp_path / "nas"), "schedule": "every 2 s", "keep": {"last": 2}}
        ],
    ).start()
    try:
        results, _ = storescu(node, studies(tmp_path, "SCH", 1, per=2))
        assert set(results.values()) == {"Success"}
        deadline = time.monotonic() + 60
        while True:
            done = [b for b in ok(node, "backups.list")["backups"] if b["state"] == "complete"]
            jobs = [j for j in ok(node, "queue.list", {"kind": "backup"})["jobs"] if j["state"] == "done"]
            if len(jobs) >= 3:
                break
            assert time.monotonic() < deadline, f"only {len(jobs)} scheduled backups after 60 s"
        assert all(j["reason"] == "schedule" for j in jobs)
        done = [b for b in ok(node, "backups.list")["backups"] if b["state"] == "complete"]
        assert len(done) == 2  # keep: {last: 2}: the third run removed the oldest
        health = ok(node, "health.check")
        backup_age = next(c for c in health["checks"] if c["name"] == "backup_age")
        assert backup_age["status"] == "ok", backup_age
    finally:
        node.stop()


def at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").timestamp()


def test_retention_keeps_the_newest_of_each_day_week_and_month():
    # Two backups a day for 70 days, at 01:00 and 13:00 local time.
    backups = []
    for day in range(70):
        for hour in (1, 13):
            stamp = at("2026-01-01 00:00") + day * 86400 + hour * 3600
            backups.append((f"b{day:02d}-{hour:02d}", stamp))
    kept = keep_set(backups, Keep(daily=7, weekly=4, monthly=3))
    newest_per_day = {f"b{d:02d}-13" for d in range(63, 70)}
    assert newest_per_day <= kept
    # Each kept one is the newest of its day; weeks and months add the newest of earlier weeks and months.
    assert all(b.endswith("-13") for b in kept)
    months = {datetime.fromtimestamp(t).month for b, t in backups if b in kept}
    assert months == {1, 2, 3}
    weeks = {datetime.fromtimestamp(t).isocalendar()[1] for b, t in backups if b in kept}
    assert len(weeks) >= 4
    assert len(kept) <= 7 + 4 + 3
    assert keep_set(backups, Keep(last=3)) == {"b69-13", "b69-01", "b68-13"}
    assert keep_set(backups, Keep()) == {b for b, _ in backups}  # no rule: nothing is ever deleted


def test_schedules_parse_and_fire_at_their_time():
    daily = parse_schedule("daily 02:00", "backups[0].schedule")
    assert datetime.fromtimestamp(next_due(daily, at("2026-03-04 01:59"))).strftime("%d %H:%M") == "04 02:00"
    assert datetime.fromtimestamp(next_due(daily, at("2026-03-04 02:00"))).strftime("%d %H:%M") == "05 02:00"
    every = parse_schedule("every 90 m", "s")
    assert next_due(every, 1000.0) == 1000.0 + 5400
