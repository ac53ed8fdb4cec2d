"""Rebuild a whole node folder from one complete backup: node.yaml (pools moved inside the folder), the index
snapshot, and every file back at its pool path, each checked against the manifest's SHA-256 as it is copied."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml

from storage.pools.pool import ensure_dir, fsync_dir

from .layout import CONFIG, INDEX, BackupError, read_entries, read_manifest
from .take import CHUNK


@dataclass(frozen=True)
class Restored:
    backup: str
    into: Path
    config: Path
    instances: int
    bytes: int


def _plan_config(backup: Path, into: Path) -> tuple[dict, dict[str, Path]]:
    """The backup's node.yaml with each pool in `into/pools/<name>` and the index in `into`: the restored node
    never writes into the original's folders. Returns the document and pool name -> folder."""
    try:
        doc = yaml.safe_load((backup / CONFIG).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BackupError(f"{backup.name}: {CONFIG} cannot be read: {err}") from None
    if not isinstance(doc, dict):
        raise BackupError(f"{backup.name}: {CONFIG} is not a mapping")
    pools: dict[str, Path] = {}
    for pool in doc.get("pools") or []:
        if isinstance(pool, dict) and isinstance(pool.get("name"), str):
            pool["path"] = f"pools/{pool['name']}"
            pools[pool["name"]] = into / pool["path"]
    doc["index"] = INDEX
    return doc, pools


def _copy_checked(src: Path, dest: Path, size: int, sha256: str) -> None:
    h = hashlib.sha256()
    n = 0
    try:
        fin = open(src, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise BackupError(
            f"{src}: missing from the backup: backups.verify lists every missing file; restore another backup"
        ) from None
    with fin, open(dest, "wb") as fout:
        while block := fin.read(CHUNK):
            h.update(block)
            fout.write(block)
            n += len(block)
    if n != size or h.hexdigest() != sha256:
        raise BackupError(
            f"{src}: does not match the manifest (sha256 {h.hexdigest()}, {n} bytes): the backup is damaged; "
            "backups.verify lists every damaged file; restore another backup"
        )


def restore_node(backup: Path, into: Path, *, dry_run: bool = False) -> Restored:
    """Restore into an empty (or new) folder. Refuses an incomplete backup and a folder that holds anything."""
    manifest = read_manifest(backup)  # raises for an incomplete backup
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise BackupError(f"{into}: not empty; restore into a new or empty folder (nothing there is overwritten)")
    doc, pools = _plan_config(backup, into)
    entries = {e.sop_uid: e for e in read_entries(backup)}
    snapshot = sqlite3.connect(f"file:{backup / INDEX}?mode=ro", uri=True)
    try:
        rows = snapshot.execute("SELECT sop_uid, pool, path FROM instances").fetchall()
    finally:
        snapshot.close()
    missing = [sop for sop, _pool, _path in rows if sop not in entries]
    if missing:
        raise BackupError(f"{backup.name}: {len(missing)} indexed instances have no file in the backup")
    unknown = sorted({pool for _sop, pool, _path in rows if pool not in pools})
    if unknown:
        raise BackupError(f"{backup.name}: instances in pools {', '.join(unknown)} that its node.yaml does not name")
    total = sum(entries[sop].size for sop, _pool, _path in rows)
    if dry_run:
        return Restored(manifest.id, into, into / CONFIG, len(rows), total)

    existed = into.exists()
    try:
        _write(backup, into, manifest, doc, pools, entries, rows)
    except BaseException:
        # Nothing half-written is left behind: what this restore created goes (the folder was empty or new).
        if existed:
            for child in into.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(into, ignore_errors=True)
        raise
    return Restored(manifest.id, into, into / CONFIG, len(rows), total)


def _write(backup: Path, into: Path, manifest, doc: dict, pools: dict[str, Path], entries: dict, rows) -> None:
    ensure_dir(into)
    for folder in pools.values():
        ensure_dir(folder)
    made: set[Path] = set()
    for sop, pool, rel in rows:
        entry = entries[sop]
        dest = pools[pool] / rel
        if dest.parent not in made:
            os.makedirs(dest.parent, mode=0o750, exist_ok=True)  # flushed by the sync() below
            made.add(dest.parent)
        _copy_checked(backup / entry.file, dest, entry.size, entry.sha256)
    os.sync()  # the files on disk (one sync, not an fsync each) before the index that points at them
    # The index last: a restore stopped half-way has no index, so no node starts on missing files.
    _copy_checked(backup / INDEX, into / (INDEX + ".tmp"), (backup / INDEX).stat().st_size, manifest.index_sha256)
    os.replace(into / (INDEX + ".tmp"), into / INDEX)
    config = into / CONFIG
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with open(config, "rb+") as f:
        os.fsync(f.fileno())
    os.sync()
    fsync_dir(into.parent)
