"""Startup recovery and `node reindex`: make the index agree with the files in the pools."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

from storage.index.database import STUDY_COLUMNS, Index, InstanceRecord, study_row

from .ingest import NotStorable, build_record, parse_part10
from .pool import Pool

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    temp_files_removed: int = 0
    orphans_indexed: int = 0
    leftovers_removed: int = 0  # un-indexed second copies of an indexed instance (crash mid-overwrite)
    unreadable: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # rows whose file is gone

    def as_dict(self) -> dict:
        return {
            "temp_files_removed": self.temp_files_removed,
            "orphans_indexed": self.orphans_indexed,
            "leftovers_removed": self.leftovers_removed,
            "unreadable": self.unreadable,
            "missing_files": self.missing_files,
        }


def record_from_file(pool: Pool, rel: str, checksum: bool = True) -> InstanceRecord:
    """Rebuild an index row from a stored file alone (same values ingest wrote)."""
    path = pool.file(rel)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        ds = parse_part10(fh, st.st_size)
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1 << 20), b"") if checksum else ():
            digest.update(chunk)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    source = str(meta.get("SourceApplicationEntityTitle", "")).strip() if meta is not None else ""
    rec = build_record(ds, transfer_syntax=ts, source_ae=source)
    rec.instance.update(
        pool=pool.name,
        path=rel,
        size=st.st_size,
        sha256=digest.hexdigest(),
        received_at=st.st_mtime,
        last_access=st.st_mtime,
    )
    return rec


def recover(pools: list[Pool], index: Index) -> RecoveryReport:
    """Remove temp files, index complete orphans, drop un-indexed second copies, report missing files."""
    report = RecoveryReport()
    known = index.locations()
    on_disk = set()
    orphans: list[InstanceRecord] = []
    for pool in pools:
        instances, temps = pool.scan()
        try:
            report.temp_files_removed += pool.remove_temp_files(temps)
        except OSError as err:  # a read-only or failing pool must not keep the others from serving
            log.error("pool %s: cannot remove temp files: %s", pool.name, err)
        for rel in instances:
            on_disk.add((pool.name, rel))
            if (pool.name, rel) in known:
                continue
            try:
                rec = record_from_file(pool, rel)
            except (NotStorable, OSError) as err:
                log.error("pool %s: %s cannot be read (%s); left in place", pool.name, rel, err)
                report.unreadable.append(f"{pool.name}/{rel}")
                continue
            row = index.instance(rec.sop_uid)
            if row is not None:
                # Written but never committed while an indexed copy exists (a crash mid-overwrite,
                # mid-migration): an extra. Deleted only if the indexed copy is really there, so
                # this is never the last copy.
                if _intact(pools, row):
                    os.unlink(pool.file(rel))
                    report.leftovers_removed += 1
                else:
                    log.error(
                        "pool %s: %s is an un-indexed copy of %s whose indexed copy is missing or the wrong size; kept",
                        pool.name,
                        rel,
                        rec.sop_uid,
                    )
                    report.unreadable.append(f"{pool.name}/{rel}")
            else:
                orphans.append(rec)
    if orphans:
        orphans.sort(key=lambda r: r.instance["received_at"])
        with index.transaction() as conn:
            index.put_instances(conn, orphans)
        report.orphans_indexed = len(orphans)
    report.missing_files = [f"{p}/{r}" for p, r in sorted(known - on_disk)]
    for item in report.missing_files:
        log.error("index row points at a missing file: %s", item)
    return report


def _intact(pools: list[Pool], row) -> bool:
    pool = next((p for p in pools if p.name == row["pool"]), None)
    try:
        return pool is not None and os.stat(pool.file(row["path"])).st_size == row["size"]
    except OSError:
        return False


def reread_studies(pools: list[Pool], index: Index, batch: int = 500) -> int:
    """Give each study queued in study_reread (by the index upgrade to schema 5) its own patient
    attributes, read from its most recently received instance that can be read. Returns how many."""
    conn = index.connection()
    done = 0
    by_name = {p.name: p for p in pools}
    while True:
        queued = [r[0] for r in conn.execute("SELECT study_uid FROM study_reread LIMIT ?", (batch,))]
        if not queued:
            return done
        updates = []
        for study_uid in queued:
            rows = conn.execute(
                "SELECT pool, path FROM instances WHERE study_uid = ? ORDER BY received_at DESC, sop_uid DESC",
                (study_uid,),
            ).fetchall()
            for row in rows:
                pool = by_name.get(row[0])
                if pool is None:
                    continue
                try:
                    rec = record_from_file(pool, row[1], checksum=False)
                except (NotStorable, OSError):
                    continue
                updates.append((*study_row(rec)[len(STUDY_COLUMNS) :], study_uid))
                break
            else:
                log.warning(
                    "study %s: no readable file to take its patient attributes from; kept as they were", study_uid
                )
        with index.transaction() as tx:
            tx.executemany(
                "UPDATE studies SET patient_name = ?, birth_date = ?, sex = ?, issuer = ?, date_key = ?,"
                " time_key = ?, birth_date_key = ? WHERE study_uid = ?",
                updates,
            )
            tx.executemany("DELETE FROM study_reread WHERE study_uid = ?", [(uid,) for uid in queued])
        done += len(updates)


def reindex(pools: list[Pool], index: Index) -> dict:
    """Rebuild the instance rows from the pools alone, in one transaction."""
    best: dict[str, InstanceRecord] = {}
    unreadable, duplicates = [], []
    for pool in pools:
        instances, temps = pool.scan()
        pool.remove_temp_files(temps)
        for rel in instances:
            try:
                rec = record_from_file(pool, rel)
            except (NotStorable, OSError) as err:
                unreadable.append(f"{pool.name}/{rel}: {err}")
                continue
            prev = best.get(rec.sop_uid)
            if prev is not None:
                duplicates.append(rec.sop_uid)
                if prev.instance["received_at"] >= rec.instance["received_at"]:
                    continue
            best[rec.sop_uid] = rec
    records = sorted(best.values(), key=lambda r: (r.instance["received_at"], r.sop_uid))
    with index.transaction() as conn:
        index.clear_instances(conn)
        index.put_instances(conn, records)
    return {"instances": len(records), "unreadable": unreadable, "duplicate_copies": duplicates}
