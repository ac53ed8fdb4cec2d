"""Ingest bench: C-STORE speed of pacsdeck next to DCMTK storescp and Orthanc, over 1 and 4 associations."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as a script: `python bench/ingest.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers
from storage import __version__ as pacsdeck_version
from storage import synthetic

OUT_DIR = Path(__file__).resolve().parent / "out"
CACHE_DIR = OUT_DIR / "cache"
RUNS_DIR = OUT_DIR / "runs"  # fresh storage per run, on the same disk as the cache
CONCURRENCY = (1, 4)
STUDIES = 100
CT_SHAPE = (512, 512)
CR_SHAPE = (3000, 2500)
MB = 1e6
MIB = 1 << 20


# --- the data sent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """The files to send, relative to `root` (storescu runs there, keeping its argument list short)."""

    root: Path
    files: tuple[str, ...]
    bytes: int


def _split(total: int, parts: int) -> list[int]:
    """`total` spread as evenly as possible over `parts` (the first ones get one more)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _write_ct(folder: Path, count: int) -> list[Path]:
    studies = min(STUDIES, count)
    paths: list[Path] = []
    for spec, n in zip(synthetic.studies(studies, prefix="CT"), _split(count, studies), strict=False):
        paths += synthetic.write_study(folder, spec, n, rows=CT_SHAPE[0], cols=CT_SHAPE[1])
    return paths


def _write_cr(folder: Path, count: int) -> list[Path]:
    spec = replace(next(synthetic.studies(1, prefix="CR")), modality="CR", description="Synthetic CR study")
    return synthetic.write_study(folder, spec, count, rows=CR_SHAPE[0], cols=CR_SHAPE[1], modality="CR")


def _manifest_valid(folder: Path, entries: list) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in entries)


def cached_set(name: str, count: int, write: Callable[[Path, int], list[Path]]) -> list[tuple[str, int]]:
    """(file name, size) of `count` instances in CACHE_DIR/name, written once and reused by later runs."""
    folder = CACHE_DIR / name
    manifest = folder / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text(encoding="utf-8"))
        if len(entries) == count and _manifest_valid(folder, entries):
            return [(n, s) for n, s in entries]
    if count == 0:
        return []
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {count} instances in {folder} ...", flush=True)
    entries = [(p.name, p.stat().st_size) for p in write(folder, count)]
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries), encoding="utf-8")
    tmp.replace(manifest)  # written last: a cache without it is incomplete and rebuilt
    return entries


def build_corpus(ct_count: int, cr_count: int) -> Corpus:
    """The CT and CR instances to send, generated into the cache on first use."""
    sets = [
        (f"ct-{CT_SHAPE[0]}x{CT_SHAPE[1]}-n{ct_count}", ct_count, _write_ct),
        (f"cr-{CR_SHAPE[0]}x{CR_SHAPE[1]}-n{cr_count}", cr_count, _write_cr),
    ]
    files, total = [], 0
    for name, count, write in sets:
        for file_name, size in cached_set(name, count, write):
            files.append(f"{name}/{file_name}")
            total += size
    return Corpus(root=CACHE_DIR, files=tuple(files), bytes=total)


# --- measuring --------------------------------------------------------------------------------


