"""The restore test of backups.verify: restore into a scratch folder, start a node there on a free loopback
port, and ask it what a client would (C-FIND counts, C-GET bytes) against what the backup holds."""

from __future__ import annotations

import hashlib
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from storage.backups.layout import BackupError, indexed_instances, read_entries
from storage.backups.restore import restore_node
from storage.dimse.probe import ProbeFailed, count_studies, get_study
from storage.pools.pool import dataset_offset

START_TIMEOUT = 120.0  # the restored node's recovery reads its index; a big one takes a while
SAMPLE_STUDIES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset_sha(path: Path) -> str | None:
    offset = dataset_offset(path)
    if offset is None:
        return None
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read()).hexdigest()


def _wait_ready(proc: subprocess.Popen, deadline: float) -> None:
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise BackupError("restore test: the restored node did not start")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = proc.stdout.read1(256)
            if not chunk:
                raise BackupError("restore test: the restored node exited while starting")
            line += chunk
    if not line.startswith(b"ready"):
        raise BackupError(f"restore test: the restored node said {line[:200]!r}")


def restore_test(node_dir: Path, folder: Path, sample: int = SAMPLE_STUDIES) -> dict:
    """Restore, start, query; the figures compared. BackupError when the restored node cannot be asked."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="restore-test-", dir=node_dir) as tmp:
        into = Path(tmp) / "node"
        restored = restore_node(folder, into)
        config = yaml.safe_load((into / "node.yaml").read_text())
        port = _free_port()
        # A private node: loopback only, any caller, no limit on answers, and nothing it would do on its own.
        config.update(
            {"port": port, "bind": "127.0.0.1", "open_mode": True, "workers": 1, "query_limit": 0, "backups": []}
        )
        config.pop("metrics_port", None)
        config.pop("migration", None)
        (into / "node.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        rows = indexed_instances(into)
        studies = sorted({r[1] for r in rows})
        entries = {e.sop_uid: e for e in read_entries(folder)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacsdeck.cli", "node", "run", "--config", str(into / "node.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_ready(proc, time.monotonic() + START_TIMEOUT)
            called = config.get("ae_title", "PACSDECK")
            found = count_studies("127.0.0.1", port, called)
            picked = random.Random(0).sample(studies, min(sample, len(studies)))
            compared = mismatched = 0
            problems: list[str] = []
            for study in picked:
                mine = [r for r in rows if r[1] == study]
                got = get_study("127.0.0.1", port, called, study, [(r[2], r[3]) for r in mine])
                for sop, _study, _cls, _ts in mine:
                    expected = _dataset_sha(folder / entries[sop].file)
                    compared += 1
                    if got.get(sop) != expected:
                        mismatched += 1
                        problems.append(f"C-GET of {sop}: " + ("not sent" if sop not in got else "other bytes"))
        except ProbeFailed as err:
            raise BackupError(f"restore test: {err}") from None
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    ok = found == len(studies) and mismatched == 0
    if found != len(studies):
        problems.insert(0, f"C-FIND found {found} studies; the backup holds {len(studies)}")
    return {
        "ok": ok,
        "instances": restored.instances,
        "studies": len(studies),
        "studies_found": found,
        "instances_compared": compared,
        "instances_mismatched": mismatched,
        "problems": problems[:100],
        "seconds": round(time.monotonic() - started, 3),
    }
