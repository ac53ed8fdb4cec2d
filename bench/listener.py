"""Listener bench: what idle and stalling peers cost the node, and whether real peers still get in.

Usage: .venv/bin/python bench/listener.py [--peers 200] [--drip 50] [--json FILE]

One node (workers: 1, max_associations 250, limits {max_associations_per_ae: 0, idle_timeout: 600s})
on 127.0.0.1, measured in four phases:
  idle        no connections: the node's CPU over --window seconds (the floor);
  established --peers raw peers associate (Verification) and stay silent: CPU over --window;
  silent      --peers connections that never send a byte: CPU over --window, and when each was
              closed (the oldest past limits.max_pending at once, the rest at request_timeout);
  echo        --peers silent connections (reopened when closed) and --drip drip-feeders (one byte
              of an A-ASSOCIATE-RQ every 0.5 s, reconnecting when closed) held while echoscu runs
              once a second for --echo-seconds: its success rate and latency.
CPU is the node process's user+system time (psutil) over the window, as % of one core.
Every socket and process it opens is closed or stopped (by PID) before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as a script: `python bench/listener.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pynetdicom

from bench import peers
from storage import __version__ as pacsdeck_version

SCHEMA = 1
OUT_DIR = Path(__file__).resolve().parent / "out"
RUNS_DIR = OUT_DIR / "runs"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"
REQUEST_TIMEOUT = 10.0  # the node's default limits.request_timeout, seconds
MAX_PENDING = 256  # the node's default limits.max_pending
DRIP_INTERVAL = 0.5  # seconds between a drip-feeder's bytes
RECONNECT_DELAY = 0.5  # seconds before a closed attacker connects again: bounds the churn (250 peers: <= 500/s)
CONNECT_TIMEOUT = 5.0


# --- raw peers -----------------------------------------------------------------------------------


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(called: str, calling: str) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification in Implicit VR LE (PS3.8 9.3.2)."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body += _item(0x10, APP_CONTEXT.encode())
    body += _item(0x20, bytes((1, 0, 0, 0)) + _item(0x30, VERIFICATION.encode()) + _item(0x40, IMPLICIT_LE.encode()))
    body += _item(0x50, _item(0x51, struct.pack(">L", 16384)))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((peers.LOOPBACK, port), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_pdu_type(sock: socket.socket, timeout: float) -> int | None:
    """The type of the next PDU the node sends (its body is read and dropped), None if it closed."""
    sock.settimeout(timeout)
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            return None
        header += chunk
    remaining = struct.unpack(">L", header[2:6])[0]
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            return None
        remaining -= len(chunk)
    return header[0]


def is_closed(sock: socket.socket) -> bool:
    """Has the node closed this connection? (reads and drops what it sent, e.g. an A-ABORT)"""
    try:
        while True:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


# --- the node ------------------------------------------------------------------------------------


class ListenerNode(peers.PacsdeckServer):
    """The node as the brief sets it: one worker, room for 250 associations, no per-AE cap."""

    def node_yaml(self) -> dict:
        return {
            **super().node_yaml(),
            "workers": 1,
            "max_associations": 250,
            "limits": {"max_associations_per_ae": 0, "idle_timeout": 600},
        }


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def cpu_percent(proc: psutil.Process, window: float, while_waiting=None) -> float:
    """The process's CPU over `window` seconds as % of one core; `while_waiting()` is polled meanwhile."""
    start_cpu, start = cpu_seconds(proc), time.monotonic()
    while time.monotonic() - start < window:
        if while_waiting is not None:
            while_waiting()
        time.sleep(0.05)
    return 100.0 * (cpu_seconds(proc) - start_cpu) / (time.monotonic() - start)


def node_connections(proc: psutil.Process, port: int) -> int:
    """TCP connections the node holds on its DICOM port (accepted, not yet closed)."""
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return sum(1 for c in conns if c.laddr and c.laddr.port == port and c.raddr)


def wait_drained(proc: psutil.Process, port: int, timeout: float = 30.0) -> int:
    """Poll until the node holds no connection on its port (or `timeout`); return how many remain."""
    deadline = time.monotonic() + timeout
    while True:
        left = node_connections(proc, port)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def process_facts(proc: psutil.Process) -> dict:
    return {"threads": proc.num_threads(), "rss_bytes": proc.memory_info().rss}


# --- phases --------------------------------------------------------------------------------------


def phase_idle(node: ListenerNode, proc: psutil.Process, echoscu: str, window: float) -> dict:
    """The floor: CPU with no connections, then echoscu's latency with nothing else going on."""
    cpu, facts = cpu_percent(proc, window), process_facts(proc)
    echoes = [echo_once(echoscu, node.port, node.ae_title) for _ in range(5)]
    latencies = [t for ok, t in echoes if ok]
    return {
        "cpu_percent_of_one_core": cpu,
        "window_s": window,
        "echo_ok": len(latencies),
        "echo_attempts": 5,
        "echo_latency_s": {
            "median": statistics.median(latencies) if latencies else None,
            "max": max(latencies, default=None),
        },
        **facts,
    }


