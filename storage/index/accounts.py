"""Agent accounts in the node's index: users (role, SSH keys) and the audit log."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable

from .database import Index

# password_hash: set only for users made before passwords were dropped; kept as it was, never read as one.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL,
    password_hash  TEXT,
    ssh_keys       TEXT NOT NULL DEFAULT '[]',
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    user     TEXT NOT NULL,
    method   TEXT NOT NULL,
    params   TEXT NOT NULL DEFAULT '{}',
    result   TEXT NOT NULL,
    message  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


class Accounts:
    """Users and audit rows, stored next to the index's tables in the same SQLite file."""

    def __init__(self, index: Index):
        self.index = index
        # Outside any transaction: executescript commits first, and IF NOT EXISTS makes it idempotent.
        index.connection().executescript(_SCHEMA)

    # --- users ---------------------------------------------------------------------------------

    def users(self) -> list[dict]:
        rows = self.index.connection().execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_user_dict(r) for r in rows]

    def user(self, name: str, conn: sqlite3.Connection | None = None) -> dict | None:
        conn = conn or self.index.connection()
        row = conn.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        return _user_dict(row) if row else None

    def role(self, name: str) -> str | None:
        row = self.index.connection().execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def add_user(conn: sqlite3.Connection, name: str, role: str, ssh_keys: Iterable[str]) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO users (name, role, ssh_keys, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (name, role, json.dumps(list(ssh_keys)), now, now),
        )

    @staticmethod
    def update_user(
        conn: sqlite3.Connection,
        name: str,
        *,
        role: str | None = None,
        ssh_keys: Iterable[str] | None = None,
    ) -> None:
        sets, values = ["updated_at=?"], [time.time()]
        if role is not None:
            sets.append("role=?")
            values.append(role)
        if ssh_keys is not None:
            sets.append("ssh_keys=?")
            values.append(json.dumps(list(ssh_keys)))
        conn.execute(f"UPDATE users SET {', '.join(sets)} WHERE name=?", (*values, name))

    @staticmethod
    def remove_user(conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("DELETE FROM users WHERE name=?", (name,)).rowcount > 0

    @staticmethod
    def admin_count(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT count(*) FROM users WHERE role='admin'").fetchone()[0]

    # --- audit ---------------------------------------------------------------------------------

    def append_audit(self, user: str, method: str, params: dict, result: str, message: str = "") -> None:
        """One row per audited call; `params` must already have its secrets redacted."""
        with self.index.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (at, user, method, params, result, message) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), user, method, json.dumps(params, sort_keys=True), result, message),
            )

    def recent_audit(self, limit: int = 100, user: str | None = None, method: str | None = None) -> list[dict]:
        where, values = [], []
        if user is not None:
            where.append("user=?")
            values.append(user)
        if method is not None:
            where.append("method=?")
            values.append(method)
        sql = "SELECT * FROM audit" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ?"
        rows = self.index.connection().execute(sql, (*values, limit)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["params"] = json.loads(d["params"])
            out.append(d)
        return out


def _user_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["ssh_keys"] = json.loads(d["ssh_keys"])
    return d
