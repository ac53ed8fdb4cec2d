"""Re-read a backup against its manifest: every file's size and SHA-256, the instance list and index snapshot."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .layout import INDEX, INSTANCES, VERIFIED, BackupError, read_entries, read_manifest, sha256_file, write_json_atomic

MAX_PROBLEMS = 100  # listed; the counts are always complete


@dataclass
class Verification:
    backup: str
    ok: bool
    checked: int = 0
    bytes: int = 0
    missing: int = 0
    damaged: int = 0
    problems: list[str] = field(default_factory=list)
    at: float = 0.0
    seconds: float = 0.0
    restore_test: dict | None = None

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def verify(folder: Path) -> Verification:
    """Every file of the backup read back and hashed; a missing or changed file is a problem named by path."""
    started = time.monotonic()
    manifest = read_manifest(folder)
    result = Verification(backup=manifest.id, ok=True, at=time.time())
    for name, expected in ((INSTANCES, manifest.instances_sha256), (INDEX, manifest.index_sha256)):
        try:
            actual = sha256_file(folder / name)
        except FileNotFoundError:
            result.note(f"{name}: missing")
            result.missing += 1
            continue
        if actual != expected:
            result.note(f"{name}: sha256 {actual} differs from the manifest's {expected}")
            result.damaged += 1
    if (folder / INSTANCES).exists():
        for entry in read_entries(folder):
            path = folder / entry.file
            try:
                size = path.stat().st_size
                sha = sha256_file(path)
            except FileNotFoundError:
                result.missing += 1
                result.note(f"{entry.file}: missing (instance {entry.sop_uid})")
                continue
            result.checked += 1
            result.bytes += size
            if size != entry.size or sha != entry.sha256:
                result.damaged += 1
                result.note(
                    f"{entry.file}: sha256 {sha} ({size} bytes) differs from the manifest (instance {entry.sop_uid})"
                )
    if result.checked != manifest.instances and not result.missing:
        result.note(f"the manifest says {manifest.instances} instances, {INSTANCES} lists {result.checked}")
        result.damaged += 1
    result.ok = not (result.missing or result.damaged)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def record(folder: Path, result: Verification) -> None:
    """Keep the last verification beside the backup (never inside the manifest, which stays as written)."""
    try:
        write_json_atomic(folder / VERIFIED, asdict(result))
    except OSError as err:
        raise BackupError(f"{folder.name}: cannot record the verification: {err.strerror}") from None


def last_verification(folder: Path) -> dict | None:
    try:
        return json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
