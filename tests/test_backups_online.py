"""Backups while the node works: a migration and an overwrite during the copy are followed, never missed or
mixed up; a backup killed with SIGKILL is left incomplete while the one before it still verifies."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest
from pydicom import dcmread

from storage import synthetic
from storage.backups.layout import read_entries
from storage.backups.restore import restore_node
from storage.backups.take import take_dir
from storage.backups.verify import verify
from storage.config.settings import load_config
from storage.index.database import Index

from .conftest import make_node, pacsdeck, storescu
from .test_backups import call, index_rows, ok, studies


def backup_process(node, job_id: int) -> psutil.Process:
    """The process backups.run started for this job (its command line names our node.yaml and the job)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if "storage.backups" in cmd and str(node.config) in cmd and cmd[cmd.index("--job") + 1] == str(job_id):
                return p
    raise AssertionError(f"no backup process for job {job_id}")


@pytest.fixture
def node(tmp_path):
    handle = make_node(
        tmp_path / "node",
        ae_title="ONLINE",
        workers=1,
        duplicates="overwrite",
        backups=[{"name": "usb", "type": "dir", "path": str(tmp_path / "usb")}],
    ).start()
    yield handle
    handle.stop()


def read_order(path) -> tuple[str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def test_a_migration_and_an_overwrite_during_the_backup_are_followed(node, tmp_path):
    files = studies(tmp_path, "MIG", 3, per=12)  # more than the copy threads' first window of 16
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    study_uids = sorted({str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files})
    # The same SOP instance again, its pixels changed: with `duplicates: overwrite` it replaces the stored one.
    # The instance the backup reads last (it goes by study, then SOP Instance UID): still to come at the hook.
    last = max(files, key=read_order)
    changed = dcmread(last)
    changed.PixelData = bytes(b ^ 0xFF for b in changed.PixelData)
    replacement = tmp_path / "replacement.dcm"
    changed.save_as(replacement, enforce_file_format=True)

    config = load_config(node.config)
    index = Index(config.index)
    done_during: list[str] = []

    def during_the_copy(instances: int, nbytes: int) -> None:
        """At the first progress report, while the backup still has files to read: move every study, overwrite one."""
        if done_during:
            return
        args = ["node", "migrate", "--config", str(node.config), "--target", "archive", "--run"]
        for uid in study_uids:
            args += ["--study", uid]
        assert pacsdeck(*args).returncode == 0
        results, _ = storescu(node, [replacement])
        assert set(results.values()) == {"Success"}
        done_during.append("yes")

    try:
        folder, manifest = take_dir(config, index, config.backups[0], progress=during_the_copy)
    finally:
        index.close()
    assert done_during and manifest.instances == 36 and manifest.gone == 0
    # The files read after the migration were followed to where it put them (one of them replaced, too).
    assert manifest.followed >= 1

    live = index_rows(node.index_path)
    backed_up = {e.sop_uid: (e.size, e.sha256) for e in read_entries(folder)}
    # The backup holds what the node holds now: the migrated bytes and the replacement, none of them mixed.
    assert backed_up == {sop: (size, sha) for sop, (_study, size, sha) in live.items()}
    assert verify(folder).ok
    restored = restore_node(folder, tmp_path / "restored")
    assert restored.instances == 36
    assert index_rows(tmp_path / "restored" / "index.sqlite") == live


def test_a_killed_backup_is_incomplete_and_the_previous_one_still_verifies(node, tmp_path):
    results, _ = storescu(node, studies(tmp_path, "OLD", 1, per=2))
    assert set(results.values()) == {"Success"}
    previous = ok(node, "backups.run", {"wait": True})["backup"]
    big = []
    for i, spec in enumerate(synthetic.studies(2, prefix="BIG")):
        big += synthetic.write_study(tmp_path / f"big{i}", spec, 60, rows=512, cols=512)
    results, _ = storescu(node, big)
    assert set(results.values()) == {"Success"}

    # backups.run starts the job in its own process and answers at once; that process is killed with SIGKILL
    # once it has copied a few files.
    started = ok(node, "backups.run", {})
    assert started["state"] == "running"
    proc = backup_process(node, started["job_id"])
    partial = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.is_running():
        partial = next((p for p in (tmp_path / "usb").glob("*.partial")), None)
        listed = partial / "instances.jsonl" if partial is not None else None
        if listed is not None and listed.exists() and listed.read_text().count("\n") >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert partial is not None and partial.exists(), "the backup was still running when killed"
    assert not (partial / "manifest.json").exists()

    listed = {b["id"]: b for b in ok(node, "backups.list")["backups"]}
    killed = partial.name.removesuffix(".partial")
    assert listed[killed]["state"] == "incomplete" and listed[previous["id"]]["state"] == "complete"
    refused = call(node, "backups.restore", {"id": killed, "into": str(tmp_path / "r")})
    assert "incomplete" in refused["error"]["message"] and not (tmp_path / "r").exists()
    assert ok(node, "backups.verify", {"id": previous["id"]})["ok"]

    # The next backup links from the complete one, never from the partial, and is whole.
    again = ok(node, "backups.run", {"wait": True})["backup"]
    assert again["linked"] == previous["instances"] and again["instances"] == previous["instances"] + 120
    assert ok(node, "backups.verify", {"id": again["id"]})["ok"]
    manifest = json.loads((tmp_path / "usb" / again["id"] / "manifest.json").read_text())
    assert manifest["previous"] == previous["id"]
    jobs = {j["id"]: j for j in ok(node, "queue.list", {"kind": "backup"})["jobs"]}
    killed_job = jobs[started["job_id"]]
    assert killed_job["state"] == "failed" and "interrupted" in killed_job["last_error"]
