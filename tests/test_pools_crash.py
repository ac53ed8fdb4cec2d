"""kill -9 in the middle of migrating 300 instances, at random points: one valid indexed copy of each survives."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys

from storage import synthetic

from .conftest import REPO, storescu, wait_for
from .test_store import assert_index_matches_disk

ROUNDS = 10
STUDIES, PER_STUDY = 10, 30


def _target_files(node, pool: str) -> int:
    return sum(1 for _ in node.pool_root(pool).rglob("*.dcm"))


def test_kill_9_during_migration_keeps_exactly_one_valid_copy(node_factory, tmp_path):
    node = node_factory(workers=1).start()
    for spec in synthetic.studies(STUDIES):
        files = synthetic.write_study(tmp_path / spec.patient_id, spec, PER_STUDY, rows=96, cols=96)
        results, _ = storescu(node, files)
        assert set(results.values()) == {"Success"}
    original = {r["sop_uid"]: r["sha256"] for r in node.rows("SELECT sop_uid, sha256 FROM instances")}
    assert len(original) == STUDIES * PER_STUDY
    studies = [r["study_uid"] for r in node.rows("SELECT DISTINCT study_uid FROM instances")]
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    mid_run = 0
    for round_no in range(ROUNDS):
        target = "archive" if round_no % 2 == 0 else "primary"
        before = _target_files(node, target)
        to_move = sum(1 for r in node.rows("SELECT pool FROM instances") if r["pool"] != target)
        kill_at = before + rng.randrange(1, max(2, to_move))  # a random number of copies in
        args = [
            sys.executable,
            "-m",
            "pacsdeck.cli",
            "node",
            "migrate",
            "--config",
            str(node.config),
            "--target",
            target,
            "--run",
        ]
        for uid in studies:
            args += ["--study", uid]
        migrator = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(
            lambda: _target_files(node, target) >= kill_at or migrator.poll() is not None,  # noqa: B023 - called here, in this iteration
            timeout=60,
            interval=0.002,
            what="copies to appear",
        )
        if migrator.poll() is None:
            mid_run += 1
        migrator.kill()  # SIGKILL, by PID: the migration and, below, the node, as in a power cut
        migrator.wait()
        node.kill9()
        node.start()  # recovery runs before the node listens

        rows = assert_index_matches_disk(node)  # every row's file is there with its checksum
        assert {r["sop_uid"]: r["sha256"] for r in rows} == original, f"seed {seed} round {round_no}"
        assert len(node.pool_files()) == len(original), f"extra copies left (seed {seed} round {round_no})"
        assert node.temp_files() == []
    print(f"kills mid-migration: {mid_run}/{ROUNDS}")
    assert mid_run >= ROUNDS // 2, f"only {mid_run} of {ROUNDS} kills hit a running migration (seed {seed})"

    # The interrupted jobs say so, and a final uninterrupted run finishes the work.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pacsdeck.cli",
            "node",
            "migrate",
            "--config",
            str(node.config),
            "--target",
            "archive",
            "--run",
            *[a for uid in studies for a in ("--study", uid)],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = assert_index_matches_disk(node)
    assert {r["pool"] for r in rows} == {"archive"} and len(node.pool_files()) == len(original)
    for row in rows:
        assert hashlib.sha256(node.file(row).read_bytes()).hexdigest() == original[row["sop_uid"]]
    states = [r["state"] for r in node.rows("SELECT state FROM jobs WHERE kind='migrate' ORDER BY id")]
    assert states[-1] == "done" and "running" not in states
