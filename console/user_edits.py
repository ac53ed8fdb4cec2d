"""User edits as the console makes them: SSH public keys read and checked, users.* params, the sentences shown.

No Textual here: the Users tab and its form build drafts, this module turns them into calls and words.
Keys are checked for shape only (type, base64, the type inside the blob), so a private key, a typo or
an empty file is told at once; the agent parses each key fully and names the one it refuses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from agent.protocol import CONFLICT, FORBIDDEN, RPCError

from .aet_edits import refusal as call_refusal
from .results import User, failure

ROLES = ("viewer", "operator", "admin")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
# A .pub file is a few hundred bytes per key; anything this large is not one (a log, a disk image).
MAX_KEY_FILE = 64 * 1024
SHORT = 12  # characters of a fingerprint's digest shown when a user has several keys


class KeyProblem(ValueError):
    """What is wrong with the keys given, in words a person can act on."""


@dataclass(frozen=True)
class UserDraft:
    """What the form holds: a user's name, role and OpenSSH public key lines (each `TYPE BASE64 [comment]`)."""

    name: str = ""
    role: str = "viewer"
    keys: tuple[str, ...] = ()


# --- keys ---------------------------------------------------------------------------------------------


def _check_line(text: str, where: str) -> str:
    parts = text.split()
    if _is_path(text):
        raise KeyProblem(f"{where}: {text} looks like a file's path, not a key")
    if parts[0] not in KEY_TYPES:
        if any(parts[0].startswith(p) for p in ("restrict", "command=", "from=", "no-")):
            raise KeyProblem(f"{where}: give the key alone, without authorized_keys options in front of it")
        raise KeyProblem(f"{where}: not an OpenSSH public key; it must start with one of {', '.join(KEY_TYPES)}")
    if len(parts) < 2:
        raise KeyProblem(f"{where}: the {parts[0]} key has no key data after its type")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, ValueError, struct.error, UnicodeDecodeError):
        raise KeyProblem(f"{where}: the {parts[0]} key data is not valid (cut short, or not base64)") from None
    if inner != parts[0]:
        raise KeyProblem(f"{where}: the key data is a {inner or 'different'} key, not {parts[0]}")
    return text


def _is_path(line: str) -> bool:
    return " " not in line and (line.startswith(("/", "~", "./", "../")) or line.endswith(".pub"))


def parse_keys(text: str, source: str = "key", *, read_paths: bool = False) -> tuple[str, ...]:
    """The public key lines in `text` (blank lines and # comments skipped), in order, each once.
    `read_paths`: a line that is a file's path (as people paste one where a key was asked) is read as a .pub file."""
    if "PRIVATE KEY-----" in text:
        raise KeyProblem(f"{source}: this is a private key; give the public key (the .pub file) instead")
    keys: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            where = source if len(text.strip().splitlines()) == 1 else f"{source}, line {number}"
            if read_paths and _is_path(line):
                keys.extend(read_key_file(line))
            else:
                keys.append(_check_line(line, where))
    return tuple(dict.fromkeys(keys))


def read_key_file(path: str) -> tuple[str, ...]:
    """The keys in a .pub file (an authorized_keys-style list works too); KeyProblem when it cannot be used."""
    shown = path.strip()
    file = Path(shown).expanduser()
    try:
        if file.is_dir():
            raise KeyProblem(f"{shown} is a folder; give the .pub file in it")
        if file.stat().st_size > MAX_KEY_FILE:
            raise KeyProblem(f"{shown} is larger than {MAX_KEY_FILE // 1024} KiB: not a public key file")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyProblem(f"{shown}: no such file") from None
    except PermissionError:
        raise KeyProblem(f"{shown}: the console may not read it (permission denied)") from None
    except UnicodeDecodeError:
        raise KeyProblem(f"{shown}: not a text file, so not a public key") from None
    except OSError as err:
        raise KeyProblem(f"{shown}: cannot read it ({err.strerror or err})") from None
    keys = parse_keys(text, shown)
    if not keys:
        raise KeyProblem(f"{shown} holds no public key")
    return keys


