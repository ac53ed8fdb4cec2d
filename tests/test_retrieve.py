"""C-MOVE and C-GET with DCMTK movescu/getscu against a real node: bytes as stored, statuses, access control."""

from __future__ import annotations

import json
import re
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from storage import synthetic

from .agent_support import dcmqrscp_factory  # noqa: F401 - fixture
from .conftest import dataset_bytes, free_port, pacsdeck, wait_for
from .qr_support import PYDICOM_TEST_FILES, expected_instances, final_status, run_tool, send_files

# One pydicom test file per stored transfer syntax, so retrieval is shown to keep each as stored.
# (Distinct SOP Instance UIDs: several pydicom files are one instance in different syntaxes.)
SYNTAX_SAMPLES = [
    "rtplan.dcm",
    "ExplVR_BigEnd.dcm",
    "image_dfl.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "CT_small.dcm",
]
_FAILED_LIST = re.compile(r"\(0008,0058\) UI \[([^\]]*)\]")


@pytest.fixture
def setup(node_factory, storescp_factory, tmp_path):
    yield from _retrieve_setup(node_factory, storescp_factory, tmp_path)


@pytest.fixture
def setup_one_process(node_factory, storescp_factory, tmp_path):
    """The same, served by the node process alone (`setup`'s node forks one worker per core)."""
    yield from _retrieve_setup(node_factory, storescp_factory, tmp_path, workers=1)


def _retrieve_setup(node_factory, storescp_factory, tmp_path, **settings):
    scp = storescp_factory()
    idle = socket.socket()  # a port that must never see a connection
    idle.bind(("127.0.0.1", 0))
    idle.listen()
    idle.setblocking(False)
    aets = [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "MOVESCU", "host": "127.0.0.1", "operations": ["find", "move", "get"]},
        {"ae_title": "GETSCU", "host": "127.0.0.1", "operations": ["get"]},
        {"ae_title": "FINDONLY", "host": "127.0.0.1", "operations": ["find"]},
        {
            "ae_title": scp.ae_title,
            "host": "127.0.0.1",
            "port": scp.port,
            "operations": ["store"],
            "move_destination": True,
        },
        {"ae_title": "NOTDEST", "host": "127.0.0.1", "port": idle.getsockname()[1], "move_destination": False},
    ]
    node = node_factory(aets=aets, **settings).start()
    spec = synthetic.StudySpec(patient_id="RT1", patient_name="Retrieve^Ten", study_uid=generate_uid())
    study = synthetic.write_study(tmp_path / "study", spec, 10, rows=16, cols=16, series=2)
    samples = [p for p in PYDICOM_TEST_FILES if p.name in SYNTAX_SAMPLES]
    sent = send_files(node, study + samples)
    assert set(study) <= set(sent) and len(sent) >= len(study) + 6, sorted(set(study + samples) - set(sent))
    yield node, scp, idle, spec.study_uid, expected_instances(sent)
    idle.close()


def movescu(node, keys: dict, *, dest: str, aet: str = "MOVESCU", model: str = "study"):
    args = ["-d", "-S" if model == "study" else "-P", "-aet", aet, "-aec", node.ae_title, "-aem", dest]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    proc = run_tool("movescu", *args, "127.0.0.1", str(node.port))
    return final_status(proc.stdout + proc.stderr), proc.stdout + proc.stderr


def _stored_bytes(node) -> dict[str, bytes]:
    return {r["sop_uid"]: dataset_bytes(node.file(r)) for r in node.rows("SELECT * FROM instances")}