class PeakRss:
    """Samples the memory of a process and its children in a thread; `peak` is the highest seen.

    Memory is PSS (proportional set size): pages shared between a parent and the workers it forked,
    or between storescp's forked children, count once in total instead of once per process.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        try:
            proc = psutil.Process(self.pid)
            procs = [proc] + proc.children(recursive=True)
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass  # a child that just exited
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


# --- sending ----------------------------------------------------------------------------------

_RESPONSE = re.compile(r"Received Store Response \(([^)]*)")
_PDV = re.compile(r"Max Send PDV: (\d+)")


@dataclass
class SenderOutcome:
    """What one storescu process reported."""

    expected: int
    sent: int = 0
    acked: int = 0  # Success or Warning: the peer took responsibility for the instance
    failed: int = 0
    max_send_pdv: int | None = None
    errors: list[str] = field(default_factory=list)


def storescu_argv(storescu: str, port: int, called_aet: str, files: list[str], extra: list[str] = ()) -> list[str]:
    return [
        storescu,
        "-v",
        "-nh",
        "-aet",
        peers.SENDER_AET,
        "-aec",
        called_aet,
        *extra,
        peers.LOOPBACK,
        str(port),
        *files,
    ]


def parse_storescu_log(text: str, expected: int, returncode: int | None) -> SenderOutcome:
    """Count requests and responses in `storescu -v` output; note failures and a bad exit."""
    out = SenderOutcome(expected=expected)
    for line in text.splitlines():
        if "Sending Store Request" in line:
            out.sent += 1
        elif match := _RESPONSE.search(line):
            status = match.group(1)
            if status.startswith(("Success", "Warning")):
                out.acked += 1
            else:
                out.failed += 1
                if len(out.errors) < 5:
                    out.errors.append(line.strip())
        elif match := _PDV.search(line):
            out.max_send_pdv = int(match.group(1))
        elif line.startswith(("E:", "F:")) and len(out.errors) < 5:
            out.errors.append(line.strip())
    if returncode is None:
        out.errors.append("storescu timed out and was stopped")
    elif returncode != 0:
        out.errors.append(f"storescu exited with {returncode}")
    if out.acked < expected and not out.errors:
        out.errors.append(f"only {out.acked} of {expected} instances acknowledged")
    return out


def send(
    storescu: str,
    corpus: Corpus,
    port: int,
    called_aet: str,
    associations: int,
    logdir: Path,
    timeout: float,
    extra: list[str] = (),
) -> tuple[float, list[SenderOutcome]]:
    """Send the corpus with `associations` concurrent storescu processes; return wall seconds and outcomes."""
    shares = [list(corpus.files[i::associations]) for i in range(associations)]
    logs = [logdir / f"storescu-{i}.log" for i in range(associations)]
    procs: list[subprocess.Popen] = []
    returncodes: list[int | None] = []
    start = time.perf_counter()
    try:
        for share, log in zip(shares, logs, strict=False):
            with open(log, "wb") as handle:
                procs.append(
                    subprocess.Popen(
                        storescu_argv(storescu, port, called_aet, share, extra),
                        cwd=corpus.root,
                        env=peers.dcmtk_env(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=handle,
                    )
                )
        deadline = start + timeout
        for proc in procs:
            try:
                returncodes.append(proc.wait(timeout=max(0.0, deadline - time.perf_counter())))
            except subprocess.TimeoutExpired:
                returncodes.append(None)
        wall = time.perf_counter() - start
    finally:
        for proc in procs:
            peers.stop_process(proc, timeout=5)
    outcomes = [
        parse_storescu_log(log.read_text(encoding="utf-8", errors="replace"), len(share), rc)
        for share, log, rc in zip(shares, logs, returncodes, strict=False)
    ]
    return wall, outcomes


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One configuration sent once to one peer."""

    peer: str
    associations: int
    repeat: int
    instances: int
    bytes: int
    wall_s: float
    instances_per_s: float
    mb_per_s: float
    peak_rss_mib: float
    cpu_ms_per_instance: (
        float  # the server's user+system CPU (all its processes) per instance: less noisy than wall time
    )
    acked: int
    failed: int
    stored: int | None  # the peer's own count afterwards (index rows, files, Orthanc statistics)
    max_send_pdv: int | None
    errors: list[str]

    @property
    def complete(self) -> bool:
        return self.acked == self.instances and not self.errors and self.stored in (None, self.instances)


def make_run(
    peer: str,
    associations: int,
    repeat: int,
    corpus: Corpus,
    wall: float,
    peak_rss: int,
    outcomes: list[SenderOutcome],
    stored: int | None,
    cpu_s: float = 0.0,
) -> Run:
    errors = [f"storescu {i}/{len(outcomes)}: {e}" for i, o in enumerate(outcomes, 1) for e in o.errors]
    acked = sum(o.acked for o in outcomes)
    if stored is not None and stored != len(corpus.files):
        errors.append(f"{peer} holds {stored} instances afterwards, expected {len(corpus.files)}")
    return Run(
        peer=peer,
        associations=associations,
        repeat=repeat,
        instances=len(corpus.files),
        bytes=corpus.bytes,
        wall_s=wall,
        instances_per_s=acked / wall,
        mb_per_s=corpus.bytes / MB / wall,
        peak_rss_mib=peak_rss / MIB,
        cpu_ms_per_instance=1000 * cpu_s / max(1, len(corpus.files)),
        acked=acked,
        failed=sum(o.failed for o in outcomes),
        stored=stored,
        max_send_pdv=max((o.max_send_pdv or 0 for o in outcomes), default=0) or None,
        errors=errors,
    )


