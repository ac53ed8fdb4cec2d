"""Migration throughput: move N GB of studies between two pools (copy, verify, re-index, delete) against cp + sync."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid

from storage import synthetic
from storage.config.settings import load_config
from storage.node import Node, init_node
from storage.pools.migration import migrate
from storage.pools.plan import MigrationRun
from storage.uids import instance_path

INSTANCE_ROWS = 512  # 512x512 16-bit CT: ~0.5 MB per instance, the common case
PER_STUDY = 100


def build_corpus(node: Node, total_bytes: int) -> int:
    """Write synthetic CT studies straight into the primary pool, then let recovery index them."""
    primary = node.pools[0]
    template = synthetic.instance(
        next(synthetic.studies(1)),
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        number=1,
        rows=INSTANCE_ROWS,
        cols=INSTANCE_ROWS,
    )
    written = 0
    with tempfile.TemporaryDirectory() as scratch:
        while written < total_bytes:
            study, series = generate_uid(), generate_uid()
            template.StudyInstanceUID, template.SeriesInstanceUID = study, series
            for i in range(PER_STUDY):
                sop = generate_uid()
                template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = sop
                template.InstanceNumber = i + 1
                tmp = Path(scratch) / "x.dcm"
                template.save_as(tmp, enforce_file_format=True)
                data = tmp.read_bytes()
                primary.write(instance_path(study, sop), (data,))
                written += len(data)
    report = node.recover()
    return report.orphans_indexed


def drop_caches() -> bool:
    """Start each run from the disk, not the page cache (needs root; otherwise both runs are warm)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def time_cp(src: Path, dst: Path) -> float:
    if dst.exists():
        shutil.rmtree(dst)
    drop_caches()
    started = time.monotonic()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    seconds = time.monotonic() - started
    shutil.rmtree(dst)
    os.sync()
    return seconds


def time_migrate(node: Node, target: str) -> tuple[MigrationRun, float]:
    """The run's report and its wall-clock seconds (planning and the lock included)."""
    drop_caches()
    studies = [r[0] for r in node.index.connection().execute("SELECT DISTINCT study_uid FROM instances")]
    started = time.monotonic()
    run = migrate(node, study_uids=studies, target=target, dry_run=False).run
    wall_seconds = time.monotonic() - started
    if run is None:
        raise SystemExit("migration had nothing to move")
    if run.failed_instances:
        raise SystemExit(f"migration failed: {list(run.errors[:3])}")
    return run, wall_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=2.0, help="corpus size in GB (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, median reported (default 3)")
    parser.add_argument("--dir", default="/var/tmp", help="where to put the node (a real disk, not tmpfs)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="pacsdeck-bench-migrate-") as root:
        config, _ = init_node(Path(root) / "node", "BENCH", 11112)
        config = load_config(config.path)
        node = Node(config)
        t0 = time.monotonic()
        count = build_corpus(node, int(args.gb * 1e9))
        size = node.index.connection().execute("SELECT sum(size) FROM instances").fetchone()[0]
        print(f"corpus: {count} instances, {size / 1e6:.0f} MB in {time.monotonic() - t0:.0f} s", flush=True)
        cp_s, mig_s = [], []
        where = "primary"
        for run in range(args.repeat):
            src = node.placement.pool(where).root
            cp_s.append(time_cp(src, Path(root) / "cp-copy"))
            target = "archive" if where == "primary" else "primary"
            done, wall_seconds = time_migrate(node, target)
            mig_s.append(wall_seconds)
            print(
                f"run {run + 1}: cp+sync {size / 1e6 / cp_s[-1]:.0f} MB/s, migrate {where}->{target}"
                f" {size / 1e6 / mig_s[-1]:.0f} MB/s (verified, {done.moved_instances} instances)",
                flush=True,
            )
            where = target
        cp_mbs = size / 1e6 / statistics.median(cp_s)
        mig_mbs = size / 1e6 / statistics.median(mig_s)
        figures = {
            "instances": count,
            "bytes": size,
            "repeat": args.repeat,
            "cold_cache": drop_caches(),
            "cp_sync_mb_per_s": round(cp_mbs, 1),
            "migrate_mb_per_s": round(mig_mbs, 1),
            "ratio": round(mig_mbs / cp_mbs, 3),
            "cp_seconds": cp_s,
            "migrate_seconds": mig_s,
        }
        print(
            f"median: cp+sync {cp_mbs:.0f} MB/s, migrate (copy, verify, index, delete) {mig_mbs:.0f} MB/s"
            f" = {100 * mig_mbs / cp_mbs:.0f}% of cp (target 70%)"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
