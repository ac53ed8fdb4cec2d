"""Backups against the tools an administrator would use by hand, in one run: full and incremental `dir`
backups against `cp -a` + `sync`, restic through pacsdeck against `restic backup` of the pool folders, and
ingest while a backup runs against ingest alone.

Usage: .venv/bin/python bench/backup.py [--gb 2] [--repeat 3] [--json bench/out/backup.json]

Set-up: one real node (`pacsdeck node run`, workers 1) filled by DCMTK's storescu with synthetic 512x512
16-bit instances (0.5 MB each) up to --gb. Each timed step runs through the real CLI (`pacsdeck node backup
run`, as an administrator or cron would), so it includes the CLI's start-up. Full backups go to an empty
target each time (nothing to link from), with every file's SHA-256 checked as always; `cp -a` copies the
same pool folders to the same disk and `sync` flushes it (the backup fsyncs each file). The incremental
backup follows a full one after 1 % new instances. Ingest: storescu of --ingest instances alone, then the
same while a full backup runs. Runs are interleaved (pacsdeck, peer, pacsdeck, ...); medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACSDECK = str(Path(sys.executable).parent / "pacsdeck")
sys.path.insert(0, str(REPO))

from bench.console_fix import fsync_ms  # noqa: E402
from bench.rollout import init_node  # noqa: E402
from storage import synthetic  # noqa: E402

INSTANCE_BYTES = 512 * 512 * 2


def storescu(port: int, files: list[Path]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-nh", "-aet", "STORESCU", "-aec", "BENCH", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu: {done.stderr[-500:]}")
    return time.perf_counter() - started


def make_files(folder: Path, count: int, prefix: str) -> list[Path]:
    files: list[Path] = []
    per_study = 50
    for i, spec in enumerate(synthetic.studies((count + per_study - 1) // per_study, prefix=prefix)):
        files += synthetic.write_study(folder / f"s{i}", spec, min(per_study, count - len(files)))
    return files


def timed(*args: str, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=7200, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1] if len(args) > 1 else ''}: {done.stderr[-800:]}")
    return time.perf_counter() - started


ENGINE: dict[str, list[float]] = {}  # target -> the backups' own durations (manifest), without the CLI's start


def backup(config: Path, target: str) -> float:
    """Wall time of `pacsdeck node backup run` (what cron sees); the backup's own time goes to ENGINE."""
    started = time.perf_counter()
    done = subprocess.run(
        [PACSDECK, "node", "backup", "run", "--config", str(config), "--target", target, "--json"],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"backup to {target}: {done.stderr[-800:]}")
    ENGINE.setdefault(target, []).append(json.loads(done.stdout)["backup"]["seconds"])
    return wall


