"""Backups to a `dir` target of a real running node: taken online, restored into a new folder where a node
answers C-FIND and C-GET exactly as the original, incremental by hard links, verified, and refused when partial."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from storage import synthetic

from .agent_support import agent_call
from .conftest import NodeHandle, dataset_bytes, dcmtk, free_port, make_node, storescu
from .qr_support import PYDICOM_TEST_FILES, findscu, send_files


def call(node, method: str, params: dict | None = None, as_user: str | None = None) -> dict:
    done = agent_call(node.config, method, json.dumps(params or {}), as_user=as_user, timeout=300)
    doc = json.loads(done.stdout)
    return doc


def ok(node, method: str, params: dict | None = None) -> dict:
    doc = call(node, method, params)
    assert "error" not in doc, doc
    return doc


def studies(tmp_path: Path, prefix: str, count: int, per: int = 3) -> list[Path]:
    files = []
    for i, spec in enumerate(synthetic.studies(count, prefix=prefix)):
        files += synthetic.write_study(tmp_path / f"{prefix}{i}", spec, per, rows=16, cols=16)
    return files


def index_rows(index: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in conn.execute("SELECT sop_uid, study_uid, size, sha256 FROM instances")}
    finally:
        conn.close()


def get_all(node, study_uids: list[str], out: Path) -> dict[str, bytes]:
    """C-GET of these studies with getscu: SOP Instance UID -> the dataset's bytes as received."""
    out.mkdir(parents=True)
    result = dcmtk(
        "getscu",
        "-S",
        "-aet",
        "STORESCU",
        "-aec",
        node.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID=" + "\\".join(study_uids),
        "127.0.0.1",
        str(node.port),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in out.iterdir()}


def study_count(node) -> int:
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None}, aet="STORESCU")
    assert run.status == 0, run.output[-2000:]
    return len(run.responses)


@pytest.fixture
def node(tmp_path):
    handle = make_node(
        tmp_path / "node",
        ae_title="BKNODE",
        workers=1,
        backups=[{"name": "usb", "type": "dir", "path": str(tmp_path / "usb")}],
    ).start()
    yield handle
    handle.stop()


