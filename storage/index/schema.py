"""The index schema: its tables, triggers and views, its version, and the steps that upgrade an older index."""

from __future__ import annotations

import sqlite3

from . import dicomtime

SCHEMA_VERSION = 5  # 2: pool_usage (kept by triggers) and jobs; 3: the job queue (retries, forwards) and routes;
# 4: aets.tls (associations to that AE use DICOM TLS); 5: patient attributes per study, date/time keys

TABLES = """
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
AFTER_UPGRADE = """
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

# Steps that bring an existing index up to SCHEMA_VERSION, by the version they lead to; upgrade() runs them.
_STEPS = {
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


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring an index up to SCHEMA_VERSION inside the caller's transaction (BEGIN IMMEDIATE, so a
    second process waits for the first and then finds nothing left to do)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
    for step in range(version + 1, SCHEMA_VERSION + 1):
        upgrade_step = _STEPS.get(step, "")
        if callable(upgrade_step):
            upgrade_step(conn)
            continue
        for statement in upgrade_step.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
