"""C-ECHO and C-STORE against a real node process with DCMTK: real files, concurrency, duplicates."""

from __future__ import annotations

import hashlib
import subprocess
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from storage import synthetic

from .conftest import (
    DCMTK_ENV,
    STORESCU_PROPOSE,
    dataset_bytes,
    dcmtk,
    parse_storescu,
    require_tool,
    storescu,
    wait_for,
)

PYDICOM_TEST_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm"))


def pool_files(node) -> list[Path]:
    return node.pool_files()


def temp_files(node) -> list[Path]:
    return node.temp_files()


def assert_index_matches_disk(node) -> list:
    """Every row has its file with the recorded size and checksum, and every file has a row."""
    rows = node.rows("SELECT * FROM instances")
    for row in rows:
        path = node.file(row)
        data = path.read_bytes()
        assert len(data) == row["size"], row["sop_uid"]
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row["sop_uid"]
    assert len(pool_files(node)) == len(rows)
    assert temp_files(node) == []
    return rows


def test_echo_and_association_log(node_factory):
    node = node_factory().start()
    result = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", node.ae_title, "127.0.0.1", str(node.port))
    assert result.returncode == 0, result.stderr
    rows = wait_for(lambda: node.rows("SELECT * FROM associations WHERE calling_ae='ECHOSCU'"), what="log row")
    assert rows[0]["result"] == "released"
    assert rows[0]["called_ae"] == node.ae_title
    assert rows[0]["peer_host"] == "127.0.0.1"


def _transfer_syntax(path: Path) -> str | None:
    try:
        return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - files without meta or unreadable: storescu decides
        return None


def _same_content(kept, original, transfer_syntax: str) -> bool:
    """Equal element by element, allowing for what storescu itself changes while it encodes."""
    if "PixelData" in original and UID(transfer_syntax).is_compressed:
        # storescu rebuilds encapsulated pixel data (offset tables, fragments) as it sends;
        # test_raw_pydicom_files_are_kept_byte_for_byte proves those bytes are kept as received.
        for ds in (kept, original):
            ds.pop("PixelData", None)
    for ds in (kept, original):  # storescu drops group lengths and trailing padding
        for tag in [t for t in ds.keys() if t.element == 0 or t == 0xFFFCFFFC]:  # noqa: SIM118 - iterating a pydicom Dataset yields its elements, .keys() its tags
            del ds[tag]
    return kept == original


def _uids_valid(ds) -> bool:
    """An independent oracle (pydicom's UID syntax check) for whether the node should refuse."""
    for kw in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(kw)
        if not value or not UID(str(value)).is_valid:
            return False
    return True


def test_store_every_pydicom_test_file(node_factory, capsys):
    """Every file DCMTK can send is stored and indexed; what the node refuses is really defective."""
    node = node_factory().start()
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in PYDICOM_TEST_FILES:
        groups[STORESCU_PROPOSE.get(_transfer_syntax(path) or "", "-xe")].append(path)
    outcome: dict[str, str] = {}
    for flag, files in groups.items():
        results, _ = storescu(node, files, "-R", flag)
        outcome.update(results)

    stored, refused, unsendable = [], {}, []
    for path in PYDICOM_TEST_FILES:
        result = outcome.get(str(path))
        if result == "Success":
            stored.append(path)
        elif result is None or result == "not answered":
            unsendable.append(path.name)  # storescu could not read or transcode it: never reached us
        else:
            refused[path.name] = result
    with capsys.disabled():
        print(
            f"\npydicom test files: {len(stored)} stored, {len(refused)} refused by the node, "
            f"{len(unsendable)} not sendable by storescu"
        )
        for name, why in sorted(refused.items()):
            print(f"  refused  {name}: {why}")
        for name in unsendable:
            print(f"  unsent   {name}")

    assert stored, "storescu sent nothing"
    rows = {r["sop_uid"]: r for r in assert_index_matches_disk(node)}
    by_uid: dict[str, list[Path]] = defaultdict(list)
    for path in stored:  # a few test files share a SOP Instance UID: the first one sent is kept
        by_uid[str(dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)].append(path)
    for sop_uid, paths in by_uid.items():
        row = rows[sop_uid]
        kept_path = node.file(row)
        assert any(_same_content(dcmread(kept_path), dcmread(p, force=True), row["transfer_syntax"]) for p in paths), (
            f"{[p.name for p in paths]}: dataset changed"
        )
    assert len(rows) == len(by_uid)
    for name, why in refused.items():
        ds = dcmread(next(p for p in PYDICOM_TEST_FILES if p.name == name), force=True)
        assert not _uids_valid(ds), f"{name} refused without a defect: {why}"


def test_raw_pydicom_files_are_kept_byte_for_byte(node_factory, monkeypatch):
    """pynetdicom sends a file's dataset bytes untouched (no decode); the node must keep them exactly,
    compressed syntaxes included (JPEG, JPEG-LS, JPEG 2000, RLE, deflated, big endian)."""
    node = node_factory().start()
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)  # send file bytes, no decode
    ae = AE(ae_title="STORESCU")
    candidates = []
    for path in PYDICOM_TEST_FILES:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - no File Meta: cannot be sent raw
            continue
        if (
            _uids_valid(ds)
            and "TransferSyntaxUID" in ds.file_meta
            and "MediaStorageSOPInstanceUID" in ds.file_meta
            and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        ):
            candidates.append((path, ds))
    syntaxes = sorted({str(ds.file_meta.TransferSyntaxUID) for _, ds in candidates})
    assert len(syntaxes) >= 8, syntaxes
    sent = []
    for start in range(0, len(candidates), 100):
        chunk = candidates[start : start + 100]
        ae.requested_contexts = []
        for cx in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in chunk})[:128]:
            ae.add_requested_context(*cx)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established
        for path, ds in chunk:
            rsp = assoc.send_c_store(path)
            if getattr(rsp, "Status", None) == 0x0000:
                sent.append((path, ds))
            else:
                assert rsp is not None and rsp.Status in (0xA900, 0xC000), (path.name, rsp)
        assoc.release()
    rows = {r["sop_uid"]: r for r in assert_index_matches_disk(node)}
    assert {str(ds.file_meta.TransferSyntaxUID) for _, ds in sent} == set(syntaxes)
    by_uid: dict[str, list[Path]] = defaultdict(list)  # some test files share a SOP Instance UID
    for path, ds in sent:
        by_uid[str(ds.SOPInstanceUID)].append(path)
    assert len(rows) == len(by_uid)
    for sop_uid, paths in by_uid.items():
        row = rows[sop_uid]
        kept = dataset_bytes(node.file(row))
        assert kept in [dataset_bytes(p) for p in paths], f"{[p.name for p in paths]}: bytes changed"


