"""Wall time of health.check on a running node with 3 pools, over one persistent agent channel (what the console polls).

Usage: .venv/bin/python bench/health.py [--calls 30] [--instances 20000] [--json FILE]
The first call runs every probe cold (index quick_check, forecast query); later calls reuse those two
for a few minutes, while the fsync probes, process, filesystem and host checks run on every call.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.agent_support import Agent, agent_env  # noqa: E402
from tests.conftest import make_node  # noqa: E402

TARGET_MS = 300.0


def fill_index(path: Path, count: int) -> None:
    """Index rows received over the last 7 days, so the forecast and quick_check have work to do."""
    now = time.time()
    rows = [
        (
            f"1.2.826.0.1.3680043.2.1143.{i}",
            "1.2.3",
            "1.2.3.4",
            "1.2.840.10008.5.1.4.1.1.2",
            "",
            "1.2.840.10008.1.2.1",
            "primary",
            f"x/{i}.dcm",
            526_000,
            "0" * 64,
            now - random.random() * 7 * 86400,
            now,
            "BENCH",
        )
        for i in range(count)
    ]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid, instance_number,"
            " transfer_syntax, pool, path, size, sha256, received_at, last_access, source_ae)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pools = [{"name": n, "path": f"pools/{n}", "tier": n} for n in ("primary", "archive", "cold")]
        node = make_node(Path(tmp) / "node", pools=pools)
        fill_index(node.index_path, args.instances)
        node.start()
        agent = Agent(node.config, env=agent_env(Path(tmp) / "authorized_keys"))
        try:
            agent.call("rpc.whoami")  # the agent process is up and its imports done: time health.check alone
            started = time.perf_counter()
            first = agent.call("health.check")
            cold_ms = (time.perf_counter() - started) * 1000
            samples, inside = [], []
            for _ in range(args.calls):
                started = time.perf_counter()
                result = agent.call("health.check")
                samples.append((time.perf_counter() - started) * 1000)
                inside.append(result["duration_s"] * 1000)
        finally:
            agent.close()
            node.stop()
    ordered = sorted(samples)
    out = {
        "pools": 3,
        "instances_indexed": args.instances,
        "checks": len(first["checks"]),
        "cold_ms": round(cold_ms, 1),
        "cold_in_agent_ms": round(first["duration_s"] * 1000, 1),
        "warm_median_ms": round(statistics.median(ordered), 1),
        "warm_p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "warm_max_ms": round(ordered[-1], 1),
        "warm_in_agent_median_ms": round(statistics.median(inside), 1),
        "fsync_ms": {c["name"]: c["value"] for c in first["checks"] if c["name"].endswith(":fsync")},
        "target_ms": TARGET_MS,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["cold_ms"] < TARGET_MS and out["warm_p95_ms"] < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