def phase_established(node: ListenerNode, proc: psutil.Process, count: int, window: float) -> dict:
    socks, rejected, failed = [], 0, 0
    request = associate_rq(node.ae_title, peers.SENDER_AET)
    started = time.monotonic()
    try:
        for _ in range(count):
            try:
                sock = connect(node.port)
                sock.sendall(request)
                answer = read_pdu_type(sock, CONNECT_TIMEOUT)
            except OSError:
                failed += 1
                continue
            if answer == 0x02:
                sock.setblocking(False)
                socks.append(sock)
            else:
                rejected += 1
                sock.close()
        open_s = time.monotonic() - started
        facts = process_facts(proc)
        cpu = cpu_percent(proc, window)
        still_open = sum(not is_closed(s) for s in socks)
    finally:
        for sock in socks:
            sock.close()
    left = wait_drained(proc, node.port)
    return {
        "associations": len(socks),
        "rejected": rejected,
        "failed": failed,
        "open_s": open_s,
        "cpu_percent_of_one_core": cpu,
        "window_s": window,
        "still_open_after_window": still_open,
        "connections_left_30s_after_close": left,
        **facts,
    }


def phase_silent(node: ListenerNode, proc: psutil.Process, count: int, window: float) -> dict:
    """`count` connections that never send; when did the node close each (seconds after its connect)?"""
    opened: list[tuple[socket.socket, float]] = []
    closed_after: list[float | None] = []
    try:
        for _ in range(count):
            try:
                sock = connect(node.port)
            except OSError:
                continue
            sock.setblocking(False)
            opened.append((sock, time.monotonic()))
        closed_after = [None] * len(opened)

        def poll() -> None:
            now = time.monotonic()
            for i, (sock, at) in enumerate(opened):
                if closed_after[i] is None and is_closed(sock):
                    closed_after[i] = now - at

        facts = process_facts(proc)
        cpu = cpu_percent(proc, window, poll)
        deadline = opened[-1][1] + REQUEST_TIMEOUT + 5.0 if opened else time.monotonic()
        while time.monotonic() < deadline and any(c is None for c in closed_after):
            poll()
            time.sleep(0.05)
    finally:
        for sock, _ in opened:
            sock.close()
    wait_drained(proc, node.port)
    times = [c for c in closed_after if c is not None]
    early = [t for t in times if t < REQUEST_TIMEOUT - 1.0]
    at_deadline = [t for t in times if REQUEST_TIMEOUT - 1.0 <= t <= REQUEST_TIMEOUT + 2.0]
    return {
        "connections": len(opened),
        "cpu_percent_of_one_core": cpu,
        "window_s": window,
        "closed": len(times),
        "closed_early": len(early),
        "closed_at_request_timeout": len(at_deadline),
        "closed_late": len(times) - len(early) - len(at_deadline),
        "still_open_at_request_timeout_plus_5s": len(opened) - len(times),
        "request_timeout_s": REQUEST_TIMEOUT,
        "max_pending": MAX_PENDING,
        "closed_after_s": {
            "min": min(times, default=None),
            "median": statistics.median(times) if times else None,
            "max": max(times, default=None),
        },
        "closed_early_after_s_max": max(early, default=None),
        **facts,
    }


@dataclass
class Attacker:
    """A connection that stays silent (drip False) or sends one byte every DRIP_INTERVAL (drip True)."""

    drip: bool
    sock: socket.socket | None = None
    sent: int = 0
    next_at: float = 0.0
    connects: int = 0
    closed_by_node: int = 0
    connect_failures: int = 0


