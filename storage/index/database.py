"""The SQLite index: connections and transactions, and the rows of studies, series, instances, AEs and associations."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import dicomtime, schema
from .schema import SCHEMA_VERSION

# Columns of an instance row as ingest and reindex produce it, in insert order.
INSTANCE_COLUMNS = (
    "sop_uid",
    "series_uid",
    "study_uid",
    "sop_class_uid",
    "instance_number",
    "transfer_syntax",
    "pool",
    "path",
    "size",
    "sha256",
    "received_at",
    "last_access",
    "source_ae",
)
PATIENT_COLUMNS = ("patient_id", "patient_name", "birth_date", "sex", "issuer")  # the last may be left out
STUDY_COLUMNS = (
    "study_uid",
    "patient_id",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician",
    "specific_charset",
)
SERIES_COLUMNS = ("series_uid", "study_uid", "modality", "series_number", "series_description", "body_part")


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    """INSERT that updates every non-key column on conflict: the newest instance describes its parents."""
    key, rest = columns[0], columns[1:]
    updates = ", ".join(f"{c}=excluded.{c}" for c in rest)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {updates}"


# A study row: its own columns, its patient's as its newest instance had them, and the keys.
_STUDY_ROW = STUDY_COLUMNS + ("patient_name", "birth_date", "sex", "issuer", "date_key", "time_key", "birth_date_key")
_UPSERT_STUDY = _upsert("studies", _STUDY_ROW)
_UPSERT_SERIES = _upsert("series", SERIES_COLUMNS)
_UPSERT_INSTANCE = _upsert("instances", INSTANCE_COLUMNS)


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index keeps about one stored instance and its parents."""

    patient: tuple  # PATIENT_COLUMNS order (issuer optional): stored with the study
    study: tuple  # STUDY_COLUMNS order
    series: tuple  # SERIES_COLUMNS order
    instance: dict  # INSTANCE_COLUMNS keys

    @property
    def sop_uid(self) -> str:
        return self.instance["sop_uid"]


def study_row(rec: InstanceRecord) -> tuple:
    """The studies row an instance writes (_STUDY_ROW order)."""
    patient = tuple(rec.patient) + ("",) * (len(PATIENT_COLUMNS) - len(rec.patient))
    _, name, birth_date, sex, issuer = patient
    study = dict(zip(STUDY_COLUMNS, rec.study, strict=False))
    return (
        *rec.study,
        name,
        birth_date,
        sex,
        issuer,
        dicomtime.da_key(study["study_date"]),
        dicomtime.tm_key(study["study_time"]),
        dicomtime.da_key(birth_date),
    )


