"""The backups of every target of a node, complete and incomplete, with their last verification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import restic
from .layout import PARTIAL, BackupError, read_manifest
from .verify import last_verification


@dataclass(frozen=True)
class BackupInfo:
    id: str
    target: str
    kind: str
    state: str  # complete or incomplete
    folder: Path
    started_at: float | None = None
    finished_at: float | None = None
    instances: int | None = None
    bytes: int | None = None
    copied: int | None = None
    linked: int | None = None
    reason: str | None = None  # why it is incomplete
    verification: dict | None = None


def dir_backups(target) -> list[BackupInfo]:
    root = Path(target.path)
    out: list[BackupInfo] = []
    if not root.is_dir():
        return out
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        bid = folder.name.removesuffix(PARTIAL)
        if folder.name.endswith(PARTIAL):
            out.append(
                BackupInfo(bid, target.name, "dir", "incomplete", folder, reason="it did not finish (killed or failed)")
            )
            continue
        try:
            m = read_manifest(folder)
        except BackupError as err:
            out.append(BackupInfo(bid, target.name, "dir", "incomplete", folder, reason=str(err)))
            continue
        out.append(
            BackupInfo(
                m.id,
                target.name,
                "dir",
                "complete",
                folder,
                m.started_at,
                m.finished_at,
                m.instances,
                m.bytes,
                m.copied,
                m.linked,
                verification=last_verification(folder),
            )
        )
    return sorted(out, key=lambda b: (b.finished_at or 0, b.id))


def restic_backups(config, target) -> list[BackupInfo]:
    """From the node's record of what it put in the repository (the repository itself is read by verify)."""
    out = []
    for bid, entry in restic.read_catalog(config, target).items():
        m = entry.get("manifest") or {}
        out.append(
            BackupInfo(
                bid,
                target.name,
                "restic",
                "complete",
                config.node_dir,
                m.get("started_at"),
                m.get("finished_at"),
                m.get("instances"),
                m.get("bytes"),
                entry.get("data_added"),
                None,
                verification=entry.get("verification"),
            )
        )
    return sorted(out, key=lambda b: (b.finished_at or 0, b.id))


def all_backups(config) -> list[BackupInfo]:
    out: list[BackupInfo] = []
    for target in config.backups:
        out += dir_backups(target) if target.kind == "dir" else restic_backups(config, target)
    return out


def find(config, backup_id: str) -> BackupInfo:
    for b in all_backups(config):
        if b.id == backup_id:
            return b
    raise BackupError(f"no backup {backup_id!r}; backups.list shows them")