@dataclass
class Load:
    """Silent and drip-feeding attackers held on one thread with a selector until stop() is called."""

    port: int
    request: bytes
    silent: int
    drip: int
    attackers: list[Attacker] = field(default_factory=list)

    def __post_init__(self):
        self.attackers = [Attacker(False) for _ in range(self.silent)] + [Attacker(True) for _ in range(self.drip)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listener-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for attacker in self.attackers:
            if attacker.sock is not None:
                attacker.sock.close()
                attacker.sock = None

    def held(self) -> int:
        return sum(a.sock is not None for a in self.attackers)

    def connects(self) -> int:
        return sum(a.connects for a in self.attackers)

    def _connect(self, attacker: Attacker, now: float) -> None:
        try:
            attacker.sock = connect(self.port)
        except OSError:
            attacker.connect_failures += 1
            attacker.next_at = now + RECONNECT_DELAY
            return
        attacker.sock.setblocking(False)
        attacker.connects += 1
        attacker.sent = 0
        attacker.next_at = now + DRIP_INTERVAL

    def _closed(self, attacker: Attacker, now: float) -> None:
        attacker.sock.close()
        attacker.sock = None
        attacker.closed_by_node += 1
        attacker.next_at = now + RECONNECT_DELAY

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for attacker in self.attackers:
                    if attacker.sock is None and now >= attacker.next_at:
                        self._connect(attacker, now)
                        if attacker.sock is not None:
                            selector.register(attacker.sock, selectors.EVENT_READ, attacker)
                    elif attacker.sock is not None and attacker.drip and now >= attacker.next_at:
                        try:
                            attacker.sock.send(self.request[attacker.sent % len(self.request) :][:1])
                            attacker.sent += 1
                            attacker.next_at = now + DRIP_INTERVAL
                        except OSError:
                            selector.unregister(attacker.sock)
                            self._closed(attacker, now)
                for key, _ in selector.select(timeout=0.05):
                    attacker = key.data
                    if is_closed(attacker.sock):
                        selector.unregister(attacker.sock)
                        self._closed(attacker, time.monotonic())
        finally:
            selector.close()


def echo_once(echoscu: str, port: int, called: str) -> tuple[bool, float]:
    argv = [echoscu, "-aet", peers.SENDER_AET, "-aec", called, "-to", "5", peers.LOOPBACK, str(port)]
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, env=peers.dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20
        )
        ok = result.returncode == 0
    except subprocess.TimeoutExpired:  # subprocess.run kills the child it started
        ok = False
    return ok, time.monotonic() - started


def phase_echo(node: ListenerNode, proc: psutil.Process, echoscu: str, silent: int, drip: int, seconds: int) -> dict:
    load = Load(node.port, associate_rq(node.ae_title, peers.SENDER_AET), silent, drip)
    results: list[tuple[bool, float]] = []
    lock = threading.Lock()

    def one() -> None:
        outcome = echo_once(echoscu, node.port, node.ae_title)
        with lock:
            results.append(outcome)

    load.start()
    try:
        ramp_deadline = time.monotonic() + 15.0  # every attacker has connected once before echoscu starts
        while any(a.connects == 0 for a in load.attackers) and time.monotonic() < ramp_deadline:
            time.sleep(0.1)
        held_at_start = load.held()
        connects_at_start = load.connects()
        cpu_start, start = cpu_seconds(proc), time.monotonic()
        threads = []
        for i in range(seconds):
            target = start + i
            time.sleep(max(0.0, target - time.monotonic()))
            thread = threading.Thread(target=one, name=f"echoscu-{i}")
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=30)
        elapsed = time.monotonic() - start
        cpu = 100.0 * (cpu_seconds(proc) - cpu_start) / elapsed
        connects_per_s = (load.connects() - connects_at_start) / elapsed
        facts = process_facts(proc)
        held_at_end = load.held()
    finally:
        load.stop()
    wait_drained(proc, node.port)
    latencies = sorted(t for ok, t in results if ok)
    silent_attackers = [a for a in load.attackers if not a.drip]
    drippers = [a for a in load.attackers if a.drip]
    return {
        "silent": silent,
        "drip": drip,
        "held_at_start": held_at_start,
        "held_at_end": held_at_end,
        "echo_attempts": len(results),
        "echo_ok": sum(ok for ok, _ in results),
        "echo_success_rate": sum(ok for ok, _ in results) / len(results) if results else 0.0,
        "echo_latency_s": {
            "median": statistics.median(latencies) if latencies else None,
            "max": max(latencies, default=None),
        },
        "cpu_percent_of_one_core": cpu,
        "silent_closed_by_node": sum(a.closed_by_node for a in silent_attackers),
        "drip_closed_by_node": sum(a.closed_by_node for a in drippers),
        "drip_max_bytes_sent": max((a.sent for a in drippers), default=0),
        "connects": load.connects(),
        "connects_per_s": connects_per_s,
        "seconds": elapsed,
        "connect_failures": sum(a.connect_failures for a in load.attackers),
        **facts,
    }


# --- reporting -----------------------------------------------------------------------------------