def _received(folder: Path) -> dict[str, bytes]:
    return {
        str(dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID): dataset_bytes(p)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_move_sends_every_instance_byte_identical(setup):
    node, scp, _, study_uid, instances = setup
    before = {r["sop_uid"]: r["last_access"] for r in node.rows("SELECT sop_uid, last_access FROM instances")}
    code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=scp.ae_title)
    assert code == 0x0000, output[-3000:]
    assert "Remaining Suboperations" in output or "Number of Remaining Sub-operations" in output  # pending counts
    stored = _stored_bytes(node)
    received = wait_for(lambda: len(got := _received(scp.dir)) == 10 and got, what="10 instances at storescp")
    assert received == {uid: stored[uid] for uid in received}
    assert set(received) == {uid for uid, i in instances.items() if i["StudyInstanceUID"] == study_uid}
    after = {r["sop_uid"]: r["last_access"] for r in node.rows("SELECT sop_uid, last_access FROM instances")}
    assert all(after[uid] > before[uid] for uid in received)

    # Every other stored syntax (implicit, big endian, deflated, JPEG, RLE, JPEG 2000, JPEG-LS), by a UID list
    others = sorted({i["StudyInstanceUID"] for i in instances.values()} - {study_uid})
    code, output = movescu(
        node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "\\".join(others)}, dest=scp.ae_title
    )
    assert code == 0x0000, output[-3000:]
    received = wait_for(lambda: len(got := _received(scp.dir)) == len(stored) and got, what="every instance")
    assert received == stored


def test_move_to_unknown_or_unregistered_destination(setup):
    node, scp, idle, study_uid, _ = setup
    for dest in ("NOSUCHAE", "NOTDEST", "STORESCU"):  # unknown; registered but not a destination; no port
        code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=dest)
        assert code == 0xA801, (dest, output[-2000:])
    with pytest.raises(BlockingIOError):
        idle.accept()  # NOTDEST's port never saw a connection
    assert list(scp.dir.iterdir()) == []


def test_move_partial_failure_lists_failed_instances(setup):
    node, scp, _, study_uid, _ = setup
    rows = node.rows("SELECT * FROM instances WHERE study_uid=? ORDER BY sop_uid", study_uid)
    node.file(rows[3]).unlink()  # a file lost from its pool
    code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=scp.ae_title)
    assert code == 0xB000, output[-3000:]
    assert _FAILED_LIST.findall(output)[-1] == rows[3]["sop_uid"]
    wait_for(lambda: len(_received(scp.dir)) == 9, what="the 9 instances that exist")


def test_move_cancelled_midway_stops_sending(setup, storescp_factory):
    node, _, _, study_uid, _ = setup
    slow = storescp_factory("slow", ae_title="SLOWSCP", extra=("--sleep-after", "1"))  # 1 s per sub-operation
    _register(node, slow.ae_title, slow.port)
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    proc = run_tool(
        "movescu",
        "-d",
        "-S",
        "--cancel",
        "2",
        "-aet",
        "MOVESCU",
        "-aec",
        node.ae_title,
        "-aem",
        slow.ae_title,
        *keys,
        "127.0.0.1",
        str(node.port),
    )
    output = proc.stdout + proc.stderr
    assert final_status(output) == 0xFE00, output[-3000:]  # Cancel, with the counts so far
    arrived = len(_received(slow.dir))
    assert 2 <= arrived < 10, output[-3000:]
    assert f"cancelled after {arrived} of 10" in node.log_text()


def test_move_names_the_requesting_ae_as_move_originator(setup):
    """PS3.7 9.1.1.1: each C-STORE of a C-MOVE carries the AE title and message ID of the C-MOVE's requester."""
    node, _, _, study_uid, _ = setup
    seen = []

    def on_store(event):
        seen.append((event.request.MoveOriginatorApplicationEntityTitle, event.request.MoveOriginatorMessageID))
        return 0x0000

    code, output = _move_to_pynetdicom_destination(node, "PYDEST", on_store, study_uid)
    assert code == 0x0000, output[-3000:]
    assert len(seen) == 10 and {aet for aet, _ in seen} == {"MOVESCU"}, seen
    assert len({msg_id for _, msg_id in seen}) == 1


