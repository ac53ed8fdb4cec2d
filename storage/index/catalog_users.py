"""The agent's named queries for users and the audit log: typed results, and refusals as catalog errors."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .accounts import Accounts
from .catalog import Exists, LastAdmin, Missing, Then

# --- users and the audit log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: str
    has_password: bool  # a hash stored before passwords were dropped; nothing checks it, the hash stays in storage
    ssh_keys: tuple[str, ...]  # OpenSSH public key lines
    created_at: float
    updated_at: float


def _user(d: dict) -> User:
    return User(d["name"], d["role"], bool(d["password_hash"]), tuple(d["ssh_keys"]), d["created_at"], d["updated_at"])


def users(accounts: Accounts) -> list[User]:
    return [_user(d) for d in accounts.users()]


def _admin_left_after(accounts: Accounts, conn, current: dict, new_role: str | None) -> bool:
    """Whether an admin remains once `current` stops being one (new_role None: the user is removed)."""
    return current["role"] != "admin" or new_role == "admin" or accounts.admin_count(conn) > 1


def add_user(accounts: Accounts, name: str, role: str, ssh_keys: list[str], then: Then = None) -> User:
    """Exists if the name is taken."""
    with accounts.index.transaction() as conn:
        if accounts.user(name, conn) is not None:
            raise Exists(name)
        accounts.add_user(conn, name, role, ssh_keys)
        if then is not None:
            then()
    return _user(accounts.user(name))


def update_user(
    accounts: Accounts,
    name: str,
    *,
    role: str | None = None,
    ssh_keys: list[str] | None = None,
    then: Then = None,
) -> User:
    """Missing if there is no such user; LastAdmin if it would demote the last admin."""
    with accounts.index.transaction() as conn:
        current = accounts.user(name, conn)
        if current is None:
            raise Missing(name)
        if role is not None and not _admin_left_after(accounts, conn, current, role):
            raise LastAdmin(name)
        accounts.update_user(conn, name, role=role, ssh_keys=ssh_keys)
        if then is not None:
            then()
    return _user(accounts.user(name))


def remove_user(accounts: Accounts, name: str, then: Then = None) -> None:
    """Missing if there is no such user; LastAdmin for the last admin."""
    with accounts.index.transaction() as conn:
        current = accounts.user(name, conn)
        if current is None:
            raise Missing(name)
        if not _admin_left_after(accounts, conn, current, None):
            raise LastAdmin(name)
        accounts.remove_user(conn, name)
        if then is not None:
            then()


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    user: str
    method: str
    params: dict  # as recorded: secrets already redacted
    result: str
    message: str


def recent_audit(
    accounts: Accounts, limit: int, user: str | None = None, method: str | None = None
) -> list[AuditEntry]:
    names = [x.name for x in fields(AuditEntry)]
    return [AuditEntry(**{n: r[n] for n in names}) for r in accounts.recent_audit(limit, user=user, method=method)]