ServerFactory = Callable[[Path], peers.Server]


def server_cpu(pid: int) -> float:
    """User+system CPU seconds of a server and its live child processes (workers)."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def run_once(
    peer: str, factory: ServerFactory, corpus: Corpus, associations: int, repeat: int, storescu: str, timeout: float
) -> Run:
    """Start the peer on fresh empty storage, send the corpus, stop the peer, and return the figures."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{peer}-{associations}-", dir=RUNS_DIR))
    keep = True  # a failed run's folder stays for its logs
    try:
        with factory(workdir) as server:
            cpu_before = server_cpu(server.pid)
            with PeakRss(server.pid) as rss:
                wall, outcomes = send(
                    storescu, corpus, server.port, server.ae_title, associations, workdir, timeout, server.sender_args()
                )
            cpu = server_cpu(server.pid) - cpu_before
            stored = server.stored_count()
        run = make_run(peer, associations, repeat, corpus, wall, rss.peak, outcomes, stored, cpu)
        keep = not run.complete
        return run
    except KeyboardInterrupt:
        keep = False
        raise
    finally:
        if keep:
            print(f"  kept {workdir} for its logs", flush=True)
        else:
            # Deleted at the end of the whole bench, not now: ext4 searches longer for a free inode
            # while many were deleted in the last minutes, which would slow whichever peer runs next.
            _FINISHED_RUNS.append(workdir)


_FINISHED_RUNS: list[Path] = []


def remove_finished_runs() -> None:
    for workdir in _FINISHED_RUNS:
        shutil.rmtree(workdir, ignore_errors=True)
    _FINISHED_RUNS.clear()


# --- the peers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    storescu: str
    storescp: str
    echoscu: str
    orthanc: str | None


def find_tools() -> Tools:
    return Tools(
        storescu=peers.find_dcmtk("storescu"),
        storescp=peers.find_dcmtk("storescp"),
        echoscu=peers.find_dcmtk("echoscu"),
        orthanc=peers.find_orthanc(),
    )


def server_factories(
    tools: Tools, baseline: str | None = None, tls: bool = False, only: list[str] | None = None
) -> dict[str, ServerFactory]:
    """pacsdeck first, then the peers that are installed; `baseline` adds pacsdeck as of that git
    commit (`pacsdeck@REF`, e.g. the listener without its limits), `tls` pacsdeck over DICOM TLS."""
    factories: dict[str, ServerFactory] = {
        "pacsdeck": lambda wd: peers.PacsdeckServer(wd, tools.echoscu),
        "storescp": lambda wd: peers.StorescpServer(wd, tools.echoscu, tools.storescp),
    }
    if tools.orthanc:
        factories["orthanc"] = lambda wd: peers.OrthancServer(wd, tools.echoscu, tools.orthanc)
    if baseline:
        source = baseline_checkout(baseline)
        factories[f"pacsdeck@{baseline}"] = lambda wd: peers.PacsdeckServer(wd, tools.echoscu, source=source)
    if tls:
        pki = peers.test_pki(OUT_DIR / "pki")
        factories["pacsdeck+tls"] = lambda wd: peers.PacsdeckServer(wd, tools.echoscu, tls=pki)
    if only:
        unknown = set(only) - set(factories)
        if unknown:
            raise peers.BenchError(f"--peers: unknown {', '.join(sorted(unknown))}; have {', '.join(factories)}")
        factories = {name: f for name, f in factories.items() if name in only}
    return factories


def baseline_checkout(ref: str) -> Path:
    """A git worktree of `ref` under bench/out/, made once and reused."""
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=repo, capture_output=True, text=True
    )
    if commit.returncode != 0:
        raise peers.BenchError(f"--baseline: {ref!r} is not a commit of this repository")
    folder = OUT_DIR / f"baseline-{commit.stdout.strip()[:12]}"
    if not (folder / "pacsdeck" / "cli.py").exists():
        made = subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit.stdout.strip()],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise peers.BenchError(f"--baseline: git worktree add failed: {made.stderr.strip()}")
    return folder


