"""backups.list, backups.run, backups.verify, backups.restore: online backups of the node, proven by reading back."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from storage.backups import catalog, restic
from storage.backups.layout import BackupError
from storage.backups.reingest import reingest_studies
from storage.backups.restore import restore_node
from storage.backups.runner import BackupBusy, backup_lock, check_target, run_backup
from storage.backups.verify import record, verify
from storage.index import jobs

from . import validate as v
from .backup_check import restore_test
from .protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from .schema import BOOL, INT, NUM, STR, TIME, Arr, Enum, Null, Obj

_ID = Param("string", "a backup id, as backups.list shows it", required=True)


def _refused(err: BackupError) -> RPCError:
    kind = CONFLICT if isinstance(err, BackupBusy) else INVALID_PARAMS
    if str(err).startswith("no backup ") and "target" not in str(err).split(";")[0]:
        kind = NOT_FOUND
    return RPCError(kind, str(err))


def _target_name(params: dict) -> str | None:
    if params.get("target") is None:
        return None
    return v.safe_text(params["target"], "target", max_len=64)


def _backup_id(params: dict) -> str:
    value = v.safe_text(params.get("id"), "id", max_len=96)
    if "/" in value or value.startswith("."):
        raise v.invalid("id", "a backup id from backups.list")
    return value


def _verification_wire(ver: dict | None) -> dict | None:
    if not ver:
        return None
    return {"at": iso_time(ver.get("at")), "ok": bool(ver.get("ok")), "restore_test": ver.get("restore_test")}


def _info_wire(b: catalog.BackupInfo) -> dict:
    seconds = None if b.finished_at is None or b.started_at is None else round(b.finished_at - b.started_at, 3)
    return {
        "id": b.id,
        "target": b.target,
        "type": b.kind,
        "state": b.state,
        "started_at": iso_time(b.started_at) if b.started_at else None,
        "finished_at": iso_time(b.finished_at) if b.finished_at else None,
        "seconds": seconds,
        "instances": b.instances,
        "bytes": b.bytes,
        "copied": b.copied,
        "linked": b.linked,
        "reason": b.reason,
        "last_verification": _verification_wire(b.verification),
    }


def _target_wire(t) -> dict:
    return {
        "name": t.name,
        "type": t.kind,
        "path": str(t.path) if t.path is not None else restic.redact(t.repository),
        "schedule": t.schedule.text if t.schedule is not None else None,
        "keep": {"last": t.keep.last, "daily": t.keep.daily, "weekly": t.keep.weekly, "monthly": t.keep.monthly},
    }


def list_backups(ctx, params: dict) -> dict:
    config = ctx.require_node().config
    name = _target_name(params)
    if name is not None and config.backup_target(name) is None:
        raise RPCError(NOT_FOUND, f"no backup target {name!r}", {"field": "target"})
    found = [b for b in catalog.all_backups(config) if name is None or b.target == name]
    targets = [t for t in config.backups if name is None or t.name == name]
    return {"targets": [_target_wire(t) for t in targets], "backups": [_info_wire(b) for b in reversed(found)]}


def _spawn(ctx, target: str, job_id: int) -> None:
    """The backup in its own process, in its own session: it outlives this agent (and its SSH session)."""
    args = [sys.executable, "-m", "storage.backups", "--config", str(ctx.config_path), "--job", str(job_id)]
    args += ["--target", target]
    subprocess.Popen(  # an argument list, no shell; the values were checked above
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd=str(Path(ctx.config_path).parent),
        env={**os.environ},
    )


def run(ctx, params: dict) -> dict:
    node = ctx.require_node()
    wait = v.boolean(params.get("wait", False), "wait")
    try:
        target = check_target(node.config, _target_name(params))
        if wait:
            done = run_backup(node.config, node.index, target.name, reason="manual")
            return {
                "job_id": done.job_id,
                "state": "done",
                "backup": _info_wire(catalog.find(node.config, done.manifest.id)),
                "removed": list(done.removed),
            }
        with backup_lock(node.config):  # busy now: say so at once, not in a failed job later
            pass
    except BackupError as err:
        raise _refused(err) from None
    job_id = jobs.create(node.index, "backup", "manual", {"target": target.name})
    _spawn(ctx, target.name, job_id)
    return {"job_id": job_id, "state": "running", "backup": None, "removed": []}


@contextmanager
def _readable(config, info: catalog.BackupInfo):
    """The backup's folder: in place for a dir target; fetched from the repository (and removed after) for restic."""
    if info.kind == "dir":
        yield info.folder
        return
    target = config.backup_target(info.target)
    with restic.scratch(config) as tmp:
        yield restic.fetch(config, target, info.id, Path(tmp))


def run_verify(ctx, params: dict) -> dict:
    config = ctx.require_node().config
    bid = _backup_id(params)
    test = v.boolean(params.get("restore_test", False), "restore_test")
    try:
        info = catalog.find(config, bid)
        with _readable(config, info) as folder:
            result = verify(folder)
            if test and result.ok:  # a backup with damaged files is not restored to find that out again
                result.restore_test = restore_test(config.node_dir, folder)
                result.ok = result.restore_test["ok"]
        if info.kind == "dir":
            record(info.folder, result)
        else:
            restic.record_verification(config, config.backup_target(info.target), bid, asdict(result))
    except BackupError as err:
        raise _refused(err) from None
    return {
        "id": result.backup,
        "ok": result.ok,
        "checked": result.checked,
        "bytes": result.bytes,
        "missing": result.missing,
        "damaged": result.damaged,
        "problems": result.problems,
        "seconds": result.seconds,
        "restore_test": result.restore_test,
    }


