"""Round-trip latency of node.status over one persistent agent channel: local stdio and loopback SSH.

Usage: .venv/bin/python bench/agent_latency.py [--calls 200] [--json]
Needs root for the sshd part (privilege separation); prints median and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.protocol import encode, request, unwrap  # noqa: E402
from tests.agent_support import Agent, agent_env, ssh_keygen, start_sshd, stop_sshd  # noqa: E402
from tests.conftest import make_node  # noqa: E402

TARGET_MS = {"local": 10.0, "ssh": 20.0}


def summarise(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {
        "calls": len(samples),
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }


def time_calls(send, receive, calls: int, warmup: int = 10) -> list[float]:
    """Send one request, wait for its response, repeat: the per-call cost on an open channel."""
    samples = []
    for i in range(warmup + calls):
        started = time.perf_counter()
        send(encode(request("node.status", id=i)))
        response = json.loads(receive())
        elapsed = (time.perf_counter() - started) * 1000
        assert response["id"] == i and unwrap(response)["node"]
        if i >= warmup:
            samples.append(elapsed)
    return samples


def bench_local(node, env, calls: int) -> dict:
    agent = Agent(node.config, env=env)
    try:
        samples = time_calls(agent.send_raw, lambda: json.dumps(agent.read()), calls)
    finally:
        agent.close()
    return summarise(samples)


def bench_ssh(node, env, folder: Path, calls: int) -> dict:
    server = start_sshd(folder / "sshd")
    try:
        key = folder / "bench_ed25519"
        admin = Agent(node.config, env=agent_env(server.authorized_keys))
        admin.call("users.add", {"name": "bench", "role": "viewer", "ssh_keys": [ssh_keygen(key)]})
        admin.close()
        client = server.connect(key)
        channel = client.get_transport().open_session()
        channel.exec_command("pacsdeck agent stdio")
        out = channel.makefile("rb")
        samples = time_calls(channel.sendall, out.readline, calls)
        channel.shutdown_write()
        channel.recv_exit_status()
    finally:
        stop_sshd(server)
    return summarise(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pacsdeck-bench-") as tmp:
        folder = Path(tmp)
        node = make_node(folder / "node").start()  # a listening node, as in production
        env = agent_env(folder / "authorized_keys", PACSDECK_LOG_LEVEL="WARNING")
        try:
            results = {"local": bench_local(node, env, args.calls), "ssh": bench_ssh(node, env, folder, args.calls)}
        finally:
            node.stop()
    for name, r in results.items():
        r["target_ms"] = TARGET_MS[name]
        r["met"] = r["median_ms"] < TARGET_MS[name] and r["p95_ms"] < TARGET_MS[name]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            print(
                f"{name:5s}  median {r['median_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  "
                f"(min {r['min_ms']:.2f}, max {r['max_ms']:.2f}, {r['calls']} calls; target < {r['target_ms']:g} ms: "
                f"{'met' if r['met'] else 'MISSED'})"
            )
    return 0 if all(r["met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
