"""The SQLite index: patients, studies, series, instances, registered AEs and the association log."""

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

from . import dicomtime

SCHEMA_VERSION = 5  # 2: pool_usage (kept by triggers) and jobs; 3: the job queue (retries, forwards) and routes;
# 4: aets.tls (associations to that AE use DICOM TLS); 5: patient attributes per study, date/time keys

_SCHEMA = """
-- Patient attributes live with each study, as its instances had them (PS3.4 C.2.2.2: a study
-- answers with its own patient; a corrected name or an anonymised study never renames another).
-- The `patients` view (created after upgrades) gives each non-empty PatientID + Issuer the
-- attributes of its most recent study. *_key columns hold dates and times as values (dicomtime.py).
CREATE TABLE IF NOT EXISTS studies (
    study_uid           TEXT PRIMARY KEY,
    patient_id          TEXT NOT NULL,
    study_date          TEXT NOT NULL DEFAULT '',
    study_time          TEXT NOT NULL DEFAULT '',
    accession_number    TEXT NOT NULL DEFAULT '',
    study_id            TEXT NOT NULL DEFAULT '',
    study_description   TEXT NOT NULL DEFAULT '',
    referring_physician TEXT NOT NULL DEFAULT '',
    specific_charset    TEXT NOT NULL DEFAULT '',
    patient_name        TEXT NOT NULL DEFAULT '',
    birth_date          TEXT NOT NULL DEFAULT '',
    sex                 TEXT NOT NULL DEFAULT '',
    issuer              TEXT NOT NULL DEFAULT '',
    date_key            TEXT,
    time_key            INTEGER,
    birth_date_key      TEXT
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id);
CREATE INDEX IF NOT EXISTS studies_date ON studies(study_date);
-- C-FIND: exact and prefix-wildcard (GLOB 'Doe*') matching on these keys without a scan
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession_number);
-- Studies whose patient attributes an upgrade could not take from the old rows: re-read from a
-- file of each at the next start (recovery.reread_studies).
CREATE TABLE IF NOT EXISTS study_reread (study_uid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS series (
    series_uid          TEXT PRIMARY KEY,
    study_uid           TEXT NOT NULL,
    modality            TEXT NOT NULL DEFAULT '',
    series_number       TEXT NOT NULL DEFAULT '',
    series_description  TEXT NOT NULL DEFAULT '',
    body_part           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid          TEXT PRIMARY KEY,
    series_uid       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    instance_number  TEXT NOT NULL DEFAULT '',
    transfer_syntax  TEXT NOT NULL,
    pool             TEXT NOT NULL,
    path             TEXT NOT NULL,
    size             INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    received_at      REAL NOT NULL,
    last_access      REAL NOT NULL,
    source_ae        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE UNIQUE INDEX IF NOT EXISTS instances_location ON instances(pool, path);
CREATE TABLE IF NOT EXISTS aets (
    ae_title          TEXT PRIMARY KEY,
    host              TEXT,
    port              INTEGER,
    description       TEXT NOT NULL DEFAULT '',
    operations        TEXT NOT NULL,
    move_destination  INTEGER NOT NULL DEFAULT 0,
    tls               INTEGER NOT NULL DEFAULT 0,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS associations (
    id                 INTEGER PRIMARY KEY,
    started_at         REAL NOT NULL,
    ended_at           REAL,
    calling_ae         TEXT NOT NULL DEFAULT '',
    called_ae          TEXT NOT NULL DEFAULT '',
    peer_host          TEXT NOT NULL DEFAULT '',
    peer_port          INTEGER,
    result             TEXT NOT NULL,
    reason             TEXT NOT NULL DEFAULT '',
    rejected_contexts  TEXT NOT NULL DEFAULT '[]',
    instances          INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    bytes              INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS associations_started ON associations(started_at);
-- Instances and bytes per pool, kept exact by triggers in the same transaction as the rows, so
-- placement can ask "is there room?" for every instance without summing the instances table.
CREATE TABLE IF NOT EXISTS pool_usage (
    pool       TEXT PRIMARY KEY,
    instances  INTEGER NOT NULL DEFAULT 0,
    bytes      INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS pool_usage_insert AFTER INSERT ON instances BEGIN
    INSERT INTO pool_usage (pool, instances, bytes) VALUES (NEW.pool, 1, NEW.size)
    ON CONFLICT(pool) DO UPDATE SET instances = instances + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS pool_usage_delete AFTER DELETE ON instances BEGIN
    UPDATE pool_usage SET instances = instances - 1, bytes = bytes - OLD.size WHERE pool = OLD.pool;
END;
CREATE TRIGGER IF NOT EXISTS pool_usage_update AFTER UPDATE OF pool, size ON instances
WHEN OLD.pool IS NOT NEW.pool OR OLD.size IS NOT NEW.size BEGIN
    UPDATE pool_usage SET instances = instances - 1, bytes = bytes - OLD.size WHERE pool = OLD.pool;
    INSERT INTO pool_usage (pool, instances, bytes) VALUES (NEW.pool, 1, NEW.size)
    ON CONFLICT(pool) DO UPDATE SET instances = instances + 1, bytes = bytes + excluded.bytes;
END;
-- The job queue: forwards, migrations, verifications (see storage/index/jobs.py, storage/index/queue.py).
-- Columns after updated_at came with schema 3 (added by ALTER TABLE to older indexes).
CREATE TABLE IF NOT EXISTS jobs (
    id                INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL DEFAULT '',
    params            TEXT NOT NULL DEFAULT '{}',
    instances_total   INTEGER NOT NULL DEFAULT 0,
    instances_done    INTEGER NOT NULL DEFAULT 0,
    instances_failed  INTEGER NOT NULL DEFAULT 0,
    bytes_total       INTEGER NOT NULL DEFAULT 0,
    bytes_done        INTEGER NOT NULL DEFAULT 0,
    errors            TEXT NOT NULL DEFAULT '[]',
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL DEFAULT 1,
    next_attempt_at   REAL,
    last_error        TEXT,
    destination       TEXT,
    study_uid         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, kind);
-- The instances of a forward job, each pending until the destination acknowledged it (done).
CREATE TABLE IF NOT EXISTS job_items (
    job_id   INTEGER NOT NULL,
    sop_uid  TEXT NOT NULL,
    state    TEXT NOT NULL DEFAULT 'pending',
    error    TEXT,
    PRIMARY KEY (job_id, sop_uid)
) WITHOUT ROWID;
-- Auto-routing rules; routes_version changes with every edit so each process re-reads them only then.
CREATE TABLE IF NOT EXISTS routes (
    name          TEXT PRIMARY KEY,
    match         TEXT NOT NULL,
    destinations  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS routes_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS routes_insert AFTER INSERT ON routes BEGIN
    INSERT INTO routes_version (id, version) VALUES (1, 1) ON CONFLICT(id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS routes_update AFTER UPDATE ON routes BEGIN
    INSERT INTO routes_version (id, version) VALUES (1, 1) ON CONFLICT(id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS routes_delete AFTER DELETE ON routes BEGIN
    INSERT INTO routes_version (id, version) VALUES (1, 1) ON CONFLICT(id) DO UPDATE SET version = version + 1;
END;
"""