def restore(ctx, params: dict) -> dict:
    node = ctx.require_node()
    config = node.config
    bid = _backup_id(params)
    into, studies = params.get("into"), params.get("study_uids")
    if (into is None) == (studies is None):
        raise RPCError(
            INVALID_PARAMS,
            "give into (a whole node into a new or empty folder) or study_uids (chosen studies back into this node)",
        )
    dry_run = v.boolean(params.get("dry_run", False), "dry_run")
    if studies is not None:
        if not isinstance(studies, list) or not 1 <= len(studies) <= 1000:
            raise v.invalid("study_uids", "a list of 1 to 1000 Study Instance UIDs")
        studies = list(dict.fromkeys(v.uid(s, f"study_uids[{i}]") for i, s in enumerate(studies)))
        if dry_run:
            raise v.invalid("dry_run", "only with into; for studies, backups.list and studies.find say what is where")
    elif not isinstance(into, str) or not into.strip() or "\x00" in into:
        raise v.invalid("into", "the folder to restore the whole node into (new or empty)")
    try:
        info = catalog.find(config, bid)
        if info.state != "complete":
            raise BackupError(f"{bid} is incomplete ({info.reason}); restore a complete backup")
        with _readable(config, info) as folder:
            if studies is not None:
                back = reingest_studies(node, folder, studies)
                return {
                    "id": back.backup,
                    "into": None,
                    "config": None,
                    "instances": back.stored + back.already_there,
                    "bytes": None,
                    "dry_run": False,
                    "studies": back.studies,
                    "stored": back.stored,
                    "already_there": back.already_there,
                    "failed": list(back.failed),
                }
            done = restore_node(folder, Path(into).expanduser().absolute(), dry_run=dry_run)
    except BackupError as err:
        raise _refused(err) from None
    return {
        "id": done.backup,
        "into": str(done.into),
        "config": str(done.config),
        "instances": done.instances,
        "bytes": done.bytes,
        "dry_run": dry_run,
        "studies": None,
        "stored": None,
        "already_there": None,
        "failed": [],
    }


RESTORE_TEST = Obj(
    {
        "ok": BOOL,
        "instances": INT,
        "studies": INT,
        "studies_found": INT,
        "instances_compared": INT,
        "instances_mismatched": INT,
        "problems": Arr(STR),
        "seconds": NUM,
    }
)
VERIFICATION = Obj({"at": TIME, "ok": BOOL, "restore_test": Null(Obj({}, extra=True))})
BACKUP = Obj(
    {
        "id": STR,
        "target": STR,
        "type": Enum("dir", "restic"),
        "state": Enum("complete", "incomplete"),
        "started_at": Null(TIME),
        "finished_at": Null(TIME),
        "seconds": Null(NUM),
        "instances": Null(INT),
        "bytes": Null(INT),
        "copied": Null(INT),
        "linked": Null(INT),
        "reason": Null(STR),
        "last_verification": Null(VERIFICATION),
    }
)
TARGET = Obj(
    {
        "name": STR,
        "type": Enum("dir", "restic"),
        "path": Null(STR),
        "schedule": Null(STR),
        "keep": Obj({"last": INT, "daily": INT, "weekly": INT, "monthly": INT}),
    }
)
METHODS = (
    Method(
        "backups.list",
        list_backups,
        "Backup targets and their backups, newest first: complete or incomplete, size, last verification",
        {"target": Param("string", "only this target")},
        result=Obj({"targets": Arr(TARGET), "backups": Arr(BACKUP)}),
    ),
    Method(
        "backups.run",
        run,
        "Take a backup now (online): a backup job; wait for it, or follow it in queue.list",
        {
            "target": Param("string", "the target's name (default: the first in node.yaml)"),
            "wait": Param("boolean", "answer when it is done (default false: answer once it has started)"),
        },
        audit=True,
        result=Obj({"job_id": INT, "state": Enum("running", "done"), "backup": Null(BACKUP), "removed": Arr(STR)}),
    ),
    Method(
        "backups.verify",
        run_verify,
        "Re-read every file of a backup against its manifest (size and SHA-256)",
        {
            "id": _ID,
            "restore_test": Param(
                "boolean",
                "also restore it into a scratch folder, start a node there on loopback, and compare its "
                "C-FIND study count and the C-GET bytes of a sample of studies with the backup",
            ),
        },
        audit=True,
        result=Obj(
            {
                "id": STR,
                "ok": BOOL,
                "checked": INT,
                "bytes": INT,
                "missing": INT,
                "damaged": INT,
                "problems": Arr(STR),
                "seconds": NUM,
                "restore_test": Null(RESTORE_TEST),
            }
        ),
    ),
    Method(
        "backups.restore",
        restore,
        "Restore a whole node into a new or empty folder, or chosen studies back into this node",
        {
            "id": _ID,
            "into": Param("string", "a whole node into this folder (new or empty)"),
            "dry_run": Param("boolean", "with into: say what would be restored, write nothing"),
            "study_uids": Param(
                "array",
                "instead of into: these studies back into this node through its ingest path (kept once)",
                extra={"items": {"type": "string"}},
            ),
        },
        audit=True,
        result=Obj(
            {
                "id": STR,
                "into": Null(STR),
                "config": Null(STR),
                "instances": INT,
                "bytes": Null(INT),
                "dry_run": BOOL,
                "studies": Null(INT),
                "stored": Null(INT),
                "already_there": Null(INT),
                "failed": Arr(STR),
            }
        ),
    ),
)
