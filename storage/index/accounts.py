"""Agent accounts in the node's index: users (role, scrypt password hash, SSH keys) and the audit log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable

from .database import Index

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

# scrypt cost: n=2**14, r=8 needs 16 MiB and ~50 ms here: slow for guessing, fine for an admin call.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def hash_password(password: str) -> str:
    """`scrypt$n=..,r=..,p=..$salt$hash` (base64): the parameters travel with the hash so they can grow."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_HASH_BYTES)
    return (
        f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}$"
        f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, params, salt_b64, hash_b64 = stored.split("$")
        cost = dict(item.split("=") for item in params.split(","))
        n, r, p = int(cost["n"]), int(cost["r"]), int(cost["p"])
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=len(expected)
    )
    return hmac.compare_digest(digest, expected)


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
    def add_user(
        conn: sqlite3.Connection, name: str, role: str, password_hash: str | None, ssh_keys: Iterable[str]
    ) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO users (name, role, password_hash, ssh_keys, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, role, password_hash, json.dumps(list(ssh_keys)), now, now),
        )

    @staticmethod
    def update_user(
        conn: sqlite3.Connection,
        name: str,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        clear_password: bool = False,
        ssh_keys: Iterable[str] | None = None,
    ) -> None:
        sets, values = ["updated_at=?"], [time.time()]
        if role is not None:
            sets.append("role=?")
            values.append(role)
        if password_hash is not None or clear_password:
            sets.append("password_hash=?")
            values.append(password_hash)
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