class _IdleConnections:
    """Connections of threads that have ended, for the next threads (one process: not across fork)."""

    SIZE = 8

    def __init__(self):
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> sqlite3.Connection | None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours
                self._conns, self._pid = [], os.getpid()
            return self._conns.pop() if self._conns else None

    def give_back(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a thread ended inside a transaction: nothing of it is kept
            conn.rollback()
        with self._lock:
            if self._pid == os.getpid() and len(self._conns) < self.SIZE:
                self._conns.append(conn)
                return
        conn.close()


class _Lease:
    """One thread's use of a connection; dropped with the thread's locals when the thread ends."""

    def __init__(self, conn: sqlite3.Connection, idle: _IdleConnections):
        self.conn = conn
        self._idle = idle

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def __del__(self) -> None:
        if self.conn is not None:
            try:
                self._idle.give_back(self.conn)
            except sqlite3.Error:
                pass


class Index:
    """One SQLite database in WAL mode; a connection per thread, writes serialised by SQLite."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._idle = _IdleConnections()
        conn = self.connection()
        conn.executescript(schema.TABLES)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: index schema {version} is newer than this pacsdeck ({SCHEMA_VERSION})")
        elif version < SCHEMA_VERSION:
            with self.transaction() as tx:
                schema.upgrade(tx)
        conn.executescript(schema.AFTER_UPGRADE)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection. Each DICOM association runs in a new thread; opening a
        connection and reading the schema cost ~0.5 ms, so a thread's connection goes back to a
        small pool when the thread ends (its _Lease is dropped) and the next thread takes it."""
        lease = getattr(self._local, "lease", None)
        if lease is None:
            conn = self._idle.take()
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk when it returns, so an acknowledged instance survives power loss.
                conn.execute("PRAGMA synchronous=FULL")
            lease = self._local.lease = _Lease(conn, self._idle)
        return lease.conn

    def close(self) -> None:
        lease = getattr(self._local, "lease", None)
        if lease is not None:
            lease.close()
            self._local.lease = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- instances ---------------------------------------------------------------------------

    @staticmethod
    def put_instances(conn: sqlite3.Connection, records: Iterable[InstanceRecord]) -> None:
        """Insert or replace rows inside the caller's transaction."""
        for rec in records:
            conn.execute(_UPSERT_STUDY, study_row(rec))
            conn.execute(_UPSERT_SERIES, rec.series)
            conn.execute(_UPSERT_INSTANCE, tuple(rec.instance[c] for c in INSTANCE_COLUMNS))

    @staticmethod
    def location(conn: sqlite3.Connection, sop_uid: str) -> tuple | None:
        """(pool, path, size) of an indexed instance, read inside the caller's transaction."""
        row = conn.execute("SELECT pool, path, size FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
        return tuple(row) if row is not None else None

    def instance(self, sop_uid: str) -> sqlite3.Row | None:
        return self.connection().execute("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()

    def locations(self) -> set[tuple[str, str]]:
        """Every (pool, path) the index points at."""
        return {(r[0], r[1]) for r in self.connection().execute("SELECT pool, path FROM instances")}

    def counts(self) -> dict[str, int]:
        conn = self.connection()
        out = {}
        for table in ("patients", "studies", "series", "instances"):
            out[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        out["bytes"] = conn.execute("SELECT coalesce(sum(size), 0) FROM instances").fetchone()[0]
        return out

    def clear_instances(self, conn: sqlite3.Connection) -> None:
        for table in ("instances", "series", "studies", "study_reread"):
            conn.execute(f"DELETE FROM {table}")

    # --- registered AEs ------------------------------------------------------------------------

    def aets(self) -> list[dict]:
        rows = self.connection().execute("SELECT * FROM aets ORDER BY ae_title").fetchall()
        return [_aet_dict(r) for r in rows]

    def aet(self, ae_title: str) -> dict | None:
        row = self.connection().execute("SELECT * FROM aets WHERE ae_title=?", (ae_title,)).fetchone()
        return _aet_dict(row) if row else None

    def put_aet(
        self,
        conn: sqlite3.Connection,
        ae_title: str,
        host: str | None,
        port: int | None,
        description: str,
        operations: Iterable[str],
        move_destination: bool,
        tls: bool = False,
    ) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO aets (ae_title, host, port, description, operations, move_destination, tls, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(ae_title) DO UPDATE SET host=excluded.host,"
            " port=excluded.port, description=excluded.description, operations=excluded.operations,"
            " move_destination=excluded.move_destination, tls=excluded.tls, updated_at=excluded.updated_at",
            (
                ae_title,
                host,
                port,
                description,
                json.dumps(list(operations)),
                int(move_destination),
                int(tls),
                now,
                now,
            ),
        )

    def remove_aet(self, conn: sqlite3.Connection, ae_title: str) -> bool:
        return conn.execute("DELETE FROM aets WHERE ae_title=?", (ae_title,)).rowcount > 0

    # --- association log -----------------------------------------------------------------------

    def log_association(self, entry: dict) -> None:
        cols = (
            "started_at",
            "ended_at",
            "calling_ae",
            "called_ae",
            "peer_host",
            "peer_port",
            "result",
            "reason",
            "rejected_contexts",
            "instances",
            "failures",
            "bytes",
        )
        values = [entry.get(c) for c in cols]
        values[cols.index("rejected_contexts")] = json.dumps(entry.get("rejected_contexts") or [])
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO associations ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", values
            )


def _aet_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["operations"] = json.loads(d["operations"])
    d["move_destination"] = bool(d["move_destination"])
    d["tls"] = bool(d.get("tls", 0))
    return d