def test_get_cancelled_midway_stops_sending(setup):
    """A C-CANCEL sent while the second instance arrives: that one completes, no third is sent."""
    node, _, _, study_uid, _ = setup
    scu = AE(ae_title="GETSCU")
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    received = []

    def on_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        if len(received) == 2:
            event.assoc.send_c_cancel(1, context_id=get_context)
        return 0x0000

    assoc = scu.associate(
        "127.0.0.1",
        node.port,
        ae_title=node.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    get_context = next(
        cx.context_id
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
    )
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study_uid
    statuses = [
        s.Status
        for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=1)
        if s is not None and "Status" in s
    ]
    assoc.release()
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses]
    assert len(received) == 2
    wait_for(lambda: "cancelled after 2 of 10" in node.log_text(), what="the cancel in the node log")


def test_move_and_get_refused_without_permission(setup):
    node, scp, _, study_uid, _ = setup
    code, output = movescu(
        node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=scp.ae_title, aet="FINDONLY"
    )
    assert code == 0x0124, output[-2000:]  # Refused: Not Authorized, and no connection to the destination
    with tempfile.TemporaryDirectory() as out:
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "FINDONLY",
            "-aec",
            node.ae_title,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(node.port),
        )
        assert final_status(proc.stdout + proc.stderr) == 0x0124
        assert list(Path(out).iterdir()) == []
    assert list(scp.dir.iterdir()) == []


def test_get_study_files_identical_and_unconvertible_syntax_fails(setup):
    node, _, _, study_uid, instances = setup
    stored = _stored_bytes(node)
    with tempfile.TemporaryDirectory() as out:
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            node.ae_title,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(node.port),
        )
        assert final_status(proc.stdout + proc.stderr) == 0x0000, (proc.stdout + proc.stderr)[-3000:]
        received = _received(Path(out))
    assert len(received) == 10 and received == {uid: stored[uid] for uid in received}

    # getscu accepts only explicit VR little endian by default (the first syntax it proposes): the
    # implicit-VR RT Plan is converted losslessly, the JPEG instance cannot be and fails alone.
    jpeg = next(uid for uid, i in instances.items() if i["path"].name == "SC_rgb_jpeg_dcmtk.dcm")
    implicit = next(uid for uid, i in instances.items() if i["path"].name == "rtplan.dcm")
    uids = {uid: instances[uid]["StudyInstanceUID"] for uid in (jpeg, implicit)}
    with tempfile.TemporaryDirectory() as out:
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            node.ae_title,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=" + "\\".join(sorted(set(uids.values()))),
            "127.0.0.1",
            str(node.port),
        )
        output = proc.stdout + proc.stderr
        received = _received(Path(out))
    assert final_status(output) == 0xB000, output[-3000:]
    assert "Number of Failed Suboperations    : 1" in output, output[-3000:]  # getscu prints no identifier
    assert implicit in received and jpeg not in received
    assert received[implicit] != stored[implicit]  # re-encoded as explicit VR: same elements, other bytes
    assert free_port()  # the node is still serving ports normally (no leaked listener)


def _register(node, title: str, port: int) -> None:
    pacsdeck(
        "agent",
        "call",
        "aets.add",
        "--params",
        json.dumps({"ae_title": title, "host": "127.0.0.1", "port": port, "move_destination": True}),
        "--config",
        str(node.config),
        check=True,
    )


def _aborting_at_the_third(arrived: list):
    """An EVT_C_STORE handler that notes each instance and aborts the association at the third."""

    def on_store(event):
        arrived.append(event.request.AffectedSOPInstanceUID)
        if len(arrived) == 3:
            event.assoc.abort()
        return 0x0000

    return on_store


def _move_to_pynetdicom_destination(node, title: str, on_store, study_uid: str):
    """movescu of the study to a pynetdicom storage SCP registered as `title`: (status, output)."""
    dest = AE(ae_title=title)
    dest.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = dest.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        _register(node, title, port)
        return movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=title)
    finally:
        server.shutdown()


