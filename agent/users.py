"""users.list/add/update/remove: roles, and SSH keys as forced-command lines (nothing logs in with a password)."""

from __future__ import annotations

from storage.index import catalog, catalog_users

from . import authorized_keys
from . import validate as v
from .audit import fingerprint
from .context import find_executable
from .protocol import CONFLICT, NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from .roles import ROLES
from .schema import BOOL, STR, TIME, Arr, Enum, Obj

MAX_KEYS = 32
# Nothing in pacsdeck ever checked a password: the agent is reached over SSH keys or locally. A password
# given here would look like a way in that does not exist, so it is refused rather than stored.
NO_PASSWORDS = "nothing in pacsdeck logs in with a password; users log in with SSH keys (ssh_keys)"


def _role(value, field: str = "role") -> str:
    if value not in ROLES:
        raise v.invalid(field, f"one of {', '.join(ROLES)}")
    return value


def _keys(value, field: str = "ssh_keys") -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise v.invalid(field, "a list of public key lines")
    if len(value) > MAX_KEYS:
        raise v.invalid(field, f"at most {MAX_KEYS} keys")
    keys = [v.ssh_key(k, f"{field}[{i}]") for i, k in enumerate(value)]
    return list(dict.fromkeys(keys))


def _public(user: catalog_users.User) -> dict:
    return {
        "name": user.name,
        "role": user.role,
        "has_password": user.has_password,
        "ssh_keys": [{"type": k.split()[0], "fingerprint": fingerprint(k)} for k in user.ssh_keys],
        "created_at": iso_time(user.created_at),
        "updated_at": iso_time(user.updated_at),
    }


def _sync_keys(ctx, name: str, keys: list[tuple[str, str]]) -> None:
    authorized_keys.sync(ctx.authorized_keys, find_executable() if keys else None, str(ctx.config_path), name, keys)


def _missing(name: str) -> RPCError:
    return RPCError(NOT_FOUND, f"no user {name!r}; users.list shows them", {"field": "name"})


def _last_admin(name: str, field: str, what: str) -> RPCError:
    return RPCError(CONFLICT, f"{name} is the last admin{what}; make another user admin first", {"field": field})


def list_users(ctx, params: dict) -> dict:
    return {"users": [_public(u) for u in catalog_users.users(ctx.require_accounts())]}


def add(ctx, params: dict) -> dict:
    accounts = ctx.require_accounts()
    name = v.user_name(params.get("name"))
    role = _role(params.get("role"))
    keys = _keys(params.get("ssh_keys", []))
    try:
        # The keys file is written inside the transaction: if it cannot be, the user is not created either.
        user = catalog_users.add_user(
            accounts, name, role, [f"{t} {b}" for t, b in keys], then=lambda: _sync_keys(ctx, name, keys)
        )
    except catalog.Exists:
        raise RPCError(CONFLICT, f"user {name!r} exists; use users.update", {"field": "name"}) from None
    return {"user": _public(user)}


def update(ctx, params: dict) -> dict:
    accounts = ctx.require_accounts()
    name = v.user_name(params.get("name"))
    role = _role(params["role"]) if "role" in params else None
    keys = _keys(params["ssh_keys"]) if "ssh_keys" in params else None
    if role is None and keys is None:
        raise v.invalid("params", "nothing to change; give role or ssh_keys")
    try:
        user = catalog_users.update_user(
            accounts,
            name,
            role=role,
            ssh_keys=None if keys is None else [f"{t} {b}" for t, b in keys],
            then=None if keys is None else lambda: _sync_keys(ctx, name, keys),
        )
    except catalog.Missing:
        raise _missing(name) from None
    except catalog.LastAdmin:
        raise _last_admin(name, "role", "") from None
    return {"user": _public(user)}


def remove(ctx, params: dict) -> dict:
    accounts = ctx.require_accounts()
    name = v.user_name(params.get("name"))
    try:
        catalog_users.remove_user(accounts, name, then=lambda: _sync_keys(ctx, name, []))
    except catalog.Missing:
        raise _missing(name) from None
    except catalog.LastAdmin:
        raise _last_admin(name, "name", " and cannot be removed") from None
    return {"removed": name}


USER = Obj(
    {
        "name": STR,
        "role": Enum(*ROLES),
        "has_password": BOOL,
        "ssh_keys": Arr(Obj({"type": STR, "fingerprint": STR})),
        "created_at": TIME,
        "updated_at": TIME,
    }
)

_NAME = Param("string", "user name: lowercase letters, digits, _ . - (max 32)", required=True)
_ROLE = Param("string", "viewer, operator or admin", extra={"enum": list(ROLES)})
_KEYS = Param(
    "array",
    "OpenSSH public key lines (ssh-ed25519, ssh-rsa, ecdsa-sha2-*); each becomes a "
    "forced-command line in authorized_keys",
    extra={"items": {"type": "string"}},
)
METHODS = (
    Method(
        "users.list",
        list_users,
        "Users with role and key fingerprints; has_password only for a user created with one before passwords "
        "were dropped (nothing checks it)",
        result=Obj({"users": Arr(USER)}),
    ),
    Method(
        "users.add",
        add,
        "Create a user; SSH keys are written to authorized_keys",
        {
            "name": _NAME,
            "role": Param("string", "viewer, operator or admin", required=True, extra={"enum": list(ROLES)}),
            "ssh_keys": _KEYS,
        },
        audit=True,
        result=Obj({"user": USER}),
        retired={"password": NO_PASSWORDS},
    ),
    Method(
        "users.update",
        update,
        "Change the role or replace the SSH keys",
        {
            "name": _NAME,
            "role": _ROLE,
            "ssh_keys": _KEYS,
        },
        audit=True,
        result=Obj({"user": USER}),
        retired={"password": NO_PASSWORDS},
    ),
    Method(
        "users.remove",
        remove,
        "Delete a user and its authorized_keys lines (never the last admin)",
        {
            "name": _NAME,
        },
        audit=True,
        result=Obj({"removed": STR}),
    ),
)
