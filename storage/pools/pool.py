"""Disk pools: where instance files live, and the durable write (temp, fsync, rename, fsync dir)."""

from __future__ import annotations

import errno
import logging
import mmap
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from storage.config.settings import PoolConfig

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"  # temp files: never indexed, removed at startup


class StoreFailed(OSError):
    """Bytes could not be made durable in any pool (disk full, I/O error)."""


@dataclass(frozen=True)
class Pool:
    name: str
    tier: str
    root: Path

    @classmethod
    def from_config(cls, cfg: PoolConfig) -> Pool:
        return cls(name=cfg.name, tier=cfg.tier, root=cfg.path)

    def file(self, rel: str) -> Path:
        return self.root / rel

    def prepare(self) -> None:
        ensure_dir(self.root)

    def scan(self) -> tuple[list[str], list[str]]:
        """Relative paths of every instance file and every temp file in the pool, in one walk."""
        instances, temps = [], []
        root = str(self.root)
        for dirpath, _dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if name.endswith(".dcm"):
                    instances.append(rel)
                elif name.endswith(TEMP_SUFFIX):
                    temps.append(rel)
        return instances, temps

    def remove_temp_files(self, temps: list[str]) -> int:
        """Delete temp files a crash left behind; they were never acknowledged."""
        removed = 0
        for rel in temps:
            try:
                os.unlink(self.root / rel)
                removed += 1
            except FileNotFoundError:
                pass
        for folder in {os.path.dirname(rel) for rel in temps}:
            fsync_dir(self.root / folder)
        return removed

    def write(self, rel: str, parts: tuple) -> os.stat_result:
        """Make the concatenated `parts` (bytes-like) durable at `rel`; the caller fsyncs the folder.

        The bytes go to a temp file beside the final name, are fsynced, then renamed into place, so
        the final name never holds a partial file. (Beside, not in one shared temp folder: ext4
        allocates a new file's inode near its folder, and one folder for every new file made inode
        allocation the largest kernel cost of ingest.) Callers pick names no indexed file has (see
        ingest), so the rename only ever replaces an unacknowledged leftover. On failure nothing is
        left behind.
        """
        target = self.root / rel
        tmp = target.parent / f".{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            ensure_dir(target.parent)
            try:
                st = self._write_file(tmp, parts)
            except OSError:
                _unlink_quietly(tmp)
                raise
            os.replace(tmp, target)
        except OSError as err:
            _unlink_quietly(tmp)
            raise StoreFailed(err.errno, f"pool {self.name}: {err.strerror}") from err
        return st

    def _write_file(self, path: Path, parts: tuple) -> os.stat_result:
        if _direct_io_state.get(self.root, True):
            try:
                return _write_direct(path, parts)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                # This filesystem does not do O_DIRECT (tmpfs on older kernels, some network
                # filesystems): remember it and use the page cache from now on.
                log.info("pool %s: no O_DIRECT on %s, using buffered writes", self.name, self.root)
                _direct_io_state[self.root] = False
                _unlink_quietly(path)
        return _write_buffered(path, parts)


# Why O_DIRECT: measured on this project's 2-core VMs (ext4), a 0.5 MB instance takes 1.4 ms to
# copy into the page cache and 2.1 ms with fdatasync, but 0.7 ms written with O_DIRECT and fsynced.
# Databases bypass the page cache for the same reason. The data is padded to the block size in an
# aligned buffer and the file truncated to its real length before the fsync.
_BLOCK = 4096
_direct_io_state: dict[Path, bool] = {}
_buffers = threading.local()


def _aligned_buffer(size: int) -> mmap.mmap:
    """A per-thread, page-aligned buffer of at least `size` bytes (anonymous mmap is page-aligned)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        if buf is not None:
            buf.close()
        buf = mmap.mmap(-1, max(size, 1 << 20))
        _buffers.buf = buf
    return buf


def _write_direct(path: Path, parts: tuple) -> os.stat_result:
    size = sum(len(p) for p in parts)
    padded = (size + _BLOCK - 1) // _BLOCK * _BLOCK
    buf = _aligned_buffer(padded)
    offset = 0
    for part in parts:  # the one copy of the instance: into the aligned buffer
        buf[offset : offset + len(part)] = part
        offset += len(part)
    buf[size:padded] = bytes(padded - size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_DIRECT, 0o640)
    try:
        view = memoryview(buf)[:padded]
        try:
            while view:
                view = view[os.write(fd, view) :]
        finally:
            view.release()
        os.ftruncate(fd, size)
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _write_buffered(path: Path, parts: tuple) -> os.stat_result:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


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


def dataset_offset(path) -> int | None:
    """Where the dataset starts in a Part 10 file whose File Meta begins with its group length, as
    every file the node writes does; None for any other layout (then read it with pydicom)."""
    with open(path, "rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + struct.unpack_from("<I", head, 140)[0]