def environment(echoscu: str) -> dict:
    return {
        "pacsdeck": pacsdeck_version,
        "pynetdicom": pynetdicom.__version__,
        "dcmtk": peers.tool_version([echoscu]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def print_table(results: dict) -> None:
    idle, est, silent, echo = results["idle"], results["established"], results["silent"], results["echo"]
    print(f"\n{'phase':<34}{'node CPU %core':>15}{'threads':>9}{'RSS MiB':>9}")
    rows = [
        ("no connections", idle),
        (f"{est['associations']} idle associations", est),
        (f"{silent['connections']} silent connections", silent),
        (f"{echo['silent']} silent + {echo['drip']} drip-feeders", echo),
    ]
    for name, row in rows:
        print(f"{name:<34}{row['cpu_percent_of_one_core']:>15.2f}{row['threads']:>9}{row['rss_bytes'] / 2**20:>9.1f}")
    closed = silent["closed_after_s"]
    print(
        f"\nsilent connections: {silent['closed']}/{silent['connections']} closed "
        f"(min {_s(closed['min'])} s, median {_s(closed['median'])} s, max {_s(closed['max'])} s); "
        f"{silent['closed_early']} early (past max_pending {silent['max_pending']}, by "
        f"{_s(silent['closed_early_after_s_max'])} s), {silent['closed_at_request_timeout']} at request_timeout "
        f"({silent['request_timeout_s']:g} s), {silent['closed_late']} late, "
        f"{silent['still_open_at_request_timeout_plus_5s']} still open 5 s after it"
    )
    print(
        f"idle associations: {est['associations']} accepted, {est['rejected']} rejected, {est['failed']} failed, "
        f"{est['still_open_after_window']} still open after the window"
    )
    lat, base = echo["echo_latency_s"], idle["echo_latency_s"]
    print(
        f"echoscu under load: {echo['echo_ok']}/{echo['echo_attempts']} ok "
        f"({100 * echo['echo_success_rate']:.0f}%), latency median {_ms(lat['median'])} ms"
        f" max {_ms(lat['max'])} ms (no load: {idle['echo_ok']}/{idle['echo_attempts']} ok, median "
        f"{_ms(base['median'])} ms); attackers held {echo['held_at_start']} -> "
        f"{echo['held_at_end']}, node closed {echo['silent_closed_by_node']} silent and "
        f"{echo['drip_closed_by_node']} drip connections ({echo['connects']} connects, "
        f"{echo['connects_per_s']:.0f}/s while echoscu ran)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=200, help="idle associations / silent connections (200)")
    parser.add_argument("--drip", type=int, default=50, help="drip-feeders in the echo phase (50)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of each CPU measurement (10)")
    parser.add_argument("--echo-seconds", type=int, default=20, help="echoscu runs, one a second (20)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write settings, environment and results")
    args = parser.parse_args(argv)
    if not (
        1 <= args.peers <= 240 and 0 <= args.drip <= 200 and 1 <= args.window <= 120 and 1 <= args.echo_seconds <= 120
    ):
        parser.error("--peers 1..240 (max_associations is 250), --drip 0..200, --window 1..120, --echo-seconds 1..120")
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def bench(args: argparse.Namespace) -> int:
    echoscu = peers.find_dcmtk("echoscu")
    env = environment(echoscu)
    print(
        f"listener bench: {args.peers} peers, {args.drip} drip-feeders, {args.window:g} s windows; "
        f"pacsdeck {env['pacsdeck']}, pynetdicom {env['pynetdicom']}, {env['dcmtk']}, {env['cpus']} CPUs"
    )
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    workdir = RUNS_DIR / f"listener-{os.getpid()}"
    results = {}
    try:
        with ListenerNode(workdir, echoscu) as node:
            proc = psutil.Process(node.pid)
            node_settings = {k: v for k, v in node.node_yaml().items() if k not in ("port", "pools", "aets")}
            results["idle"] = phase_idle(node, proc, echoscu, args.window)
            print(f"  idle: {results['idle']['cpu_percent_of_one_core']:.2f}% of a core", flush=True)
            results["established"] = phase_established(node, proc, args.peers, args.window)
            print(
                f"  {results['established']['associations']} idle associations: "
                f"{results['established']['cpu_percent_of_one_core']:.2f}% of a core",
                flush=True,
            )
            results["silent"] = phase_silent(node, proc, args.peers, args.window)
            print(
                f"  {results['silent']['connections']} silent connections: "
                f"{results['silent']['cpu_percent_of_one_core']:.2f}% of a core",
                flush=True,
            )
            results["echo"] = phase_echo(node, proc, echoscu, args.peers, args.drip, args.echo_seconds)
            alive = node.proc.poll() is None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["node_alive_at_end"] = alive
    print_table(results)
    if args.json:
        settings = {
            "peers": args.peers,
            "drip": args.drip,
            "window_s": args.window,
            "echo_seconds": args.echo_seconds,
            "drip_interval_s": DRIP_INTERVAL,
            "reconnect_delay_s": RECONNECT_DELAY,
            "node": node_settings,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"schema": SCHEMA, "settings": settings, "environment": env, "results": results}, indent=2)
            + "\n",
            encoding="utf-8",
        )
        print(f"\nwrote {args.json}")
    return 0 if alive and results["echo"]["echo_success_rate"] == 1.0 else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so `finally` blocks close every socket and stop the node
    try:
        return bench(args)
    except peers.BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; node stopped and sockets closed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
