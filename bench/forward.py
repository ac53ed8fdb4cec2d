"""Forwarding throughput: pacsdeck's queue sending 1,000 stored CT instances to a DCMTK storescp,
against DCMTK storescu sending the same files to the same storescp, in the same run."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers
from storage import synthetic
from storage.index.database import Index
from storage.index.queue import enqueue_study

PER_STUDY = 100
DEST = peers.StorescpServer.ae_title


class ForwardingNode(peers.PacsdeckServer):
    """The bench's pacsdeck node, with the storescp registered as a destination."""

    def __init__(self, workdir: Path, echoscu: str, dest_port: int, associations: int):
        super().__init__(workdir, echoscu)
        self.dest_port = dest_port
        self.associations = associations

    def node_yaml(self) -> dict:
        cfg = super().node_yaml()
        cfg["aets"].append({"ae_title": DEST, "host": peers.LOOPBACK, "port": self.dest_port, "operations": ["store"]})
        cfg["queue"] = {"associations": self.associations}
        return cfg


def write_corpus(folder: Path, count: int, size: int) -> tuple[list[Path], int]:
    files: list[Path] = []
    for n, spec in enumerate(synthetic.studies((count + PER_STUDY - 1) // PER_STUDY, prefix="FWD")):
        files += synthetic.write_study(folder / f"s{n}", spec, min(PER_STUDY, count - len(files)), rows=size, cols=size)
    return files, sum(p.stat().st_size for p in files)


def storescu(tool: str, port: int, called: str, files: list[Path], cwd: Path, log: Path) -> float:
    """One storescu process, one association: wall seconds, process start included."""
    argv = [
        tool,
        "-nh",
        "-aet",
        peers.SENDER_AET,
        "-aec",
        called,
        peers.LOOPBACK,
        str(port),
        *[str(p.relative_to(cwd)) for p in files],
    ]
    started = time.perf_counter()
    with open(log, "ab") as out:
        result = subprocess.run(argv, cwd=cwd, env=peers.dcmtk_env(), stdout=out, stderr=out, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise peers.BenchError(f"storescu exited with {result.returncode}; see {log}")
    return seconds


def forward(index_path: Path, studies: list[str], count: int) -> float:
    """Queue every study for the storescp and wait for the node's forwarder to finish: seconds
    from the first job's creation to the last job's completion, as the index recorded them."""
    index = Index(index_path)
    first = None
    for uid in studies:
        job = enqueue_study(index, uid, DEST, max_attempts=1, reason="bench")
        first = first or job["job_id"]
    index.close()
    deadline = time.monotonic() + 600
    with sqlite3.connect(index_path, timeout=30) as conn:
        while time.monotonic() < deadline:
            states = dict(conn.execute("SELECT state, count(*) FROM jobs WHERE id >= ? GROUP BY state", (first,)))
            if states.get("pending", 0) + states.get("running", 0) == 0:
                break
            time.sleep(0.02)
        else:
            raise peers.BenchError("forwarding did not finish within 600 s")
        done, started, ended = conn.execute(
            "SELECT sum(instances_done), min(created_at), max(updated_at) FROM jobs WHERE id >= ?", (first,)
        ).fetchone()
        failed = conn.execute("SELECT last_error FROM jobs WHERE id >= ? AND state != 'done'", (first,)).fetchall()
    if failed or done != count:
        raise peers.BenchError(f"forwarding sent {done} of {count}: {failed[:3]}")
    return ended - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="instances (100 per study)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each CT image")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the median is reported")
    parser.add_argument(
        "--associations",
        type=int,
        nargs="+",
        default=[1, 2],
        help="queue.associations settings to measure, one node each (default: 1 2)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    storescu_tool = peers.find_dcmtk("storescu")
    echoscu = peers.find_dcmtk("echoscu")
    storescp_tool = peers.find_dcmtk("storescp")
    with tempfile.TemporaryDirectory(prefix="pacsdeck-forward-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        print(f"writing {args.count} CT instances ({args.size}x{args.size}) ...", flush=True)
        files, nbytes = write_corpus(corpus, args.count, args.size)
        with contextlib.ExitStack() as stack:
            scp = stack.enter_context(peers.StorescpServer(root / "storescp", echoscu, storescp_tool))
            nodes = {}
            for n in args.associations:
                node = stack.enter_context(ForwardingNode(root / f"pacsdeck-{n}", echoscu, scp.port, n))
                # Load the node first (not timed): forwarding sends the instances stored here.
                storescu(storescu_tool, node.port, node.ae_title, files, corpus, root / "load.log")
                index_path = node.workdir / "index.sqlite"
                with sqlite3.connect(index_path) as conn:
                    studies = [r[0] for r in conn.execute("SELECT DISTINCT study_uid FROM instances ORDER BY 1")]
                    stored = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
                if stored != args.count:
                    raise peers.BenchError(f"the node stored {stored} of {args.count} instances")
                nodes[n] = (index_path, studies)
            direct: list[float] = []
            forwarded: dict[int, list[float]] = {n: [] for n in nodes}
            kinds = ["direct", *nodes]
            for run in range(args.repeat):
                for what in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:  # rotating order
                    if what == "direct":
                        direct.append(storescu(storescu_tool, scp.port, DEST, files, corpus, root / "direct.log"))
                    else:
                        forwarded[what].append(forward(*nodes[what], args.count))
                print(
                    f"run {run + 1}: storescu {args.count / direct[-1]:.0f} inst/s, "
                    + ", ".join(f"forward ({n} assoc.) {args.count / forwarded[n][-1]:.0f} inst/s" for n in nodes),
                    flush=True,
                )
    d = statistics.median(direct)

    def rates(seconds: float) -> dict:
        return {
            "seconds": round(seconds, 3),
            "instances_per_s": round(args.count / seconds, 1),
            "mb_per_s": round(nbytes / 1e6 / seconds, 1),
        }

    result = {
        "instances": args.count,
        "bytes": nbytes,
        "repeat": args.repeat,
        "storescu": rates(d),
        "storescu_runs_s": [round(x, 3) for x in direct],
        "forward": {},
    }
    print(
        f"storescu -> storescp (1 association): {result['storescu']['instances_per_s']} inst/s "
        f"({result['storescu']['mb_per_s']} MB/s)"
    )
    for n, runs in forwarded.items():
        f = statistics.median(runs)
        result["forward"][str(n)] = {**rates(f), "ratio": round(d / f, 3), "runs_s": [round(x, 3) for x in runs]}
        print(
            f"pacsdeck forward -> storescp ({n} association{'s' if n > 1 else ''} per destination): "
            f"{args.count / f:.1f} inst/s ({nbytes / 1e6 / f:.1f} MB/s), {d / f:.0%} of storescu (target 80%)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
