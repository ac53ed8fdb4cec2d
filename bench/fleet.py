"""One full refresh of a fleet of N nodes over SSH (node.status + health.check + queue.list each): wall time and
the console process's CPU, N = 10 and 50 by default.

Usage: .venv/bin/python bench/fleet.py [--nodes 10 50] [--per-sshd 10] [--running 3] [--repeat 5]
                                       [--parallel N] [--json bench/out/fleet.json] [--keep]
Needs root (sshd's privilege separation). Everything listens on 127.0.0.1 and is stopped by PID at the end.

Set-up: every node has its own folder made by `pacsdeck node init`, and its own client key whose forced command
(`restrict,command="pacsdeck agent stdio --config <that node>"`) runs that node's agent, exactly as
`users.add` arranges on a site server. The nodes are spread over one sshd per --per-sshd nodes (default 10):
the console opens N separate SSH connections either way (one per node, as in production), and sshd forks one
process per connection, so sharing a listener changes nothing the console does; it only saves the bench from
starting 50 listeners. The first --running nodes run `pacsdeck node run`; the others are initialised but stopped
(their agents still answer all three calls, and report them down).

Measured: the cold refresh (fresh transports: SSH handshake, authentication, the remote agent's start-up, then the
calls) and the warm refresh (the steady state of the console: channels already open), median of --repeat.
"Console CPU" is resource.getrusage(RUSAGE_SELF) of this process (all its threads) across the refresh; the agents
run under sshd and are not counted. "max tick lag" is the longest a 5 ms ticker thread was late during the warm
refreshes: a proxy for what the polling threads would cost the TUI's event loop (the Textual app polls in
threads of its own process the same way). The same ticker then runs as long again with no refresh ("idle"):
the machine's own scheduling delay, for comparison. Here the 50 agents run on the console's own cores, so
part of the lag is theirs; in production they run on the sites' servers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.sshd import BenchSSHD, free_port, ssh_keygen, start_sshd  # noqa: E402
from console.hostkeys import KnownHosts  # noqa: E402
from console.inventory import Fleet, load_fleet  # noqa: E402
from console.snapshot import STATUSES, UNREACHABLE, UNTRUSTED, poll_fleet  # noqa: E402
from console.transport import open_transport  # noqa: E402

TARGET_S = {50: 2.0}
PACSDECK = str(Path(sys.executable).parent / "pacsdeck")


def init_node(folder: Path, ae_title: str) -> int:
    folder.mkdir(parents=True)
    port = free_port()
    pools = [
        {"name": "primary", "path": "pools/primary", "tier": "primary"},
        {"name": "archive", "path": "pools/archive", "tier": "archive"},
    ]
    (folder / "node.yaml").write_text(
        yaml.safe_dump(
            {"ae_title": ae_title, "port": port, "bind": "127.0.0.1", "workers": 1, "pools": pools}, sort_keys=False
        )
    )
    done = subprocess.run([PACSDECK, "node", "init", "--dir", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"node init {folder}: {done.stderr.strip()}")
    return port


def run_node(config: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PACSDECK, "node", "run", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    line = proc.stdout.readline().decode()
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"node {config} did not start: {line!r}")
    return proc


def forced_command_line(config: Path, public_key: str) -> str:
    key_type, b64 = public_key.split()[:2]
    return f'restrict,command="{PACSDECK} agent stdio --config {config}" {key_type} {b64} bench'


class Ticker:
    """A thread that wants to run every 5 ms and records how late it was."""

    def __init__(self, period: float = 0.005):
        self.period = period
        self.max_lag = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self._stop.wait(self.period)
            self.max_lag = max(self.max_lag, time.perf_counter() - started - self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def refresh(fleet: Fleet, transports, previous=None, parallel=None) -> tuple[float, float, list]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    snaps = poll_fleet(fleet, transports, timeout=120, previous=previous, parallel=parallel)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, snaps


def bench(fleet: Fleet, repeat: int, parallel: int | None) -> dict:
    known = KnownHosts(fleet.known_hosts)
    transports = {e.name: open_transport(e, known) for e in fleet.nodes}
    try:
        cold_wall, cold_cpu, snaps = refresh(fleet, transports, parallel=parallel)
        failed = [f"{s.name}: {s.reason}" for s in snaps if s.status in (UNREACHABLE, UNTRUSTED)]
        if failed:
            raise RuntimeError("nodes did not answer the cold refresh: " + "; ".join(failed[:5]))
        walls, cpus = [], []
        started = time.perf_counter()
        with Ticker() as ticker:
            for _ in range(repeat):
                wall, cpu, snaps = refresh(fleet, transports, {s.name: s for s in snaps}, parallel)
                walls.append(wall)
                cpus.append(cpu)
        # The control: the same ticker for as long, with no refresh running. What it shows is the machine's
        # own scheduling delay (other processes on the same cores), not the console's.
        with Ticker() as idle:
            threading.Event().wait(time.perf_counter() - started)
        counts = {st: sum(1 for s in snaps if s.status == st) for st in STATUSES}
    finally:
        closers = [threading.Thread(target=t.close) for t in transports.values()]
        for c in closers:
            c.start()
        for c in closers:
            c.join(timeout=10)
    n = len(fleet.nodes)
    result = {
        "nodes": n,
        "cold_wall_s": round(cold_wall, 3),
        "cold_cpu_s": round(cold_cpu, 3),
        "warm_wall_median_s": round(statistics.median(walls), 3),
        "warm_wall_max_s": round(max(walls), 3),
        "warm_cpu_median_s": round(statistics.median(cpus), 3),
        "warm_cpu_per_node_ms": round(1000 * statistics.median(cpus) / n, 2),
        "max_tick_lag_ms": round(ticker.max_lag * 1000, 1),
        "idle_max_tick_lag_ms": round(idle.max_lag * 1000, 1),
        "repeat": repeat,
        "statuses": {k: v for k, v in counts.items() if v},
    }
    if n in TARGET_S:
        result["target_s"] = TARGET_S[n]
        result["met"] = result["warm_wall_max_s"] < TARGET_S[n]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50], help="fleet sizes (default 10 50)")
    parser.add_argument("--per-sshd", type=int, default=10, help="nodes served by one sshd (default 10)")
    parser.add_argument("--running", type=int, default=3, help="how many nodes run `node run` (default 3)")
    parser.add_argument("--repeat", type=int, default=5, help="warm refreshes per size (default 5)")
    parser.add_argument("--parallel", type=int, help="poll at most this many nodes at once (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the bench folder")
    args = parser.parse_args()
    total = max(args.nodes)
    root = Path(tempfile.mkdtemp(prefix="pacsdeck-fleet-bench-"))
    servers: list[BenchSSHD] = []
    running: list[subprocess.Popen] = []
    try:
        t0 = time.perf_counter()
        names = [f"node-{i:02d}" for i in range(total)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(lambda i: init_node(root / names[i], f"N{i:02d}"), range(total)))
        servers = [start_sshd(root / f"sshd-{k}") for k in range((total + args.per_sshd - 1) // args.per_sshd)]
        known = KnownHosts(root / "known_hosts")
        import paramiko

        for server in servers:
            known.trust("127.0.0.1", server.port, paramiko.Ed25519Key.from_private_key_file(str(server.host_key)))
        entries = []
        for i, name in enumerate(names):
            server = servers[i // args.per_sshd]
            key = root / "keys" / name
            key.parent.mkdir(exist_ok=True)
            config = root / name / "node.yaml"
            with open(server.authorized_keys, "a") as out:
                out.write(forced_command_line(config, ssh_keygen(key)) + "\n")
            entries.append(
                {
                    "name": name,
                    "site": f"site-{i // args.per_sshd}",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "key": str(key),
                    "config": str(config),
                    "call_timeout": 30,
                    "connect_timeout": 30,
                }
            )
        running = [run_node(root / names[i] / "node.yaml") for i in range(min(args.running, total))]
        setup_s = time.perf_counter() - t0
        results = []
        for n in args.nodes:
            path = root / f"fleet-{n}.yaml"
            path.write_text(
                yaml.safe_dump({"known_hosts": str(root / "known_hosts"), "nodes": entries[:n]}, sort_keys=False)
            )
            results.append(bench(load_fleet(path), args.repeat, args.parallel))
    finally:
        for proc in running:
            proc.terminate()
            proc.wait(timeout=30)
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    doc = {
        "cpus": os.cpu_count(),
        "per_sshd": args.per_sshd,
        "running_nodes": args.running,
        "setup_s": round(setup_s, 1),
        "results": results,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    for r in results:
        target = f"; target < {r['target_s']:g} s: {'met' if r['met'] else 'MISSED'}" if "target_s" in r else ""
        print(
            f"{r['nodes']:3d} nodes  warm refresh {r['warm_wall_median_s']:.3f} s (max {r['warm_wall_max_s']:.3f}), "
            f"console CPU {r['warm_cpu_median_s']:.3f} s ({r['warm_cpu_per_node_ms']:.1f} ms/node), "
            f"max tick lag {r['max_tick_lag_ms']:.1f} ms (idle {r['idle_max_tick_lag_ms']:.1f})"
            f" | cold {r['cold_wall_s']:.2f} s, CPU {r['cold_cpu_s']:.2f} s"
            f" | {r['statuses']}{target}"
        )
    return 0 if all(r.get("met", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