def test_four_parallel_senders_store_exactly_1000(node_factory, tmp_path):
    require_tool("storescu")
    node = node_factory().start()
    batches = [
        synthetic.write_study(tmp_path / f"s{i}", spec, 250, rows=64, cols=64, series=2)
        for i, spec in enumerate(synthetic.studies(4))
    ]
    procs = [
        subprocess.Popen(
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
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=DCMTK_ENV,
        )
        for files in batches
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for out in outputs:
        results = parse_storescu(out)
        assert len(results) == 250 and set(results.values()) == {"Success"}
    rows = assert_index_matches_disk(node)
    assert len(rows) == 1000
    assert node.rows("SELECT count(*) n FROM studies")[0]["n"] == 4
    assert node.rows("SELECT count(*) n FROM series")[0]["n"] == 8


def test_same_study_from_ten_senders_five_times_keeps_one_copy(node_factory, tmp_path):
    require_tool("storescu")
    node = node_factory().start()
    spec = next(synthetic.studies(1))
    files = synthetic.write_study(tmp_path / "study", spec, 20, rows=32, cols=32)
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-v",
                "-nh",
                "--repeat",
                "5",
                "-aet",
                "STORESCU",
                "-aec",
                node.ae_title,
                "127.0.0.1",
                str(node.port),
                *map(str, files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=DCMTK_ENV,
        )
        for _ in range(10)
    ]
    for p in procs:
        out = p.communicate(timeout=300)[0]
        assert p.returncode == 0, out[-2000:]
        assert "Error" not in out
    rows = assert_index_matches_disk(node)
    assert len(rows) == 20
    originals = {str(dcmread(f).SOPInstanceUID): f.read_bytes() for f in files}
    for row in rows:
        kept = dcmread(node.file(row))
        assert kept.PixelData == dcmread(__import__("io").BytesIO(originals[row["sop_uid"]])).PixelData


def test_overwrite_policy_replaces_atomically(node_factory, tmp_path):
    node = node_factory(duplicates="overwrite").start()
    spec = next(synthetic.studies(1))
    [path] = synthetic.write_study(tmp_path / "a", spec, 1, rows=16, cols=16)
    results, _ = storescu(node, [path])
    assert list(results.values()) == ["Success"]
    ds = dcmread(path)
    ds.PatientName = "Corrected^Name"
    ds.save_as(path)
    results, _ = storescu(node, [path])
    assert list(results.values()) == ["Success"]
    [row] = assert_index_matches_disk(node)
    assert row["sha256"] == hashlib.sha256((node.file(row)).read_bytes()).hexdigest()
    assert dcmread(node.file(row)).PatientName == "Corrected^Name"
    assert node.rows("SELECT patient_name FROM patients")[0]["patient_name"] == "Corrected^Name"


def test_keep_policy_keeps_first_copy(node_factory, tmp_path):
    node = node_factory().start()
    spec = next(synthetic.studies(1))
    [path] = synthetic.write_study(tmp_path / "a", spec, 1, rows=16, cols=16)
    first = path.read_bytes()
    storescu(node, [path])
    ds = dcmread(path)
    ds.PatientName = "Other^Name"
    ds.save_as(path)
    results, _ = storescu(node, [path])
    assert list(results.values()) == ["Success"]
    [row] = assert_index_matches_disk(node)
    kept = (node.file(row)).read_bytes()
    assert dcmread(__import__("io").BytesIO(kept)).PatientName == dcmread(__import__("io").BytesIO(first)).PatientName


@pytest.mark.parametrize("syntax_flag", ["-xi", "-xb", "-xd"])
def test_uncompressed_and_deflated_syntaxes_are_stored_as_sent(node_factory, tmp_path, syntax_flag):
    """storescu transcodes to the syntax it proposes; the node keeps exactly that encoding."""
    node = node_factory().start()
    spec = next(synthetic.studies(1))
    files = synthetic.write_study(tmp_path / "a", spec, 3, rows=32, cols=32)
    results, _ = storescu(node, files, "+C", syntax_flag)  # one context, the flag's syntax first
    assert set(results.values()) == {"Success"}
    expected = {v: k for k, v in STORESCU_PROPOSE.items()}[syntax_flag]
    for row in assert_index_matches_disk(node):
        kept = dcmread(node.file(row))
        assert kept.file_meta.TransferSyntaxUID == expected
        assert row["transfer_syntax"] == expected
        assert kept.file_meta.SourceApplicationEntityTitle == "STORESCU"
        assert kept.file_meta.MediaStorageSOPInstanceUID == kept.SOPInstanceUID == row["sop_uid"]
        assert kept.file_meta.MediaStorageSOPClassUID == kept.SOPClassUID
        assert kept.file_meta.ImplementationVersionName.startswith("PACSDECK")