def environment(tools: Tools) -> dict:
    return {
        "pacsdeck": pacsdeck_version,
        "dcmtk": peers.tool_version([tools.storescu]),
        "orthanc": peers.tool_version([tools.orthanc]) if tools.orthanc else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


# --- reporting --------------------------------------------------------------------------------

SUMMARY_FIELDS = ("wall_s", "instances_per_s", "mb_per_s", "peak_rss_mib", "cpu_ms_per_instance")


def summarise(runs: list[Run]) -> list[dict]:
    """Median figures per (peer, associations), in run order."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.peer, run.associations), []).append(run)
    rows = []
    for (peer, associations), group in groups.items():
        row = {
            "peer": peer,
            "associations": associations,
            "runs": len(group),
            "instances": group[0].instances,
            "complete": all(r.complete for r in group),
            "acked": min(r.acked for r in group),
            "stored": group[0].stored,
        }
        row.update({name: statistics.median(getattr(r, name) for r in group) for name in SUMMARY_FIELDS})
        rows.append(row)
    return rows


def ratios(summary: list[dict]) -> list[dict]:
    """pacsdeck's median throughput and peak memory (PSS) divided by each peer's, per concurrency."""
    ours = {row["associations"]: row for row in summary if row["peer"] == "pacsdeck"}
    out = []
    for row in summary:
        mine = ours.get(row["associations"])
        if row["peer"] == "pacsdeck" or mine is None:
            continue
        out.append(
            {
                "peer": row["peer"],
                "associations": row["associations"],
                "throughput": mine["instances_per_s"] / row["instances_per_s"],
                "peak_rss": mine["peak_rss_mib"] / row["peak_rss_mib"],
                "cpu": mine["cpu_ms_per_instance"] / row["cpu_ms_per_instance"] if row["cpu_ms_per_instance"] else None,
            }
        )
    return out


def print_table(summary: list[dict]) -> None:
    print(
        f"\n{'peer':<22}{'assoc':>6}{'wall s':>9}{'inst/s':>9}{'MB/s':>8}{'peak PSS MiB':>14}{'CPU ms/inst':>12}"
        f"{'acked':>12}{'stored':>8}"
    )
    for row in sorted(summary, key=lambda r: (r["associations"], r["peer"] != "pacsdeck", r["peer"])):
        stored = "?" if row["stored"] is None else str(row["stored"])
        flag = "" if row["complete"] else "  INCOMPLETE"
        print(
            f"{row['peer']:<22}{row['associations']:>6}{row['wall_s']:>9.2f}{row['instances_per_s']:>9.1f}"
            f"{row['mb_per_s']:>8.1f}{row['peak_rss_mib']:>14.1f}{row['cpu_ms_per_instance']:>12.2f}"
            f"{row['acked']:>6}/{row['instances']:<5}"
            f"{stored:>8}{flag}"
        )


def print_ratios(rows: list[dict]) -> None:
    if not rows:
        return
    print("\npacsdeck / peer   (throughput > 1: pacsdeck faster; peak PSS and CPU > 1: pacsdeck uses more)")
    print(f"{'peer':<22}{'assoc':>6}{'throughput':>12}{'peak PSS':>10}{'CPU/inst':>10}")
    for row in sorted(rows, key=lambda r: (r["peer"], r["associations"])):
        cpu = "" if row.get("cpu") is None else f"{row['cpu']:>9.2f}x"
        print(f"{row['peer']:<22}{row['associations']:>6}{row['throughput']:>11.2f}x{row['peak_rss']:>9.2f}x{cpu}")


def print_notes(runs: list[Run]) -> None:
    fsyncing = " and Orthanc" if any(r.peer == "orthanc" for r in runs) else ""
    pdv = ", ".join(dict.fromkeys(f"{r.peer} {r.max_send_pdv}" for r in runs))
    print(
        f"\nnotes: pacsdeck{fsyncing} fsync each instance; storescp does not, and runs one process per "
        f"association (--fork),\n       its memory (PSS) summed over them. storescu max send PDV: {pdv}."
    )


def print_failures(runs: list[Run]) -> None:
    for run in runs:
        if not run.complete:
            print(
                f"\nFAILED {run.peer} {run.associations} assoc run {run.repeat}: "
                f"{run.acked}/{run.instances} acknowledged, {run.failed} refused"
            )
            for error in run.errors:
                print(f"  {error}")


def write_json(path: Path, settings: dict, env: dict, runs: list[Run], summary: list[dict], ratio_rows: list[dict]):
    data = {
        "settings": settings,
        "environment": env,
        "runs": [asdict(r) | {"complete": r.complete} for r in runs],
        "summary": summary,
        "ratios": ratio_rows,
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, help="CT instances, 512x512 16-bit, over 100 studies (default 1000)")
    parser.add_argument("--cr-count", type=int, help="CR instances, 3000x2500 16-bit (default 4)")
    parser.add_argument("--quick", action="store_true", help="a short run: 200 CT and 1 CR unless given")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median is reported")
    parser.add_argument("--timeout", type=float, help="seconds allowed per run (default 120 + 0.5 per instance)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write settings, runs and ratios here")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run pacsdeck as of this git commit (pacsdeck@REF), "
        "e.g. the commit before a change, to measure its cost",
    )
    parser.add_argument("--tls", action="store_true", help="also run pacsdeck over DICOM TLS (pacsdeck+tls)")
    parser.add_argument("--peers", help="comma-separated peers to run (default: all), e.g. pacsdeck,pacsdeck+tls")
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = 200 if args.quick else 1000
    if args.cr_count is None:
        args.cr_count = 1 if args.quick else 4
    if args.count < 0 or args.cr_count < 0 or args.count + args.cr_count == 0 or args.repeat < 1:
        parser.error("need --count/--cr-count >= 0 with at least one instance, and --repeat >= 1")
    if args.timeout is None:
        args.timeout = 120 + 0.5 * (args.count + args.cr_count)
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def bench(args: argparse.Namespace) -> int:
    tools = find_tools()
    if tools.orthanc is None:
        print("note: Orthanc not installed (no `Orthanc` binary): skipping it; apt-get install orthanc to compare")
    corpus = build_corpus(args.count, args.cr_count)
    env = environment(tools)
    print(
        f"{len(corpus.files)} instances ({args.count} CT {CT_SHAPE[0]}x{CT_SHAPE[1]}, {args.cr_count} CR "
        f"{CR_SHAPE[0]}x{CR_SHAPE[1]}), {corpus.bytes / MB:.1f} MB; {env['dcmtk']}"
        + (f"; {env['orthanc']}" if env["orthanc"] else "")
        + f"; {env['cpus']} CPUs"
    )
    factories = server_factories(tools, args.baseline, args.tls, args.peers.split(",") if args.peers else None)
    runs: list[Run] = []
    order = list(factories.items())
    try:
        for repeat in range(1, args.repeat + 1):
            for associations in CONCURRENCY:
                # each repeat starts with another peer, so none always runs first (or last)
                rotated = order[(repeat - 1) % len(order) :] + order[: (repeat - 1) % len(order)]
                for peer, factory in rotated:
                    run = run_once(peer, factory, corpus, associations, repeat, tools.storescu, args.timeout)
                    runs.append(run)
                    print(
                        f"  {peer:<21} {associations} assoc, run {repeat}/{args.repeat}: {run.acked}/{run.instances} "
                        f"in {run.wall_s:.2f}s = {run.instances_per_s:.1f} inst/s, {run.mb_per_s:.1f} MB/s, "
                        f"peak memory {run.peak_rss_mib:.0f} MiB",
                        flush=True,
                    )
    finally:
        remove_finished_runs()
    summary = summarise(runs)
    ratio_rows = ratios(summary)
    print_table(summary)
    print_ratios(ratio_rows)
    print_notes(runs)
    print_failures(runs)
    if args.json:
        settings = {
            "count": args.count,
            "cr_count": args.cr_count,
            "repeat": args.repeat,
            "timeout": args.timeout,
            "concurrency": list(CONCURRENCY),
            "studies": min(STUDIES, args.count),
        }
        write_json(args.json, settings, env, runs, summary, ratio_rows)
        print(f"\nwrote {args.json}")
    return 0 if all(r.complete for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so `finally` blocks stop every child on SIGTERM too
    try:
        return bench(args)
    except peers.BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers and senders stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
