"""Chosen studies from a backup back into a running node, through its one ingest path: each instance parsed
and stored as a C-STORE would be, durable before it counts; one already there is kept once."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from storage.config.limits import LimitsConfig
from storage.pools.committer import GroupCommitter
from storage.pools.ingest import Ingestor, NotStorable
from storage.pools.pool import dataset_offset

from .layout import BackupError, indexed_instances, read_entries, read_manifest, sha256_file


@dataclass(frozen=True)
class Reingested:
    backup: str
    studies: int
    stored: int
    already_there: int
    failed: tuple[str, ...]  # "SOP UID: why"


def reingest_studies(node, folder: Path, study_uids: list[str]) -> Reingested:
    """`node`: the storage Node (config, index, pools, placement) of the node to restore into."""
    manifest = read_manifest(folder)
    wanted = set(study_uids)
    rows = [r for r in indexed_instances(folder) if r[1] in wanted]
    found = {r[1] for r in rows}
    missing = [uid for uid in study_uids if uid not in found]
    if missing:
        raise BackupError(f"{manifest.id} holds no study {', '.join(missing)}")
    entries = {e.sop_uid: e for e in read_entries(folder)}
    limits = node.config.limits or LimitsConfig()
    committer = GroupCommitter(
        node.index, node.config.index.with_suffix(".writelock"), max_attempts=node.config.queue.max_attempts
    )
    # `keep` whatever the node's policy: a restore brings back what is missing and never replaces what is there.
    ingestor = Ingestor(
        node.pools,
        node.index,
        committer,
        "keep",
        placement=node.placement,
        max_instance_size=limits.max_instance_size,
        max_sequence_depth=limits.max_sequence_depth,
    )
    stored = duplicates = 0
    failed: list[str] = []
    try:
        for sop_uid, _study, sop_class, syntax in rows:
            entry = entries.get(sop_uid)
            path = folder / entry.file if entry else None
            if path is None or not path.exists() or sha256_file(path) != entry.sha256:
                failed.append(f"{sop_uid}: its file in the backup is missing or damaged")
                continue
            data = path.read_bytes()
            offset = dataset_offset(path)
            if offset is None:
                failed.append(f"{sop_uid}: not a Part 10 file the node wrote")
                continue
            try:
                result = ingestor.store(
                    data[:offset],
                    BytesIO(data[offset:]),
                    sop_class_uid=sop_class,
                    sop_instance_uid=sop_uid,
                    transfer_syntax=syntax,
                    calling_ae="RESTORE",
                )
            except NotStorable as err:
                failed.append(f"{sop_uid}: {err.reason}")
                continue
            duplicates += result.duplicate
            stored += not result.duplicate
    finally:
        committer.stop()
    return Reingested(manifest.id, len(found), stored, duplicates, tuple(failed))
