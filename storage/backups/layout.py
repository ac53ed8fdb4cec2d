"""One backup on disk: its folder's names, the manifest written last and atomically, the instance list."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from storage.pools.pool import fsync_dir
from storage.uids import uid_digest

FORMAT = 1
MANIFEST = "manifest.json"  # written last: a backup folder without it is incomplete
INSTANCES = "instances.jsonl"  # one line per instance: sop_uid, study_uid, series_uid, file, size, sha256
INDEX = "index.sqlite"  # the snapshot of the node's index (sqlite3's backup API), amended for followed rows
CONFIG = "node.yaml"
FILES = "files"
PARTIAL = ".partial"  # the suffix of a backup being written (or killed while it was)
VERIFIED = "verified.json"  # the last verification of this backup, beside (not in) the manifest


class BackupError(RuntimeError):
    """A backup cannot be taken, read, verified or restored; the message says why and what to do."""


def backup_id(ae_title: str, at: float) -> str:
    """`<AE>-<UTC time>`: sorts by time; the AE title keeps only filesystem-safe characters."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in ae_title.strip()) or "node"
    return f"{safe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(at))}"


def file_name(study_uid: str, sop_uid: str) -> str:
    """Where an instance lives inside a backup: one folder per study, one file per SOP instance (digests of
    validated UIDs only, never the UIDs as given)."""
    study = uid_digest(study_uid)
    return f"{FILES}/{study[:2]}/{study}/{uid_digest(sop_uid)}.dcm"


@dataclass(frozen=True)
class Entry:
    """One instance of a backup, as instances.jsonl holds it."""

    sop_uid: str
    study_uid: str
    series_uid: str
    file: str  # relative to the backup folder
    size: int
    sha256: str


@dataclass
class Manifest:
    id: str
    target: str
    kind: str  # dir or restic
    ae_title: str
    started_at: float
    finished_at: float
    instances: int
    bytes: int
    copied: int = 0  # files copied from the pools
    copied_bytes: int = 0
    linked: int = 0  # files hard-linked from the previous backup (unchanged since)
    followed: int = 0  # rows moved or replaced while the backup ran: taken from where they went
    gone: int = 0  # rows deleted while the backup ran: left out, and out of the index snapshot
    previous: str | None = None  # the backup files were linked from
    instances_sha256: str = ""  # of instances.jsonl
    index_sha256: str = ""  # of index.sqlite
    format: int = FORMAT
    extra: dict = field(default_factory=dict)


def write_json_atomic(path: Path, doc: dict) -> None:
    """tmp, fsync, rename, fsync the folder: the file is either absent or whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_json_atomic(folder / MANIFEST, asdict(manifest))


def read_manifest(folder: Path) -> Manifest:
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{folder.name}: incomplete (no {MANIFEST}): the backup did not finish") from None
    except (OSError, ValueError) as err:
        raise BackupError(f"{folder.name}: {MANIFEST} cannot be read: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{folder.name}: {MANIFEST} is not a pacsdeck backup manifest of format {FORMAT}")
    known = set(Manifest.__dataclass_fields__)
    return Manifest(**{k: v for k, v in doc.items() if k in known})


def indexed_instances(folder: Path) -> list[tuple[str, str, str, str]]:
    """(sop_uid, study_uid, sop_class_uid, transfer_syntax) of every instance in a backup's index snapshot."""
    conn = sqlite3.connect(f"file:{folder / INDEX}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT sop_uid, study_uid, sop_class_uid, transfer_syntax FROM instances ORDER BY study_uid, sop_uid"
        ).fetchall()
    finally:
        conn.close()


def read_entries(folder: Path) -> Iterator[Entry]:
    with open(folder / INSTANCES, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Entry(**json.loads(line))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
