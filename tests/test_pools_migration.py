"""Migration rules against a real node: age, watermark (through the scheduler), verify, corruption, recall."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread

from storage import synthetic
from storage.config.settings import load_config
from storage.node import Node
from storage.pools.migration import recall_on_access, recall_study

from .conftest import pacsdeck, storescu, wait_for
from .test_store import assert_index_matches_disk

DAY = 86400


def _send_studies(node, tmp_path: Path, count: int, per_study: int, size: int = 64) -> list[list[Path]]:
    studies = []
    for _i, spec in enumerate(synthetic.studies(count, prefix=f"P{len(list(tmp_path.iterdir()))}_")):
        files = synthetic.write_study(tmp_path / f"src{spec.patient_id}", spec, per_study, rows=size, cols=size)
        results, _ = storescu(node, files)
        assert set(results.values()) == {"Success"}, results
        studies.append(files)
    return studies


def _study_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _cli_json(*args: str) -> tuple[int, dict]:
    result = pacsdeck(*args, "--json")
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_age_rule_moves_old_studies_byte_identical(node_factory, tmp_path):
    node = node_factory(
        migration={
            "rules": [
                {"from": "primary", "to": "archive", "after_days": 30, "since": "last_access"},
                {"from": "primary", "to": "archive", "after_days": 365, "since": "received"},
            ]
        }
    ).start()
    old_access, recent, received_long_ago = (_study_uid(s) for s in _send_studies(node, tmp_path, 3, 4))
    now = time.time()
    with node.db() as db:  # backdate: one study unused for 100 days, one received 2 years ago but read today
        db.execute("UPDATE instances SET last_access=? WHERE study_uid=?", (now - 100 * DAY, old_access))
        db.execute("UPDATE instances SET last_access=? WHERE study_uid=?", (now - 10 * DAY, recent))
        db.execute("UPDATE instances SET received_at=? WHERE study_uid=?", (now - 730 * DAY, received_long_ago))
    before = {r["sop_uid"]: (node.file(r).read_bytes(), r["study_uid"]) for r in node.rows("SELECT * FROM instances")}

    code, plan = _cli_json("node", "migrate", "--config", str(node.config), "--dry-run")
    assert code == 0
    assert [(m["study_uid"], m["source"], m["target"], m["instances"]) for m in plan["plan"]] == [
        (old_access, "primary", "archive", 4),
        (received_long_ago, "primary", "archive", 4),
    ]
    assert plan["plan"][0]["reason"].startswith("age: last accessed 100.0 days ago; migration.rules[0]")
    assert plan["plan"][1]["reason"].startswith("age: received 730.0 days ago; migration.rules[1]")
    assert plan["bytes"] == sum(len(b) for b, s in before.values() if s != recent)
    assert node.rows("SELECT count(*) n FROM instances WHERE pool='archive'")[0]["n"] == 0  # dry run moved nothing

    code, report = _cli_json("node", "migrate", "--config", str(node.config), "--run")  # while the node serves
    assert code == 0, report
    assert (report["state"], report["moved_instances"], report["failed_instances"]) == ("done", 8, 0)
    rows = assert_index_matches_disk(node)
    for row in rows:
        data, study = before[row["sop_uid"]]
        assert row["pool"] == ("primary" if study == recent else "archive")
        assert node.file(row).read_bytes() == data  # byte-identical
        assert str(dcmread(node.file(row)).SOPInstanceUID) == row["sop_uid"]  # readable through the index
    assert len(node.pool_files()) == 12  # the sources are gone: one copy each
    [job] = node.rows("SELECT * FROM jobs WHERE kind='migrate'")
    assert (job["state"], job["instances_total"], job["instances_done"], job["bytes_done"]) == (
        "done",
        8,
        8,
        report["moved_bytes"],
    )


def test_watermark_moves_least_recently_accessed_until_under_low(node_factory, tmp_path):
    capacity = 600_000
    node = node_factory(
        pools=[
            {
                "name": "primary",
                "path": "pools/primary",
                "tier": "primary",
                "capacity": capacity,
                "high_watermark": 70,
                "low_watermark": 40,
            },
            {"name": "archive", "path": "pools/archive", "tier": "archive"},
        ]
    ).start()
    studies = [_study_uid(s) for s in _send_studies(node, tmp_path, 5, 4, size=96)]  # ~78 KB each: ~65%
    used = node.rows("SELECT coalesce(sum(size), 0) n FROM instances")[0]["n"]
    assert used < 0.7 * capacity
    now = time.time()
    order = [studies[i] for i in (3, 1, 4, 0, 2)]  # least recently accessed first, not in arrival order
    with node.db() as db:
        for age, uid in enumerate(reversed(order)):
            db.execute("UPDATE instances SET last_access=? WHERE study_uid=?", (now - (age + 1) * DAY, uid))
    [new] = _send_studies(node, tmp_path, 1, 4, size=96)  # crosses 70%: the scheduler acts within seconds
    sizes = {r["study_uid"]: r["b"] for r in node.rows("SELECT study_uid, sum(size) b FROM instances GROUP BY 1")}
    total = sum(sizes.values())
    assert total > 0.7 * capacity
    expected, remaining = [], total
    for uid in order:
        if remaining <= 0.4 * capacity:
            break
        expected.append(uid)
        remaining -= sizes[uid]

    def moved():
        return {r["study_uid"] for r in node.rows("SELECT DISTINCT study_uid FROM instances WHERE pool='archive'")}

    wait_for(lambda: moved() == set(expected), timeout=20, what=f"studies {expected} on archive")
    wait_for(lambda: node.rows("SELECT state FROM jobs WHERE kind='migrate'")[0]["state"] == "done", what="job done")
    primary = node.rows("SELECT coalesce(sum(size), 0) n FROM instances WHERE pool='primary'")[0]["n"]
    assert primary <= 0.4 * capacity
    assert _study_uid(new) not in moved()
    [job] = node.rows("SELECT * FROM jobs WHERE kind='migrate'")
    assert job["reason"] == "watermark" and job["instances_done"] == 4 * len(expected)
    assert_index_matches_disk(node)
    code, stats = _cli_json("node", "pools", "--config", str(node.config))
    assert code == 0
    primary_stats = stats["pools"][0]
    assert primary_stats["capacity_is_logical"] and primary_stats["used"] == primary
    assert not primary_stats["above_high_watermark"] and primary_stats["instances"] == 4 * (6 - len(expected))


def test_scheduler_runs_the_rules_on_its_interval(node_factory, tmp_path):
    node = node_factory(
        migration={"interval": 1, "rules": [{"from": "primary", "to": "archive", "after_days": 0}]}, workers=2
    ).start()
    _send_studies(node, tmp_path, 2, 3)
    wait_for(
        lambda: {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"archive"},
        timeout=20,
        what="the scheduler to move everything",
    )
    wait_for(lambda: all(r["state"] == "done" for r in node.rows("SELECT state FROM jobs")), what="jobs done")
    assert len(assert_index_matches_disk(node)) == 6 and len(node.pool_files()) == 6


def test_corrupt_copy_is_reported_by_verify_and_never_migrated(node_factory, tmp_path):
    node = node_factory().start()
    [files] = _send_studies(node, tmp_path, 1, 5)
    study = _study_uid(files)
    code, _ = _cli_json(
        "node", "migrate", "--config", str(node.config), "--study", study, "--target", "archive", "--run"
    )
    assert code == 0
    victim = node.rows("SELECT * FROM instances ORDER BY sop_uid LIMIT 1")[0]
    path = node.file(victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the pixel data of the archive copy
    path.write_bytes(bytes(data))

    code, report = _cli_json("node", "verify", "--config", str(node.config), "--sample", "0")
    assert code == 1
    assert report["checked"] == 5 and report["ok"] == 4
    [problem] = report["problems"]
    assert (problem["sop_uid"], problem["pool"], problem["problem"]) == (victim["sop_uid"], "archive", "corrupt")
    assert problem["actual_sha256"] == hashlib.sha256(data).hexdigest() != victim["sha256"]

    # Recalling the study moves the good copies and refuses the corrupt one: it stays put and indexed.
    code, report = _cli_json(
        "node", "migrate", "--config", str(node.config), "--study", study, "--target", "primary", "--run"
    )
    assert code == 1
    assert (report["moved_instances"], report["failed_instances"]) == (4, 1)
    assert victim["sop_uid"] in report["errors"][0] and "corrupt" in report["errors"][0]
    row = node.rows("SELECT * FROM instances WHERE sop_uid=?", victim["sop_uid"])[0]
    assert (row["pool"], row["path"]) == ("archive", victim["path"]) and path.exists()
    assert len(node.pool_files()) == 5  # no copy of the corrupt file was made anywhere
    jobs = node.rows("SELECT kind, state, instances_failed FROM jobs ORDER BY id")
    assert [tuple(j) for j in jobs] == [("migrate", "done", 0), ("verify", "failed", 1), ("migrate", "failed", 1)]


def test_a_killed_verification_is_marked_failed_by_the_next(node_factory, tmp_path):
    node = node_factory().start()
    _send_studies(node, tmp_path, 1, 3)
    victim = node.rows("SELECT * FROM instances ORDER BY sop_uid LIMIT 1")[0]
    path = node.file(victim)
    kept = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # reading it blocks: the verification hangs there until it is killed
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacsdeck.cli", "node", "verify", "--config", str(node.config), "--sample", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: [tuple(r) for r in node.rows("SELECT kind, state FROM jobs")] == [("verify", "running")],
            what="the verification running",
        )
    finally:
        proc.kill()
        proc.wait()
    path.unlink()
    path.write_bytes(kept)

    code, report = _cli_json("node", "verify", "--config", str(node.config), "--sample", "0")
    assert code == 0 and report["ok"] == 3
    jobs = [tuple(r) for r in node.rows("SELECT kind, state, last_error FROM jobs ORDER BY id")]
    assert jobs[0][:2] == ("verify", "failed") and jobs[0][2].startswith("interrupted")
    assert jobs[1][:2] == ("verify", "done")


def test_recall_copies_a_study_back_to_primary(node_factory, tmp_path):
    node = node_factory(migration={"recall_on_access": True}).start()
    [files] = _send_studies(node, tmp_path, 1, 3)
    study = _study_uid(files)
    code, _ = _cli_json("node", "migrate", "--config", str(node.config), "--study", study, "--yes")  # next tier
    assert code == 0 and {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"archive"}
    with node.db() as db:
        db.execute("UPDATE instances SET last_access=0")
    ctx = Node(load_config(node.config))  # what the retrieve code holds in a worker
    thread = recall_on_access(ctx, study)
    assert thread is not None
    thread.join(timeout=30)
    rows = assert_index_matches_disk(node)
    assert {r["pool"] for r in rows} == {"primary"} and all(r["last_access"] > 0 for r in rows)
    assert recall_on_access(ctx, study) is None  # already on the first tier
    assert recall_study(ctx, study)["recalled"] is False


def test_get_after_migration_returns_identical_bytes_and_recalls(node_factory, tmp_path):
    """A study on the archive tier is retrieved transparently, byte for byte, and with
    recall_on_access it comes back to primary afterwards."""
    from .conftest import dataset_bytes, dcmtk

    node = node_factory(migration={"recall_on_access": True}).start()
    [files] = _send_studies(node, tmp_path, 1, 3)
    study = _study_uid(files)
    stored = {r["sop_uid"]: dataset_bytes(node.file(r)) for r in node.rows("SELECT * FROM instances")}
    code, _ = _cli_json(
        "node", "migrate", "--config", str(node.config), "--study", study, "--target", "archive", "--run"
    )
    assert code == 0 and {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"archive"}

    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-S",
        "-aet",
        "STORESCU",
        "-aec",
        node.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "127.0.0.1",
        str(node.port),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in out.iterdir()}
    assert got == stored
    wait_for(
        lambda: {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"primary"},
        what="the study recalled to primary",
    )
    assert len(assert_index_matches_disk(node)) == 3