# Indexes on columns that an older index gains only in its upgrade: created after it.
_SCHEMA_AFTER_UPGRADE = """
CREATE INDEX IF NOT EXISTS studies_patient_name ON studies(patient_name);
CREATE INDEX IF NOT EXISTS studies_date_key ON studies(date_key);
CREATE INDEX IF NOT EXISTS studies_patient_key ON studies(patient_id, issuer, date_key, time_key);
CREATE VIEW IF NOT EXISTS patients AS
    SELECT s.patient_id, s.issuer, s.patient_name, s.birth_date, s.sex, s.birth_date_key FROM studies s
    WHERE s.patient_id != '' AND s.study_uid = (
        SELECT t.study_uid FROM studies t WHERE t.patient_id = s.patient_id AND t.issuer = s.issuer
        ORDER BY t.date_key DESC, t.time_key DESC, t.study_uid DESC LIMIT 1);
CREATE INDEX IF NOT EXISTS jobs_forward ON jobs(destination, study_uid) WHERE kind = 'forward';
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(next_attempt_at) WHERE state = 'pending';
"""

# Steps that bring an existing index up to SCHEMA_VERSION; each runs in one transaction.
_UPGRADES = {
    # pool_usage was just created empty: count what the instances table already holds.
    2: "DELETE FROM pool_usage; INSERT INTO pool_usage (pool, instances, bytes) "
    "SELECT pool, count(*), coalesce(sum(size), 0) FROM instances GROUP BY pool",
    3: lambda conn: _upgrade_jobs(conn),
    4: lambda conn: _add_columns(conn, "aets", (("tls", "INTEGER NOT NULL DEFAULT 0"),)),
    5: lambda conn: _upgrade_patients(conn),
}


