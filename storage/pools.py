"""Disk pools: where instance files live, and the durable write (temp, fsync, rename, fsync dir)."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import PoolConfig

log = logging.getLogger(__name__)

INCOMING = ".incoming"  # temp files: swept at startup, never indexed
TEMP_SUFFIX = ".part"


class StoreFailed(OSError):
    """Bytes could not be made durable in any pool (disk full, I/O error)."""


@dataclass(frozen=True)
class Pool:
    name: str
    tier: str
    root: Path

    @classmethod
    def from_config(cls, cfg: PoolConfig) -> "Pool":
        return cls(name=cfg.name, tier=cfg.tier, root=cfg.path)

    @property
    def incoming(self) -> Path:
        return self.root / INCOMING

    def file(self, rel: str) -> Path:
        return self.root / rel

    def prepare(self) -> None:
        ensure_dir(self.incoming)

    def sweep_incoming(self) -> int:
        """Delete temp files a crash left behind; they were never acknowledged."""
        removed = 0
        try:
            entries = list(os.scandir(self.incoming))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.endswith(TEMP_SUFFIX):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        if removed:
            fsync_dir(self.incoming)
        return removed

    def walk(self) -> Iterator[str]:
        """Relative paths of every instance file in the pool (temp files excluded)."""
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == root:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if name.endswith(".dcm"):
                    yield name if rel_dir == "." else f"{rel_dir}/{name}"

    def write(self, rel: str, data: bytes) -> os.stat_result:
        """Make `data` durable at `rel` in this pool; the caller fsyncs the folder before indexing.

        The bytes go to a temp file in .incoming, are fsynced, then renamed into place, so the final
        name never holds a partial file. Callers pick names no indexed file has (see ingest), so the
        rename only ever replaces an unacknowledged leftover. On failure nothing is left behind.
        """
        target = self.root / rel
        tmp = self.incoming / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except OSError as err:
            raise StoreFailed(err.errno, f"pool {self.name}: cannot create a temp file: {err.strerror}") from err
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            ensure_dir(target.parent)
            os.replace(tmp, target)
        except OSError as err:
            _unlink_quietly(tmp)
            raise StoreFailed(err.errno, f"pool {self.name}: {err.strerror}") from err
        return st


def ensure_dir(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entries changed so the new folders survive a crash."""
    if path.is_dir():
        return
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o750)
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
