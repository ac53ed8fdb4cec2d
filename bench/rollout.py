"""Wall time of `pacsdeck fleet aets apply`: one AE rolled out to N `local` nodes (default 20), and its echo.

Usage: .venv/bin/python bench/rollout.py [--nodes 20] [--batch 1 5 20] [--repeat 3] [--json bench/out/rollout.json]

Set-up: N node folders from `pacsdeck node init` (not running: aets.list/add/echo need only the index and
config), one running node (open mode, any called AE title) as the AE every run registers and echoes. Each
run registers a new AE title (so every node really changes) through the real CLI in a subprocess, as a
script would run it; the wall time includes that CLI's start-up and one agent start-up per node. Also timed:
the dry run (the plan alone) and a run that finds everything already there. Median of --repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PACSDECK = str(Path(sys.executable).parent / "pacsdeck")
sys.path.insert(0, str(REPO))

from bench.sshd import free_port  # noqa: E402


def init_node(folder: Path, ae_title: str, **settings) -> int:
    folder.mkdir(parents=True)
    port = free_port()
    pools = [
        {"name": "primary", "path": "pools/primary", "tier": "primary"},
        {"name": "archive", "path": "pools/archive", "tier": "archive"},
    ]
    config = {"ae_title": ae_title, "port": port, "bind": "127.0.0.1", "workers": 1, "pools": pools, **settings}
    (folder / "node.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run([PACSDECK, "node", "init", "--dir", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"node init {folder}: {done.stderr.strip()}")
    return port


def apply(aets: Path, fleet: Path, *extra: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(
        [PACSDECK, "fleet", "aets", "apply", str(aets), "--fleet", str(fleet), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    doc = json.loads(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()} {doc['stopped_at']}")
    return wall, doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        root = Path(tmp)
        target_port = init_node(root / "target", "TARGET", open_mode=True, require_called_aet=False)
        target = subprocess.Popen(
            [PACSDECK, "node", "run", "--config", str(root / "target" / "node.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            if not target.stdout.readline().decode().startswith("ready"):
                raise RuntimeError("the target node did not start")
            names = [f"n{i:02d}" for i in range(args.nodes)]
            for name in names:
                init_node(root / name, name.upper())
            fleet = root / "fleet.yaml"
            entries = [{"name": n, "transport": "local", "config": str(root / n / "node.yaml")} for n in names]
            fleet.write_text(yaml.safe_dump({"known_hosts": str(root / "known_hosts"), "nodes": entries}))
            results = {"nodes": args.nodes, "cores": os.cpu_count(), "runs": {}}
            serial = 0

            def aets_file() -> Path:
                nonlocal serial
                serial += 1
                path = root / f"aets{serial}.yaml"
                aet = {"ae_title": f"CT{serial}", "host": "127.0.0.1", "port": target_port, "operations": ["store"]}
                path.write_text(yaml.safe_dump({"aets": [aet]}))
                return path

            timings: dict[str, list[float]] = {}
            for _ in range(args.repeat):
                path = aets_file()
                timings.setdefault("dry run", []).append(apply(path, fleet, "--dry-run")[0])
                for batch in args.batch:
                    path = aets_file()
                    wall, doc = apply(path, fleet, "--batch", str(batch))
                    assert doc["counts"]["changed"] == args.nodes, doc["counts"]
                    bad = [(n["name"], e) for n in doc["nodes"] for e in n["echoes"] if not e["ok"]]
                    assert not bad, bad[:3]
                    timings.setdefault(f"batch {batch}", []).append(wall)
                    if batch == args.batch[0]:
                        wall, doc = apply(path, fleet, "--batch", str(batch))
                        assert doc["counts"]["unchanged"] == args.nodes, doc["counts"]
                        timings.setdefault(f"already there, batch {batch}", []).append(wall)
            for what, walls in timings.items():
                results["runs"][what] = {"median_s": round(statistics.median(walls), 3), "runs_s": walls}
                print(
                    f"{args.nodes} nodes, {what:<22} median {statistics.median(walls):6.2f} s  "
                    f"(runs: {', '.join(f'{w:.2f}' for w in walls)})"
                )
        finally:
            target.terminate()
            target.wait(timeout=30)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