def _get_scu(node, on_store, study_uid: str):
    """A pynetdicom C-GET of the study; returns (association, list of (status Dataset) as they came)."""
    scu = AE(ae_title="GETSCU")
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate(
        "127.0.0.1",
        node.port,
        ae_title=node.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study_uid
    return assoc, assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=1)


def test_get_pending_responses_count_the_sub_operations(setup):
    """Each pending C-GET response carries the counts so far; the final one no Remaining (PS3.4 C.4.3.1.3)."""
    node, _, _, study_uid, _ = setup
    assoc, responses = _get_scu(node, lambda event: 0x0000, study_uid)
    seen = [
        (
            s.Status,
            s.get("NumberOfRemainingSuboperations"),
            s.NumberOfCompletedSuboperations,
            s.NumberOfFailedSuboperations,
            s.NumberOfWarningSuboperations,
        )
        for s, _ in responses
    ]
    assoc.release()
    assert seen[:-1] == [(0xFF00, 10 - n, n, 0, 0) for n in range(1, 11)], seen
    assert seen[-1] == (0x0000, None, 10, 0, 0), seen


def test_get_requestor_aborting_midway_leaves_the_node_serving(setup):
    node, _, _, study_uid, _ = setup
    received = []
    assoc, responses = _get_scu(node, _aborting_at_the_third(received), study_uid)
    list(responses)  # ends when the association does
    assert assoc.is_aborted and 3 <= len(received) < 10
    wait_for(lambda: "association ended after" in node.log_text(), what="the node noticing the abort")
    with tempfile.TemporaryDirectory() as out:  # the next retrieve is served in full
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            node.ae_title,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(node.port),
        )
        assert final_status(proc.stdout + proc.stderr) == 0x0000, (proc.stdout + proc.stderr)[-3000:]
        assert len(list(Path(out).iterdir())) == 10


def test_move_requestor_aborting_midway_stops_the_transfer(setup, storescp_factory):
    """The C-MOVE's requestor goes away: the node stops after the instance in flight, releases its
    association to the destination, and serves the next C-MOVE in full."""
    node, scp, _, study_uid, _ = setup
    slow = storescp_factory("slow", ae_title="SLOWSCP", extra=("--sleep-after", "1"))
    _register(node, slow.ae_title, slow.port)
    scu = AE(ae_title="MOVESCU")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.2.2.2")  # Study Root Q/R MOVE
    assoc = scu.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study_uid
    for status, _ in assoc.send_c_move(query, slow.ae_title, "1.2.840.10008.5.1.4.1.2.2.2"):
        if status is not None and status.Status == 0xFF00:
            assoc.abort()  # after the first instance arrived
            break
    wait_for(lambda: "the requestor's association ended" in node.log_text(), what="the node noticing the abort")
    wait_for(
        lambda: "C-MOVE from MOVESCU to SLOWSCP cancelled after" in node.log_text(),
        timeout=30,
        what="the transfer stopping",
    )
    assert len(_received(slow.dir)) < 10
    code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest=scp.ae_title)
    assert code == 0x0000, output[-3000:]
    wait_for(lambda: len(_received(scp.dir)) == 10, what="the 10 instances at the destination")


def test_move_to_a_destination_that_is_down(setup):
    node, _, _, study_uid, _ = setup
    _register(node, "DOWNSCP", free_port())  # registered, nothing listens there
    code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest="DOWNSCP")
    assert code == 0xA801, output[-2000:]
    assert "cannot associate with DOWNSCP" in output, output[-2000:]  # the ErrorComment begins the reason
    assert "refused the connection: nothing listens there" in node.log_text()  # the log has all of it


