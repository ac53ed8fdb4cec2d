"""Roles and the methods each one may call: viewer reads, operator also acts, admin also administers."""

from __future__ import annotations

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# Named here for every method in DESIGN.md, implemented or not, so a new method module cannot
# forget its role: anything not listed is read-only and open to viewers.
OPERATOR_METHODS = frozenset(
    {
        "aets.echo",
        "diagnose.run",  # it opens associations to every registered AE, like aets.echo
        "queue.retry",
        "queue.cancel",
        "studies.send",  # it sends a study to another AE, like a C-MOVE the operator starts
        "backups.run",
        "backups.verify",  # it reads every file of a backup: heavy I/O, and it records the result
        "pools.migrate",
    }
)
ADMIN_METHODS = frozenset(
    {
        "aets.add",
        "aets.update",
        "aets.remove",
        "backups.restore",
    }
)
# Whole nouns that only admins see, reads included: accounts, routing and software updates.
ADMIN_NOUNS = ("users.", "routes.", "update.")
# Self-description needs no role, so a caller can learn who it is and why it is refused.
OPEN_METHODS = frozenset({"rpc.discover", "rpc.whoami"})


def required_role(method: str) -> str | None:
    if method in OPEN_METHODS:
        return None
    if method in ADMIN_METHODS or method.startswith(ADMIN_NOUNS):
        return ADMIN
    if method in OPERATOR_METHODS:
        return OPERATOR
    return VIEWER


def allows(role: str | None, method: str) -> bool:
    needed = required_role(method)
    if needed is None:
        return True
    return role in _RANK and _RANK[role] >= _RANK[needed]