def fingerprint(line: str) -> str:
    """`SHA256:…` as ssh-keygen -l prints it (and the agent's users.list, after the type)."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _listed(keys: tuple[str, ...]) -> str:
    """Each key on its own line under the question, as `TYPE SHA256:…`: a fingerprint is too long to share one."""
    return "".join(f"\n  {k.split()[0]} {fingerprint(k)}" for k in keys)


def keys_cell(user: User) -> str:
    """The SSH keys column: how many, then each key's type and fingerprint (cut short when there are several,
    so the row still fits: a prefix is how people compare fingerprints anyway)."""
    if not user.ssh_keys:
        return "none"
    shown = [k.fingerprint if k.fingerprint.startswith(k.type) else f"{k.type} {k.fingerprint}" for k in user.ssh_keys]
    if len(shown) > 1:
        shown = [s if len(s.split(":", 1)[-1]) <= SHORT else s[: s.index(":") + 1 + SHORT] + "…" for s in shown]
    return f"{len(shown)}: {', '.join(shown)}"


def count_keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


# --- params and questions -------------------------------------------------------------------------------


def add_params(draft: UserDraft) -> dict:
    return {"name": draft.name, "role": draft.role, "ssh_keys": list(draft.keys)}


def role_params(user: User, role: str) -> dict:
    return {"name": user.name, "role": role}


def keys_params(user: User, keys: tuple[str, ...]) -> dict:
    return {"name": user.name, "ssh_keys": list(keys)}


def describe_add(draft: UserDraft, node: str) -> str:
    if not draft.keys:
        return f"Add user {draft.name} ({draft.role}) on {node} with no key? It cannot log in until it has one."
    return f"Add user {draft.name} ({draft.role}) on {node} with {count_keys(len(draft.keys))}?{_listed(draft.keys)}"


def describe_role(user: User, role: str, node: str) -> str:
    return f"Change {user.name}'s role on {node} from {user.role} to {role}?"


def describe_keys(user: User, keys: tuple[str, ...], node: str) -> str:
    before = count_keys(len(user.ssh_keys)) if user.ssh_keys else "no keys"
    if not keys:
        return f"Remove {user.name}'s {before} on {node}? {user.name} can no longer log in over SSH."
    return f"Replace {user.name}'s {before} on {node} with {count_keys(len(keys))}?{_listed(keys)}"


def describe_remove(user: User, node: str) -> str:
    n = len(user.ssh_keys)
    lines = f"Its {'authorized_keys line goes' if n == 1 else f'{n} authorized_keys lines go'} too." if n else ""
    return f"Remove user {user.name} ({user.role}) from {node}? {lines}".rstrip()


# --- refusals -------------------------------------------------------------------------------------------


def refusal(action: str, name: str | None, error: Exception) -> str:
    """One line for a failed users.* call: the last admin and a role that may not are said as such."""
    if isinstance(error, RPCError) and error.kind == CONFLICT and action in ("users.update", "users.remove"):
        return f"{name} is the last admin; make another user admin first"
    return call_refusal(f"{action} {name}" if name else action, error)


def form_error(error: RPCError) -> str:
    """The agent's refusal of a value, shown above the form it reopens."""
    return call_refusal("the node refused it", error)


def list_refusal(error: Exception) -> str:
    """users.list failed: a role that may not see users is told so, not shown an error dump."""
    if isinstance(error, RPCError) and error.kind == FORBIDDEN:
        needed = error.data.get("required_role") or "admin"
        role = error.data.get("role")
        who = f"you are {role}" if role else "this session has no role on the node"
        return f"users.list needs {needed}; {who}. An admin of the node can change your role."
    return failure("users.list", error)


def is_forbidden(error: Exception | None) -> bool:
    return isinstance(error, RPCError) and error.kind == FORBIDDEN