def test_move_to_a_destination_that_rejects_says_why(setup, dcmqrscp_factory):
    node, _, _, study_uid, _ = setup
    qr = dcmqrscp_factory("QRSCP")  # it rejects called AE titles it does not know
    _register(node, "WRONGNAME", qr.port)
    code, output = movescu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, dest="WRONGNAME")
    assert code == 0xA801, output[-2000:]
    log_text = node.log_text()
    assert "association rejected by 127.0.0.1:" in log_text and "Called AE title not recognised" in log_text


def test_move_destination_aborting_midway_fails_the_rest(setup):
    """The destination aborts during the third C-STORE: two completed, the other eight failed and listed."""
    node, _, _, study_uid, instances = setup
    arrived = []
    code, output = _move_to_pynetdicom_destination(node, "ABORTER", _aborting_at_the_third(arrived), study_uid)
    assert code == 0xB000, output[-3000:]
    assert _last_count(output, "Completed") == 2 and _last_count(output, "Failed") == 8, output[-3000:]
    failed = set(_FAILED_LIST.findall(output)[-1].split("\\"))
    study = {uid for uid, i in instances.items() if i["StudyInstanceUID"] == study_uid}
    assert len(failed) == 8 and failed <= study and not failed & set(arrived[:2])


def _last_count(output: str, which: str) -> int:
    """The last '<which> Suboperations : n' in a DCMTK tool's output (movescu -d, getscu summary)."""
    found = re.findall(rf"{which} Suboperations\s*: (\d+)", output)
    assert found, f"no {which} Suboperations in the output"
    return int(found[-1])


@pytest.mark.parametrize("served_by", ["setup", "setup_one_process"])
def test_concurrent_retrieves_each_get_the_whole_study(served_by, request, tmp_path):
    """Six getscu and three movescu at once: shared per-process state (remembered negotiations,
    pooled index connections, sockets held by retrieving threads) keeps every transfer whole,
    in forked workers or in one process."""
    node, scp, _, study_uid, _ = request.getfixturevalue(served_by)
    stored = _stored_bytes(node)
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}

    def get(n: int):
        out = tmp_path / f"get{n}"
        out.mkdir()
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            node.ae_title,
            "-od",
            str(out),
            *[a for k, v in keys.items() for a in ("-k", f"{k}={v}")],
            "127.0.0.1",
            str(node.port),
        )
        return final_status(proc.stdout + proc.stderr), _received(out), (proc.stdout + proc.stderr)[-2000:]

    with ThreadPoolExecutor(9) as pool:
        gets = [pool.submit(get, n) for n in range(6)]
        moves = [pool.submit(movescu, node, keys, dest=scp.ae_title) for _ in range(3)]
    for future in gets:
        code, received, output = future.result()
        assert code == 0x0000, output
        assert len(received) == 10 and received == {uid: stored[uid] for uid in received}
    for future in moves:
        code, output = future.result()
        assert code == 0x0000 and _last_count(output, "Completed") == 10, output[-3000:]
    assert _received(scp.dir) == {uid: stored[uid] for uid in _received(scp.dir)}


@pytest.mark.parametrize("operation", ["move", "get"])
def test_retrieve_with_an_identifier_that_does_not_fit_the_model(setup, operation, tmp_path):
    """Study Root has no PATIENT level: refused with 0xA900 and its reason, nothing sent anywhere."""
    node, scp, _, _, _ = setup
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": "RT1"}
    if operation == "move":
        code, output = movescu(node, keys, dest=scp.ae_title)
    else:
        proc = run_tool(
            "getscu",
            "-d",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            node.ae_title,
            "-od",
            str(tmp_path),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=RT1",
            "127.0.0.1",
            str(node.port),
        )
        code, output = final_status(proc.stdout + proc.stderr), proc.stdout + proc.stderr
        assert not [p for p in tmp_path.iterdir() if p.is_file()]
    assert code == 0xA900, output[-2000:]
    assert "QueryRetrieveLevel 'PATIENT' is not one of" in output, output[-2000:]  # the ErrorComment
    assert list(scp.dir.iterdir()) == []