def _upgrade_patients(conn: sqlite3.Connection) -> None:
    """Patient attributes move onto each study. The old patients table kept one row per PatientID,
    the last instance's: right for a patient with one study, wrong for every other study of the
    same ID (and of the empty ID). Each study takes it now, and every study is queued to be re-read
    from one of its files at the next start; dates and times get their keys."""
    _add_columns(
        conn,
        "studies",
        (
            ("patient_name", "TEXT NOT NULL DEFAULT ''"),
            ("birth_date", "TEXT NOT NULL DEFAULT ''"),
            ("sex", "TEXT NOT NULL DEFAULT ''"),
            ("issuer", "TEXT NOT NULL DEFAULT ''"),
            ("date_key", "TEXT"),
            ("time_key", "INTEGER"),
            ("birth_date_key", "TEXT"),
        ),
    )
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "patients" in tables:
        conn.execute(
            "UPDATE studies SET (patient_name, birth_date, sex) = (SELECT p.patient_name, p.birth_date, p.sex"
            " FROM patients p WHERE p.patient_id = studies.patient_id)"
            " WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = studies.patient_id)"
        )
        conn.execute("DROP TABLE patients")
    rows = conn.execute("SELECT study_uid, study_date, study_time, birth_date FROM studies").fetchall()
    conn.executemany(
        "UPDATE studies SET date_key = ?, time_key = ?, birth_date_key = ? WHERE study_uid = ?",
        [(dicomtime.da_key(r[1]), dicomtime.tm_key(r[2]), dicomtime.da_key(r[3]), r[0]) for r in rows],
    )
    conn.execute("INSERT OR IGNORE INTO study_reread (study_uid) SELECT study_uid FROM studies")


_JOB_COLUMNS_V3 = (
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("max_attempts", "INTEGER NOT NULL DEFAULT 1"),
    ("next_attempt_at", "REAL"),
    ("last_error", "TEXT"),
    ("destination", "TEXT"),
    ("study_uid", "TEXT"),
)


def _add_columns(conn: sqlite3.Connection, table: str, columns) -> None:
    """ALTER TABLE … ADD COLUMN for each column the table lacks (a table made by this version has them)."""
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for name, decl in columns:
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _upgrade_jobs(conn: sqlite3.Connection) -> None:
    """The queue: retry bookkeeping and forward targets on the jobs table (a table created by this
    version's schema already has them). A job left `interrupted` or `running` by an older version
    failed its one attempt: migrations are re-planned by their next run, never resumed."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name, decl in _JOB_COLUMNS_V3:
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    conn.execute("UPDATE jobs SET attempts = 1 WHERE attempts = 0")
    conn.execute(
        "UPDATE jobs SET state = 'failed', last_error = 'interrupted: the process running it stopped'"
        " WHERE state IN ('interrupted', 'running')"
    )


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
        conn.executescript(_SCHEMA)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: index schema {version} is newer than this pacsdeck ({SCHEMA_VERSION})")
        elif version < SCHEMA_VERSION:
            self._upgrade(version)
        conn.executescript(_SCHEMA_AFTER_UPGRADE)

    def _upgrade(self, version: int) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            for step in range(version + 1, SCHEMA_VERSION + 1):
                upgrade = _UPGRADES.get(step, "")
                if callable(upgrade):
                    upgrade(conn)
                    continue
                for statement in upgrade.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")

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
