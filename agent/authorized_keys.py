"""The node account's authorized_keys: forced-command lines per user, rewritten atomically."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .protocol import UNAVAILABLE, RPCError

# Paths that go into the forced command unquoted-safe: sshd hands command="..." to the account's shell.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+/-]+$")
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
OPTIONS = "restrict"


def _safe_path(path: str, what: str) -> str:
    if not _SAFE_PATH.match(path) or "/../" in path or path.endswith("/.."):
        raise RPCError(
            UNAVAILABLE,
            f"cannot write a forced command: the {what} path {path!r} has characters "
            "other than letters, digits and ._+-/ ; install or move it to a plain path",
        )
    return path


def forced_command(executable: str, config: str, name: str) -> str:
    if not _NAME.match(name):  # validated upstream too; never build a command from anything else
        raise ValueError(f"unsafe user name {name!r}")
    exe, cfg = _safe_path(executable, "pacsdeck executable"), _safe_path(config, "config")
    return f"{exe} agent stdio --config {cfg} --as {name}"


def line(executable: str, config: str, name: str, key_type: str, key_b64: str) -> str:
    return f'{OPTIONS},command="{forced_command(executable, config, name)}" {key_type} {key_b64} pacsdeck:{name}'


def is_ours(text: str, config: str, name: str) -> bool:
    """Our line for this user of this node: the forced command names both, the comment names the user."""
    stripped = text.strip()
    return (
        stripped.startswith(f'{OPTIONS},command="')
        and f' agent stdio --config {config} --as {name}" ' in stripped
        and stripped.endswith(f" pacsdeck:{name}")
    )


def sync(path: Path, executable: str | None, config: str, name: str, keys: Iterable[tuple[str, str]]) -> None:
    """Make the file hold exactly `keys` for this user of this node; every other line is kept as it was."""
    keys = list(keys)
    if not keys and not path.exists():
        return  # nothing to remove, and no reason to create ~/.ssh
    if keys and not executable:
        raise RPCError(
            UNAVAILABLE, "cannot find the pacsdeck executable for the forced command; set PACSDECK_EXECUTABLE"
        )
    new_lines = [line(executable, config, name, t, b) for t, b in keys]
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise RPCError(UNAVAILABLE, f"cannot use {folder}: {err.strerror}") from err
    try:
        # Several nodes (or agents) may share one account's file: serialise read-modify-write.
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            current = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except FileNotFoundError:
            current = []
        kept = [text for text in current if not is_ours(text, config, name)]
        if kept == current and not new_lines:
            return
        _write_atomically(path, dir_fd, kept + new_lines)
    except OSError as err:
        raise RPCError(UNAVAILABLE, f"cannot write {path}: {err.strerror}") from err
    finally:
        os.close(dir_fd)


def _write_atomically(path: Path, dir_fd: int, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".authorized_keys.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("".join(f"{text}\n" for text in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.fsync(dir_fd)