def empty(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="data in the pools (GB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ingest", type=int, default=400, help="instances sent for the ingest comparison")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for tool in ("storescu", "restic"):
        if shutil.which(tool) is None:
            print(f"bench/backup.py needs {tool} (apt-get install dcmtk restic)", file=sys.stderr)
            return 2
    count = int(args.gb * 1e9 / INSTANCE_BYTES)
    with tempfile.TemporaryDirectory(prefix="bench-backup-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        password = root / "restic-password"
        password.write_text("bench only\n")
        os.chmod(password, 0o600)
        targets = [
            {"name": "full", "type": "dir", "path": str(root / "full")},
            {"name": "inc", "type": "dir", "path": str(root / "inc")},
            {"name": "restic", "type": "restic", "repository": str(root / "repo"), "password_file": str(password)},
        ]
        port = init_node(root / "node", "BENCH", aets=[{"ae_title": "STORESCU", "host": "127.0.0.1"}], backups=targets)
        config = root / "node" / "node.yaml"
        node = subprocess.Popen(
            [PACSDECK, "node", "run", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        results: dict = {}
        try:
            if not node.stdout.readline().decode().startswith("ready"):
                raise RuntimeError("the node did not start")
            print(f"filling the node with {count} instances ({count * INSTANCE_BYTES / 1e9:.2f} GB) ...", flush=True)
            fill = make_files(root / "gen", count, "BK")
            storescu(port, fill)
            shutil.rmtree(root / "gen")
            pools = root / "node" / "pools"
            data_bytes = sum(f.stat().st_size for f in pools.rglob("*.dcm"))

            full, cp = [], []

            def ours() -> None:
                empty(root / "full")
                full.append(backup(config, "full"))

            def peer() -> None:
                empty(root / "cp")
                cp.append(timed("cp", "-a", str(pools), str(root / "cp" / "pools")) + timed("sync"))

            for r in range(args.repeat):  # interleaved, each going first in turn: the page cache favours neither
                for step in (ours, peer) if r % 2 == 0 else (peer, ours):
                    step()
            empty(root / "cp")
            results["full_dir"] = {"pacsdeck_s": full, "cp_sync_s": cp, "engine_s": list(ENGINE["full"])}

            incremental = []
            new_count = max(1, count // 100)
            empty(root / "inc")
            backup(config, "inc")
            for r in range(args.repeat):
                extra = make_files(root / f"new{r}", new_count, f"N{r}")
                storescu(port, extra)
                shutil.rmtree(root / f"new{r}")
                incremental.append(backup(config, "inc"))
            results["incremental_1pct"] = {
                "pacsdeck_s": incremental,
                "engine_s": ENGINE["inc"][1:],  # the first one is the full backup it follows
                "new_instances": new_count,
            }

            restic_ours, theirs = [], []
            for _ in range(args.repeat):
                empty(root / "repo")
                restic_ours.append(backup(config, "restic"))
                empty(root / "repo")
                timed("restic", "--repo", str(root / "repo"), "--password-file", str(password), "init")
                theirs.append(
                    timed(
                        "restic",
                        "--repo",
                        str(root / "repo"),
                        "--password-file",
                        str(password),
                        "backup",
                        "pools",
                        cwd=root / "node",
                    )
                )
            results["restic"] = {"pacsdeck_s": restic_ours, "restic_by_hand_s": theirs}

            alone, during = [], []
            for r in range(args.repeat):
                batch = make_files(root / f"in{r}", args.ingest, f"I{r}")
                alone.append(storescu(port, batch[: args.ingest // 2]))
                empty(root / "full")
                bg = subprocess.Popen(
                    [PACSDECK, "node", "backup", "run", "--config", str(config), "--target", "full"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                during.append(storescu(port, batch[args.ingest // 2 :]))
                bg.wait(timeout=7200)
                shutil.rmtree(root / f"in{r}")
            results["ingest"] = {"alone_s": alone, "during_backup_s": during, "instances": args.ingest // 2}
            facts = {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "fsync_ms": round(fsync_ms(root), 3),
                "data_bytes": data_bytes,
                "instances": count,
            }
        finally:
            node.terminate()
            node.wait(timeout=60)

    gb = data_bytes / 1e9
    f, c = median(results["full_dir"]["pacsdeck_s"]), median(results["full_dir"]["cp_sync_s"])
    i = median(results["incremental_1pct"]["pacsdeck_s"])
    fe, ie = median(results["full_dir"]["engine_s"]), median(results["incremental_1pct"]["engine_s"])
    ro, rh = median(results["restic"]["pacsdeck_s"]), median(results["restic"]["restic_by_hand_s"])
    ia, idb = median(results["ingest"]["alone_s"]), median(results["ingest"]["during_backup_s"])
    summary = {
        "full_rate_vs_cp": round(c / f, 3),
        "incremental_vs_full": round(i / f, 3),
        "incremental_vs_full_engine": round(ie / fe, 3),
        "full_rate_vs_cp_engine": round(c / fe, 3),
        "restic_vs_by_hand": round(rh / ro, 3),
        "ingest_during_vs_alone": round(ia / idb, 3),
    }
    print(f"machine: {facts['cores']} cores, fsync {facts['fsync_ms']} ms; {gb:.2f} GB in {count} instances")
    print(
        f"  full dir backup   {f:7.1f} s ({gb / f * 1000:.0f} MB/s)  cp -a + sync {c:7.1f} s"
        f"  -> {summary['full_rate_vs_cp']:.2f}x cp's rate"
    )
    print(f"  incremental (1 %) {i:7.1f} s  -> {summary['incremental_vs_full']:.1%} of the full backup's time")
    print(
        f"  without the CLI's start (the backups' own time): full {fe:.1f} s ({summary['full_rate_vs_cp_engine']:.2f}x"
        f" cp's rate), incremental {ie:.2f} s ({summary['incremental_vs_full_engine']:.1%} of the full)"
    )
    print(
        f"  restic via pacsdeck {ro:5.1f} s  restic backup by hand {rh:5.1f} s  -> {summary['restic_vs_by_hand']:.2f}x"
    )
    print(
        f"  ingest during a backup at {summary['ingest_during_vs_alone']:.2f}x its rate alone"
        f" ({ia:.1f} s vs {idb:.1f} s)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": facts, "runs": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
