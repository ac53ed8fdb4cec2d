"""Bad input, a full disk and kill -9: the node refuses cleanly and never loses an acknowledged instance."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from storage import synthetic

from .conftest import DCMTK_ENV, IN_CI, parse_storescu, read_only, storescu, tmpfs, wait_for
from .test_store import assert_index_matches_disk, temp_files

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def files_outside_pools(node) -> list[Path]:
    allowed = {
        "node.yaml",
        "index.sqlite",
        "index.sqlite-wal",
        "index.sqlite-shm",
        "node.log",
        "node.lock",
        "index.writelock",
        "migration.lock",
    }
    out = []
    for path in node.dir.rglob("*"):
        if path.is_file() and path.name not in allowed and (node.dir / "pools") not in path.parents:
            out.append(path)
    return out


def _variant(tmp_path: Path, name: str, sop_uid: str, meta_uid: str | None = None) -> Path:
    ds = dcmread(TEST_FILES / "CT_small.dcm")
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = meta_uid if meta_uid is not None else sop_uid
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("bad_uid", ["../../x", "1.2/../3", "1." + "2" * 63, "1.2.03", "1.2.3."])
def test_unsafe_or_invalid_uids_are_refused(node_factory, tmp_path, bad_uid):
    node = node_factory().start()
    path = _variant(tmp_path, "bad", bad_uid)
    results, _ = storescu(node, [path])
    assert list(results.values()) == ["Error: DataSetDoesNotMatchSOPClass"]
    assert node.rows("SELECT count(*) n FROM instances")[0]["n"] == 0
    assert list((node.dir / "pools").rglob("*.dcm")) == []
    assert temp_files(node) == []
    assert files_outside_pools(node) == []
    assert not (tmp_path.parent / "x").exists()


def _send_raw(node, paths: list[Path]) -> list[int | None]:
    """pynetdicom sends each file's bytes as they are (File Meta gives the command's UIDs)."""
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="STORESCU")
        for path in paths:
            meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
            ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established
        statuses = []
        for path in paths:
            rsp = assoc.send_c_store(path)
            statuses.append(getattr(rsp, "Status", None))
        assoc.release()
        return statuses
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = False


def test_command_dataset_mismatch_empty_uid_and_truncation(node_factory, tmp_path):
    node = node_factory().start()
    mismatch = _variant(tmp_path, "mismatch", "1.2.3.4.5", meta_uid="1.2.3.4.6")
    empty = _variant(tmp_path, "empty", "", meta_uid="1.2.3.4.7")
    truncated = TEST_FILES / "MR_truncated.dcm"
    good = TEST_FILES / "CT_small.dcm"
    statuses = _send_raw(node, [mismatch, empty, truncated, good])
    assert statuses[0] == 0xA900  # dataset SOP Instance UID differs from the command's
    assert statuses[1] == 0xA900  # empty SOP Instance UID
    assert statuses[2] == 0xC000  # cut short inside the pixel data: cannot understand
    assert statuses[3] == 0x0000  # and the association still serves
    rows = assert_index_matches_disk(node)
    assert [r["sop_uid"] for r in rows] == [str(dcmread(good).SOPInstanceUID)]
    assert files_outside_pools(node) == []
    [log] = wait_for(lambda: node.rows("SELECT * FROM associations WHERE calling_ae='STORESCU'"), what="log")
    assert (log["instances"], log["failures"]) == (1, 3)


@pytest.fixture
def small_tmpfs(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "2m") as mnt:
        yield mnt


def test_full_disk_answers_out_of_resources_and_recovers(node_factory, tmp_path, small_tmpfs):
    pool = small_tmpfs / "primary"
    node = node_factory(pools=[{"name": "primary", "path": str(pool), "tier": "primary"}]).start()
    filler = small_tmpfs / "filler.bin"
    filler.write_bytes(b"\0" * (1280 * 1024))  # leaves about 700 KiB for the pool
    files = synthetic.write_study(tmp_path / "study", next(synthetic.studies(1)), 10, rows=256, cols=256)
    results, _ = storescu(node, files)
    outcome = [results[str(f)] for f in files]
    assert "Success" in outcome and any("OutOfResources" in r for r in outcome), outcome
    stored = [f for f, r in zip(files, outcome, strict=False) if r == "Success"]
    rows = assert_index_matches_disk(node)  # rows == files, no temp files left
    assert len(rows) == len(stored)
    # placement sees the full filesystem before writing; a write that still runs out says ENOSPC
    assert "No space left" in node.log_text() or "primary: full (" in node.log_text()

    filler.unlink()
    failed = [f for f, r in zip(files, outcome, strict=False) if r != "Success"]
    results, _ = storescu(node, failed)
    assert set(results.values()) == {"Success"}
    assert len(assert_index_matches_disk(node)) == len(files)


def test_kill_9_mid_transfer_loses_no_acknowledged_instance(node_factory, tmp_path):
    node = node_factory().start()
    files = synthetic.write_study(tmp_path / "study", next(synthetic.studies(1)), 200, rows=128, cols=128)
    out_path = tmp_path / "storescu.log"
    with open(out_path, "w") as out:
        sender = subprocess.Popen(
            [
                "storescu",
                "-v",
                "-nh",
                "-aet",
                "STORESCU",
                "-aec",
                node.ae_title,
                "127.0.0.1",
                str(node.port),
                *map(str, files),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        wait_for(lambda: out_path.read_text().count("(Success)") >= 40, timeout=60, what="40 acknowledgements")
        node.kill9()
        sender.wait(timeout=60)
    acknowledged = [f for f, r in parse_storescu(out_path.read_text()).items() if r == "Success"]
    assert 40 <= len(acknowledged) < 200

    node.start()  # recovery runs before the node listens
    rows = {r["sop_uid"]: r for r in assert_index_matches_disk(node)}
    for path in acknowledged:
        sop_uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert sop_uid in rows, f"acknowledged {Path(path).name} lost"
        kept = (node.file(rows[sop_uid])).read_bytes()
        assert hashlib.sha256(kept).hexdigest() == rows[sop_uid]["sha256"]
    # the sender can finish the job after the restart, and nothing is stored twice
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    assert len(assert_index_matches_disk(node)) == 200


@pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="needs root for a read-only bind mount")
def test_read_only_pool_fails_over_to_the_next_pool(node_factory, tmp_path):
    """A pool that refuses writes passes instances to the next pool instead of failing them."""
    node = node_factory()
    with read_only(node.dir / "pools" / "primary"):
        try:
            node.start()
            files = synthetic.write_study(tmp_path / "study", next(synthetic.studies(1)), 3, rows=16, cols=16)
            results, _ = storescu(node, files)
            assert set(results.values()) == {"Success"}
            assert {r["pool"] for r in node.rows("SELECT pool FROM instances")} == {"archive"}
        finally:
            node.stop()
