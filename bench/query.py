"""Query/retrieve speed: C-FIND, C-MOVE and C-GET on a node indexing 100,000 instances, beside Orthanc."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import (
    LOOPBACK,
    SENDER_AET,
    BenchError,
    OrthancServer,
    PacsdeckServer,
    StorescpServer,
    dcmtk_env,
    find_dcmtk,
    find_orthanc,
)
from storage import synthetic
from storage.index.database import Index

OUT = Path(__file__).resolve().parent / "out"
BENCH_AET = "BENCH"
DEST_AET = "BENCHDEST"


# --- data -------------------------------------------------------------------------------------


def real_study(count: int) -> tuple[synthetic.StudySpec, list[Path]]:
    """The study that is stored for real (files) on every peer and moved/got in the timings."""
    folder = OUT / "cache" / f"qr-study-{count}"
    spec_file = folder / "spec.json"
    if spec_file.exists():
        spec = synthetic.StudySpec(**json.loads(spec_file.read_text()))
        return spec, sorted(folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    spec = synthetic.StudySpec(
        patient_id="QRBENCH01",
        patient_name="Benchmark^Quincy",
        study_uid=_uid(),
        study_date="20230615",
        accession="QRB0001",
        description="Query bench study",
    )
    files = synthetic.write_study(folder, spec, count, rows=512, cols=512, series=2)
    spec_file.write_text(json.dumps(spec.__dict__))
    return spec, files


def filler_files(count: int) -> list[Path]:
    """Small instances that make Orthanc's index non-trivial (loading 100,000 over DICOM takes too long)."""
    folder = OUT / "cache" / f"qr-filler-{count}"
    if folder.exists() and len(list(folder.glob("*.dcm"))) == count:
        return sorted(folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    files: list[Path] = []
    per_study = 10
    for spec in synthetic.studies(max(1, count // per_study), prefix="FILL"):
        files += synthetic.write_study(folder, spec, per_study, rows=32, cols=32)
    return files


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def index_synthetic_rows(index_path: Path, instances: int) -> None:
    """Fill the node's index: C-FIND reads only the index, so its size is what the timings are about."""
    index = Index(index_path)
    synthetic.index_rows(index, instances)
    index.close()


# --- servers ------------------------------------------------------------------------------------


class QueryPacsdeck(PacsdeckServer):
    """pacsdeck with the bench's SCU and move destination registered, and a pre-filled index."""

    def __init__(self, workdir: Path, echoscu: str, dest_port: int, rows: int):
        super().__init__(workdir, echoscu)
        self.dest_port = dest_port
        self.rows = rows

    def node_yaml(self) -> dict:
        cfg = super().node_yaml()
        cfg["aets"] = [
            {"ae_title": SENDER_AET, "host": LOOPBACK},
            {"ae_title": BENCH_AET, "host": LOOPBACK},
            {"ae_title": DEST_AET, "host": LOOPBACK, "port": self.dest_port, "move_destination": True},
        ]
        return cfg

    def prepare(self) -> None:
        super().prepare()
        index_synthetic_rows(self.workdir / "index.sqlite", self.rows)


class QueryOrthanc(OrthancServer):
    def __init__(self, workdir: Path, echoscu: str, orthanc: str, dest_port: int):
        super().__init__(workdir, echoscu, orthanc)
        self.dest_port = dest_port

    def config(self) -> dict:
        cfg = super().config()
        cfg["DicomModalities"] = {
            DEST_AET: [DEST_AET, LOOPBACK, self.dest_port],
            BENCH_AET: [BENCH_AET, LOOPBACK, 4242],
        }
        return cfg


# --- timing ---------------------------------------------------------------------------------------


def timed(argv: list[str]) -> float:
    """Wall time in ms of one DCMTK process (spawn and association included)."""
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=dcmtk_env())
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise BenchError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr[-500:]}")
    return elapsed


def operations(tools: dict, spec: synthetic.StudySpec, called: str, port: int, get_dir: Path) -> dict:
    """The DCMTK command lines timed against one peer."""
    conn = ["-aet", BENCH_AET, "-aec", called, LOOPBACK, str(port)]
    study = [
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName",
        "-k",
        "StudyDate",
        "-k",
        "NumberOfStudyRelatedInstances",
        "-k",
        "ModalitiesInStudy",
    ]
    find = [tools["findscu"], *study]
    date_from = spec.study_date
    return {
        "echoscu": [tools["echoscu"], *conn],
        "find StudyInstanceUID": [*find, "-k", f"StudyInstanceUID={spec.study_uid}", *conn],
        "find PatientID": [*find, "-k", f"PatientID={spec.patient_id}", *conn],
        "find PatientName wildcard": [*find, "-k", f"PatientName={spec.patient_name[:6]}*", *conn],
        "find StudyDate range": [*find, "-k", f"StudyDate={date_from}-{date_from[:6]}28", *conn],
        "move study (10)": [
            tools["movescu"],
            "-S",
            "-aem",
            DEST_AET,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={spec.study_uid}",
            *conn,
        ],
        "get study (10)": [
            tools["getscu"],
            "-S",
            "-od",
            str(get_dir),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={spec.study_uid}",
            *conn,
        ],
    }


def load(server, tools: dict, files: list[Path], extra: list[Path]) -> None:
    send = [tools["storescu"], "-aet", SENDER_AET, "-aec", server.ae_title, LOOPBACK, str(server.port)]
    for chunk in (files, *[extra[i : i + 500] for i in range(0, len(extra), 500)]):
        if chunk:
            result = subprocess.run(
                [*send, *map(str, chunk)], capture_output=True, text=True, timeout=600, env=dcmtk_env()
            )
            if result.returncode != 0:
                raise BenchError(f"loading {server.name} failed: {result.stderr[-500:]}")


def measure(servers: list, tools: dict, spec, files: list[Path], runs: int, workdir: Path) -> dict:
    """Time every operation on every peer, interleaved run by run, so that a noisy moment on this
    shared machine falls on all peers alike instead of on whichever ran then."""
    plans = {}
    for server in servers:
        get_dir = workdir / f"get-{server.name}"
        plans[server.name] = (get_dir, operations(tools, spec, server.ae_title, server.port, get_dir))
    times: dict = {server.name: {name: [] for name in plans[server.name][1]} for server in servers}
    for _ in range(runs):
        for name in plans[servers[0].name][1]:
            for server in servers:
                get_dir, ops = plans[server.name]
                if name.startswith("get"):
                    shutil.rmtree(get_dir, ignore_errors=True)
                    get_dir.mkdir(parents=True)
                times[server.name][name].append(timed(ops[name]))
    out = {}
    for server in servers:
        get_dir = plans[server.name][0]
        got = len(list(get_dir.glob("*")))
        if got != len(files):
            raise BenchError(f"{server.name}: C-GET delivered {got} of {len(files)} files")
        out[server.name] = {}
        for name, samples in times[server.name].items():
            samples.sort()
            out[server.name][name] = {
                "median_ms": statistics.median(samples),
                "p95_ms": samples[min(len(samples) - 1, int(len(samples) * 0.95))],
                "runs": runs,
            }
            print(
                f"  {server.name:<9} {name:<26} median {out[server.name][name]['median_ms']:7.1f} ms  "
                f"p95 {out[server.name][name]['p95_ms']:7.1f} ms",
                flush=True,
            )
    return out


# --- report ---------------------------------------------------------------------------------------


def report(results: dict) -> None:
    mine = results["pacsdeck"]
    echo = mine["echoscu"]["median_ms"]
    print(
        f"\npacsdeck, {results['settings']['indexed']:,} instances indexed: median wall time / echoscu's "
        f"({echo:.1f} ms); target ≤ 2.0 for C-FIND"
    )
    for name, row in mine.items():
        if name != "echoscu":
            print(f"  {name:<26} {row['median_ms'] / echo:5.2f}x")
    theirs = results.get("orthanc")
    if theirs:
        print(
            f"\npacsdeck / Orthanc median time (< 1: pacsdeck faster; Orthanc holds "
            f"{results['settings']['orthanc_instances']:,} instances)"
        )
        for name in mine:
            print(f"  {name:<26} {mine[name]['median_ms'] / theirs[name]['median_ms']:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000, help="rows put into pacsdeck's index")
    parser.add_argument("--orthanc-instances", type=int, default=2000, help="filler instances sent to Orthanc")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per operation")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    tools = {name: find_dcmtk(name) for name in ("echoscu", "findscu", "movescu", "getscu", "storescu", "storescp")}
    spec, files = real_study(10)
    orthanc = find_orthanc()
    extra = filler_files(args.orthanc_instances) if orthanc else []
    results: dict = {
        "settings": {
            "indexed": args.instances + len(files),
            "runs": args.runs,
            "orthanc_instances": len(extra) + len(files),
        }
    }
    OUT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="query-", dir=OUT))
    try:
        dest = StorescpServer(workdir / "dest", tools["echoscu"], tools["storescp"])
        dest.ae_title = DEST_AET
        with contextlib.ExitStack() as stack:
            stack.enter_context(dest)
            servers = [
                stack.enter_context(QueryPacsdeck(workdir / "pacsdeck", tools["echoscu"], dest.port, args.instances))
            ]
            load(servers[0], tools, files, [])
            if orthanc:
                servers.append(
                    stack.enter_context(QueryOrthanc(workdir / "orthanc", tools["echoscu"], orthanc, dest.port))
                )
                load(servers[1], tools, files, extra)
            else:
                print("note: Orthanc not installed: no comparison (apt-get install orthanc)")
            results.update(measure(servers, tools, spec, files, args.runs, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
