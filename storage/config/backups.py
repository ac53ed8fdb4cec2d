"""The `backups:` section of node.yaml: named targets (`dir` or `restic`), each with its schedule and retention."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .values import ConfigError

KINDS = ("dir", "restic")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DAILY = re.compile(r"^daily (\d{2}):(\d{2})$")
_EVERY = re.compile(r"^every (\d+(?:\.\d+)?)\s*(s|m|h)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
KEEP_KEYS = ("last", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Schedule:
    """`daily HH:MM` (local time) or `every N s|m|h` (from the node's start; short ones are for tests)."""

    text: str
    daily_at: tuple[int, int] | None = None  # (hour, minute)
    every: float | None = None  # seconds


@dataclass(frozen=True)
class Keep:
    """How many complete backups retention keeps: the newest `last`, and the newest of each of the last
    `daily` days, `weekly` ISO weeks and `monthly` months (rsnapshot's and restic's forget rules)."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


@dataclass(frozen=True)
class BackupTarget:
    name: str
    kind: str  # dir or restic
    path: Path | None = None  # dir: the folder that holds one sub-folder per backup
    repository: str | None = None  # restic: a local path or any restic backend (sftp:, s3:, rest:)
    password_file: Path | None = None  # restic: readable by the node's account only
    options: tuple[str, ...] = ()  # restic: --option key=value each (e.g. sftp.command=ssh -p 2222 … -s sftp)
    schedule: Schedule | None = None
    keep: Keep = Keep()


def parse_schedule(value, where: str) -> Schedule:
    if not isinstance(value, str):
        raise ConfigError(f'{where}: "daily HH:MM" or "every N s|m|h", got {value!r}')
    text = " ".join(value.split())
    m = _DAILY.match(text)
    if m:
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or minute > 59:
            raise ConfigError(f"{where}: not a time of day: {value!r}")
        return Schedule(text, daily_at=(hour, minute))
    m = _EVERY.match(text)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if not 1 <= seconds <= 366 * 86400:
            raise ConfigError(f"{where}: between 1 s and a year, got {value!r}")
        return Schedule(text, every=seconds)
    raise ConfigError(f'{where}: "daily HH:MM" or "every N s|m|h" (e.g. "daily 02:00"), got {value!r}')


def parse_keep(value, where: str) -> Keep:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: a mapping of {', '.join(KEEP_KEYS)} to counts, e.g. {{daily: 7, weekly: 4}}")
    unknown = set(value) - set(KEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(KEEP_KEYS)}")
    counts = {}
    for key, n in value.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10000:
            raise ConfigError(f"{where}.{key}: a count from 0 to 10000, got {n!r}")
        counts[key] = n
    return Keep(**counts)


def parse_target(raw, where: str, resolve: Callable[[object], Path]) -> BackupTarget:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a mapping with name, type and path (dir) or repository (restic)")
    allowed = {"name", "type", "path", "repository", "password_file", "options", "schedule", "keep"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: letters, digits, '_', '.', '-' (max 64), got {name!r}")
    kind = raw.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{where}.type: dir or restic, got {kind!r}")
    kw: dict = {"name": name, "kind": kind}
    if kind == "dir":
        if not isinstance(raw.get("path"), str) or not raw["path"].strip():
            raise ConfigError(f"{where}.path: the folder backups go to (a USB disk, a NAS mount)")
        for key in ("repository", "password_file", "options"):
            if key in raw:
                raise ConfigError(f"{where}.{key}: only for type restic")
        kw["path"] = resolve(raw["path"])
    else:
        repository = raw.get("repository")
        if not isinstance(repository, str) or not repository.strip() or "\n" in repository:
            raise ConfigError(f"{where}.repository: a restic repository (a folder, sftp:host:/path, s3:…, rest:…)")
        if not isinstance(raw.get("password_file"), str):
            raise ConfigError(f"{where}.password_file: the file holding the repository's password (mode 0600)")
        if "path" in raw:
            raise ConfigError(f"{where}.path: only for type dir; restic takes repository")
        # A local repository path is relative to node.yaml like every path; backends (x:...) are left as given.
        local = not re.match(r"^[a-z0-9]+:", repository) or repository.startswith("local:")
        kw["repository"] = str(resolve(repository.removeprefix("local:"))) if local else repository
        kw["password_file"] = resolve(raw["password_file"])
        options = raw.get("options") or []
        if not isinstance(options, list) or not all(
            isinstance(o, str) and "=" in o and "\n" not in o and len(o) <= 1024 for o in options
        ):
            raise ConfigError(f"{where}.options: a list of restic options, each key=value")
        kw["options"] = tuple(options)
    if raw.get("schedule") is not None:
        kw["schedule"] = parse_schedule(raw["schedule"], f"{where}.schedule")
    if raw.get("keep") is not None:
        kw["keep"] = parse_keep(raw["keep"], f"{where}.keep")
    return BackupTarget(**kw)


def parse_backups(raw, resolve: Callable[[object], Path]) -> tuple[BackupTarget, ...]:
    """The list of named targets; names unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("backups: a list of targets, e.g. [{name: usb, type: dir, path: /mnt/usb/pacs}]")
    targets = [parse_target(t, f"backups[{i}]", resolve) for i, t in enumerate(raw)]
    seen: set[str] = set()
    for i, t in enumerate(targets):
        if t.name in seen:
            raise ConfigError(f"backups[{i}].name: {t.name!r} is used twice")
        seen.add(t.name)
    return tuple(targets)