def test_a_backup_restores_into_a_node_that_answers_the_same(node, tmp_path):
    sent = send_files(node, PYDICOM_TEST_FILES)
    assert sent, "pydicom's test files were stored"
    files = studies(tmp_path, "BK", 4)
    results, proc = storescu(node, files)
    assert set(results.values()) == {"Success"}, proc.stdout[-2000:]

    done = ok(node, "backups.run", {"wait": True})
    backup = done["backup"]
    assert done["state"] == "done" and backup["state"] == "complete" and backup["target"] == "usb"
    original = index_rows(node.index_path)
    assert backup["instances"] == len(original) and backup["copied"] == len(original) and backup["linked"] == 0
    listed = ok(node, "backups.list")
    assert [b["id"] for b in listed["backups"]] == [backup["id"]]
    jobs = ok(node, "queue.list", {"kind": "backup"})["jobs"]
    assert jobs[0]["id"] == done["job_id"] and jobs[0]["state"] == "done"

    # The folder needs no pacsdeck to read: DICOM files, the index, node.yaml, the manifest.
    folder = tmp_path / "usb" / backup["id"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["instances"] == len(original)
    some = next((folder / "files").rglob("*.dcm"))
    assert dcmread(some, stop_before_pixels=True).SOPInstanceUID in original

    into = tmp_path / "restored"
    restored = ok(node, "backups.restore", {"id": backup["id"], "into": str(into)})
    assert restored["instances"] == len(original)
    doc = yaml.safe_load((into / "node.yaml").read_text())
    assert {p["path"] for p in doc["pools"]} == {"pools/primary", "pools/archive"}  # never the original's folders
    doc["port"] = free_port()
    (into / "node.yaml").write_text(yaml.safe_dump(doc))
    again = NodeHandle(dir=into, port=doc["port"], ae_title="BKNODE").start()
    try:
        assert index_rows(again.index_path) == original
        assert study_count(again) == study_count(node)
        uids = sorted({str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files})
        assert get_all(again, uids, tmp_path / "got-restored") == get_all(node, uids, tmp_path / "got-original")
    finally:
        again.stop()


def test_a_second_backup_copies_only_new_instances_and_each_restores_alone(node, tmp_path):
    first_files = studies(tmp_path, "INC", 5, per=4)
    results, _ = storescu(node, first_files)
    assert set(results.values()) == {"Success"}
    first = ok(node, "backups.run", {"wait": True})["backup"]
    new_files = studies(tmp_path, "NEW", 2, per=5)
    results, _ = storescu(node, new_files)
    assert set(results.values()) == {"Success"}
    second = ok(node, "backups.run", {"wait": True})["backup"]

    assert second["copied"] == 10 and second["linked"] == first["instances"] == 20
    before = index_rows(tmp_path / "usb" / first["id"] / "index.sqlite")
    new_bytes = sum(size for sop, (_study, size, _sha) in index_rows(node.index_path).items() if sop not in before)
    manifest = json.loads((tmp_path / "usb" / second["id"] / "manifest.json").read_text())
    assert manifest["copied_bytes"] == new_bytes  # the bytes written are the new instances' only

    # The first backup deleted: the second still holds every file (hard links keep them) and restores alone.
    shutil.rmtree(tmp_path / "usb" / first["id"])
    verified = ok(node, "backups.verify", {"id": second["id"]})
    assert verified["ok"] and verified["checked"] == 30
    restored = ok(node, "backups.restore", {"id": second["id"], "into": str(tmp_path / "r2")})
    assert restored["instances"] == 30
    assert index_rows(tmp_path / "r2" / "index.sqlite") == index_rows(node.index_path)


def test_verify_reports_a_flipped_byte_and_a_deleted_file(node, tmp_path):
    results, _ = storescu(node, studies(tmp_path, "VER", 2, per=3))
    assert set(results.values()) == {"Success"}
    backup = ok(node, "backups.run", {"wait": True})["backup"]
    folder = tmp_path / "usb" / backup["id"]
    victims = sorted((folder / "files").rglob("*.dcm"))[:2]
    data = bytearray(victims[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    victims[0].write_bytes(bytes(data))
    victims[1].unlink()

    result = ok(node, "backups.verify", {"id": backup["id"]})
    assert not result["ok"] and result["damaged"] == 1 and result["missing"] == 1
    names = " ".join(result["problems"])
    for v in victims:
        assert str(v.relative_to(folder)) in names
    listed = ok(node, "backups.list")["backups"][0]
    assert listed["last_verification"]["ok"] is False

    refused = call(node, "backups.restore", {"id": backup["id"], "into": str(tmp_path / "r")})
    assert refused["error"]["data"]["kind"] == "invalid_params"  # the damaged file stops it, named
    assert "does not match the manifest" in refused["error"]["message"] or "missing" in refused["error"]["message"]


def test_a_partial_backup_is_listed_incomplete_and_refused_for_restore(node, tmp_path):
    results, _ = storescu(node, studies(tmp_path, "PAR", 1))
    assert set(results.values()) == {"Success"}
    good = ok(node, "backups.run", {"wait": True})["backup"]
    # What a backup killed half-way leaves: its .partial folder, no manifest.
    partial = tmp_path / "usb" / "BKNODE-20260101T000000Z.partial"
    shutil.copytree(tmp_path / "usb" / good["id"], partial)
    os.unlink(partial / "manifest.json")
    listed = {b["id"]: b for b in ok(node, "backups.list")["backups"]}
    assert listed["BKNODE-20260101T000000Z"]["state"] == "incomplete"
    assert listed[good["id"]]["state"] == "complete"
    refused = call(node, "backups.restore", {"id": "BKNODE-20260101T000000Z", "into": str(tmp_path / "r")})
    assert "incomplete" in refused["error"]["message"]
    assert not (tmp_path / "r").exists()
    assert ok(node, "backups.verify", {"id": good["id"]})["ok"]


def test_roles_a_viewer_cannot_run_and_an_operator_cannot_restore(node, tmp_path):
    for name, role in (("vera", "viewer"), ("otto", "operator")):
        ok(node, "users.add", {"name": name, "role": role})
    assert call(node, "backups.run", {"wait": True}, as_user="vera")["error"]["data"]["kind"] == "forbidden"
    done = call(node, "backups.run", {"wait": True}, as_user="otto")["backup"]
    refused = call(node, "backups.restore", {"id": done["id"], "into": str(tmp_path / "r")}, as_user="otto")
    assert refused["error"]["data"]["kind"] == "forbidden"
    audited = ok(node, "audit.recent", {"method": "backups.run"})["entries"]
    assert [(e["user"], e["result"]) for e in audited] == [("otto", "ok"), ("vera", "forbidden")]


def test_a_node_without_a_backup_target_says_how_to_add_one(tmp_path):
    handle = make_node(tmp_path / "plain", ae_title="PLAIN")
    refused = call(handle, "backups.run", {"wait": True})
    assert refused["error"]["data"]["kind"] == "invalid_params"
    assert "backups: [{name: usb, type: dir" in refused["error"]["message"]


def test_chosen_studies_come_back_into_a_running_node_through_its_ingest_path(node, tmp_path):
    files = studies(tmp_path, "BACK", 2, per=3)
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    backup = ok(node, "backups.run", {"wait": True})["backup"]
    wanted = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    # Another node that reads the same target (a replacement server): the study goes into it.
    other = make_node(
        tmp_path / "other",
        ae_title="OTHER",
        workers=1,
        backups=[{"name": "usb", "type": "dir", "path": str(tmp_path / "usb")}],
    ).start()
    try:
        back = ok(other, "backups.restore", {"id": backup["id"], "study_uids": [wanted]})
        assert (back["studies"], back["stored"], back["already_there"], back["failed"]) == (1, 3, 0, [])
        theirs = {sop: (study, sha) for sop, (study, _size, sha) in index_rows(other.index_path).items()}
        ours = {
            sop: (study, sha) for sop, (study, _size, sha) in index_rows(node.index_path).items() if study == wanted
        }
        assert theirs == ours
        run = findscu(other, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": wanted}, aet="STORESCU")
        assert run.status == 0 and len(run.responses) == 1
        again = ok(other, "backups.restore", {"id": backup["id"], "study_uids": [wanted]})
        assert (again["stored"], again["already_there"]) == (0, 3)  # kept once
        refused = call(other, "backups.restore", {"id": backup["id"], "study_uids": ["1.2.3.999"]})
        assert "holds no study 1.2.3.999" in refused["error"]["message"]
    finally:
        other.stop()


def test_verify_with_a_restore_test_starts_the_restored_node_and_asks_it(node, tmp_path):
    results, _ = storescu(node, studies(tmp_path, "RTEST", 4, per=3))
    assert set(results.values()) == {"Success"}
    backup = ok(node, "backups.run", {"wait": True})["backup"]
    result = ok(node, "backups.verify", {"id": backup["id"], "restore_test": True})
    test = result["restore_test"]
    assert result["ok"] and test["ok"], result
    assert test["studies"] == test["studies_found"] == 4
    assert test["instances_compared"] == 9 and test["instances_mismatched"] == 0  # 3 studies sampled, 3 each
    assert not list(node.dir.glob("restore-test-*"))  # the scratch node and its folder are gone
    listed = ok(node, "backups.list")["backups"][0]["last_verification"]
    assert listed["ok"] and listed["restore_test"]["studies_found"] == 4
    status = ok(node, "node.status")["backups"]
    assert [(s["target"], s["last_verified_ok"]) for s in status] == [("usb", True)]
    assert status[0]["last_success_at"] == backup["finished_at"]
