"""A restic target: the backup tree staged with hard links from the pools, then `restic backup` of it, so the
repository is encrypted and deduplicated on any restic backend (a folder, sftp:, s3:, rest:)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from storage.index.database import Index

from .layout import MANIFEST, BackupError, Manifest, read_manifest, write_json_atomic
from .take import take_dir

log = logging.getLogger(__name__)

TAG = "pacsdeck"
STAGING = "backup-staging"  # in the node folder: the tree restic reads, removed once it is in the repository
TIMEOUT = 6 * 3600.0  # a restic command that runs longer is stopped: every wait on a peer has a deadline
QUICK_TIMEOUT = 120.0  # snapshots, cat config, init


def _catalog_path(config, target) -> Path:
    return config.node_dir / f"restic-{target.name}.json"


def read_catalog(config, target) -> dict[str, dict]:
    """What this node knows of its backups in the repository: id -> {snapshot, manifest}. The repository
    stays the truth: verify and restore read from it."""
    try:
        doc = json.loads(_catalog_path(config, target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_catalog(config, target, catalog: dict[str, dict]) -> None:
    write_json_atomic(_catalog_path(config, target), catalog)


def redact(text: str) -> str:
    """A repository URL's password (rest:https://user:secret@host/) never leaves in a message or an answer."""
    return re.sub(r"(://[^/:@\s]+):[^@/\s]+@", r"\1:***@", text)


def check_password_file(target) -> None:
    path = Path(target.password_file)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BackupError(f"backup target {target.name}: password_file {path} does not exist") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackupError(
            f"backup target {target.name}: password_file {path} is readable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )


def restic(config, target, *args: str, timeout: float = TIMEOUT, cwd: Path | None = None) -> str:
    """Run restic with the target's repository and password file; stdout, or BackupError with restic's words.
    An argument list, never a shell; the password only ever in its file."""
    if shutil.which("restic") is None:
        raise BackupError("restic is not installed: apt-get install restic (or use a target of type dir)")
    check_password_file(target)
    argv = ["restic", "--repo", target.repository, "--password-file", str(target.password_file)]
    argv += ["--cache-dir", str(config.node_dir / "restic-cache")]
    for option in target.options:
        argv += ["--option", option]
    try:
        done = subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            env=_env(),
        )
    except subprocess.TimeoutExpired:
        raise BackupError(f"restic {args[0]} on {target.name}: no answer in {timeout:.0f} s; stopped") from None
    if done.returncode != 0:
        words = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit {done.returncode}"
        if "wrong password" in words:
            words = "wrong password: the password_file does not open this repository"
        raise BackupError(redact(f"restic {args[0]} on {target.name}: {words}"))
    return done.stdout


def ensure_repository(config, target) -> None:
    """Open the repository; create it on first use (an empty folder, or a new sftp/s3 path)."""
    try:
        restic(config, target, "cat", "config", timeout=QUICK_TIMEOUT)
    except BackupError as err:
        if "wrong password" in str(err):
            raise
        restic(config, target, "init", timeout=QUICK_TIMEOUT)
        log.info("restic repository %s created for target %s", redact(target.repository), target.name)


def take_restic(
    config,
    index: Index,
    target,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, Manifest]:
    """Stage the backup (hard links: no copy on the pools' filesystem), manifest last, then `restic backup`.
    The snapshot exists only once restic has written it whole: a killed run leaves no snapshot."""
    ensure_repository(config, target)
    staging = config.node_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's leftovers
    staging.mkdir(mode=0o750)
    try:
        _folder, manifest = take_dir(config, index, target, stop=stop, progress=progress, root=staging, from_pools=True)
        out = restic(
            config,
            target,
            "backup",
            "--json",
            "--tag",
            TAG,
            "--tag",
            manifest.id,
            "--host",
            config.ae_title,
            manifest.id,
            cwd=staging,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = next((json.loads(x) for x in out.splitlines() if '"message_type":"summary"' in x), {})
    catalog = read_catalog(config, target)
    catalog[manifest.id] = {
        "snapshot": summary.get("snapshot_id"),
        "data_added": summary.get("data_added"),
        "manifest": asdict(manifest),
    }
    _write_catalog(config, target, catalog)
    return f"{redact(target.repository)}#{summary.get('snapshot_id')}", manifest


def record_verification(config, target, backup_id: str, verification: dict) -> None:
    catalog = read_catalog(config, target)
    if backup_id in catalog:
        catalog[backup_id]["verification"] = verification
        _write_catalog(config, target, catalog)


def snapshots(config, target) -> list[dict]:
    out = restic(config, target, "snapshots", "--json", "--tag", TAG, timeout=QUICK_TIMEOUT)
    return json.loads(out or "[]")


def fetch(config, target, backup_id: str, into: Path) -> Path:
    """Restore one backup's tree from the repository into `into`; the folder holding its manifest."""
    entry = read_catalog(config, target).get(backup_id)
    snapshot = entry.get("snapshot") if entry else None
    if snapshot is None:
        found = [s for s in snapshots(config, target) if backup_id in (s.get("tags") or [])]
        if not found:
            raise BackupError(f"no backup {backup_id!r} in restic target {target.name}")
        snapshot = found[-1]["id"]
    restic(config, target, "restore", snapshot, "--target", str(into))
    manifests = list(into.rglob(MANIFEST))
    if len(manifests) != 1:
        raise BackupError(f"{backup_id}: the restic snapshot {snapshot} holds no pacsdeck backup")
    folder = manifests[0].parent
    read_manifest(folder)
    return folder


def scratch(config) -> tempfile.TemporaryDirectory:
    """A private folder beside the node's for a backup fetched from restic (verify, restore)."""
    return tempfile.TemporaryDirectory(prefix="restic-fetch-", dir=config.node_dir)


def forget(config, target) -> tuple[str, ...]:
    """The target's `keep` as `restic forget --prune`; the ids no longer in the repository."""
    keep = target.keep
    if keep.unlimited:
        return ()
    args = ["forget", "--json", "--prune", "--tag", TAG, "--group-by", "host"]
    for flag, n in (("--keep-last", keep.last), ("--keep-daily", keep.daily), ("--keep-weekly", keep.weekly)):
        if n:
            args += [flag, str(n)]
    if keep.monthly:
        args += ["--keep-monthly", str(keep.monthly)]
    out = restic(config, target, *args)
    removed = []
    for line in out.splitlines():
        if line.startswith("["):
            for group in json.loads(line):
                for snap in group.get("remove") or []:
                    removed += [t for t in snap.get("tags", []) if t != TAG]
    catalog = read_catalog(config, target)
    for bid in removed:
        catalog.pop(bid, None)
    _write_catalog(config, target, catalog)
    return tuple(removed)


def _env() -> dict:
    """This process's environment without RESTIC_*: the target's settings are the only ones restic sees."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
