"""The listener against hostile and slow peers: every malformed input answered at once, no slot held."""

from __future__ import annotations

import select
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import zlib

import psutil
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import encode

from tests.conftest import dcmtk, free_port, wait_for
from tests.raw_peer import (
    CT_IMAGE_STORAGE,
    DEFLATED_LE,
    IMPLICIT_LE,
    VERIFICATION,
    RawPeer,
    abort_reason,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    pdata,
    pdu,
)

# Deadlines short enough for tests; each one is what the node must meet, not a sleep.
LIMITS = {
    "request_timeout": 2,
    "pdu_timeout": 2,
    "max_pending": 256,
    "max_instance_size": "2MiB",
    "max_sequence_depth": 8,
}
ANSWER = 2.0  # an answer due "at once" must come within this


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.conftest import make_node

    handle = make_node(tmp_path_factory.mktemp("listener") / "node", workers=1, limits=LIMITS, metrics_port=free_port())
    handle.start()
    yield handle
    handle.stop()


def worker(handle) -> psutil.Process:
    proc = psutil.Process(handle.proc.pid)
    children = proc.children()
    return children[0] if children else proc


def echo_ok(handle) -> bool:
    result = dcmtk(
        "echoscu", "-aet", "ECHOSCU", "-aec", handle.ae_title, "-to", "5", "127.0.0.1", str(handle.port), timeout=30
    )
    return result.returncode == 0


def dataset(sop_uid: str = "1.2.826.0.1.3680043.2.1125.1.1", **extra) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.1.2"
    ds.PatientName = "Limit^Test"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def associated(handle, syntaxes=(IMPLICIT_LE,), max_pdu: int = 16384) -> RawPeer:
    peer = RawPeer(handle.port)
    answer = peer.associate(
        handle.ae_title, "STORESCU", [(1, CT_IMAGE_STORAGE, list(syntaxes)), (3, VERIFICATION, [IMPLICIT_LE])], max_pdu
    )
    assert answer[0] == 0x02, f"not accepted: {answer}"
    return peer


def store(peer: RawPeer, command: bytes, data: bytes, context_id: int = 1, max_pdu: int = 16384):
    peer.send(pdata(context_id, command, command=True))
    step = max_pdu - 6
    chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    for i, chunk in enumerate(chunks):
        peer.send(pdata(context_id, chunk, command=False, last=i == len(chunks) - 1))
    return peer.dimse_response(ANSWER)


def status_of(answer) -> int | None:
    if isinstance(answer, dict) and 0x0900 in answer:
        return struct.unpack("<H", answer[0x0900])[0]
    return None


def pad(value: bytes) -> bytes:
    """A UI value padded to an even length with its one NUL, as the encoding requires."""
    return value + b"\0" if len(value) % 2 else value


def _item_overruns() -> bytes:
    """A well-formed A-ASSOCIATE-RQ whose presentation context item claims 0xFFFF bytes."""
    request = bytearray(associate_rq("PACSDECK", "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])]))
    at = request.index(b"\x20\x00", 6 + 68)  # the presentation context item, after the fixed fields
    request[at + 2 : at + 4] = b"\xff\xff"
    return bytes(request)


def rows(handle, sop_uid: str):
    return handle.rows("SELECT sop_uid FROM instances WHERE sop_uid = ?", sop_uid)


# --- PDUs --------------------------------------------------------------------------------------------


def test_a_declared_4gib_pdu_is_aborted_before_anything_is_allocated(node):
    rss_before = worker(node).memory_info().rss
    peers = []
    for _ in range(2):
        peer = RawPeer(node.port)
        peer.send(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        peers.append(peer)
    for peer in peers:
        assert abort_reason(peer.read_pdu(ANSWER)) == 0x06  # invalid PDU parameter value
        assert peer.closed_within(ANSWER)
    # An established association: a P-DATA far over the 128 KiB we negotiated.
    peer = associated(node)
    peer.send(struct.pack(">BBL", 0x04, 0, 4 * 1024 * 1024))
    assert abort_reason(peer.read_pdu(ANSWER)) == 0x06
    assert worker(node).memory_info().rss - rss_before < 64 * 1024 * 1024
    assert echo_ok(node)


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("unknown type with a short body", bytes.fromhex("08 00 00000002 01 02"), 0x01),
        ("unknown type, empty", bytes.fromhex("09 00 00000000"), 0x01),
        ("P-DATA before the association", pdata(1, c_echo_rq(), command=True), 0x02),
        ("A-RELEASE-RQ before the association", pdu(0x05, bytes(4)), 0x02),
        ("A-ABORT before the association, of the wrong length", pdu(0x07, bytes(10)), 0x02),
        ("an A-ASSOCIATE-RQ that does not decode", pdu(0x01, b"\x00\x01\x00\x00" + b"\xff" * 80), 0x06),
        ("an item longer than its PDU", _item_overruns(), 0x06),
    ],
)
def test_malformed_first_pdus_get_an_abort_at_once(node, name, data, reason):
    peer = RawPeer(node.port)
    peer.send(data)
    assert abort_reason(peer.read_pdu(ANSWER)) == reason, name
    assert peer.closed_within(ANSWER), name


@pytest.mark.parametrize("count", [10_000, 30_000])
def test_thousands_of_presentation_contexts_are_answered_at_once(node, count):
    """10,000 contexts fit in the 1 MiB an A-ASSOCIATE-RQ may take, and get an answer; 30,000 do not."""
    rss_before = worker(node).memory_info().rss
    contexts = [(1 + 2 * (i % 128), f"1.2.840.10008.5.1.4.1.1.{i}", [IMPLICIT_LE]) for i in range(count)]
    request = associate_rq(node.ae_title, "STORESCU", contexts)
    peer = RawPeer(node.port)
    peer.send(request)
    answer = peer.read_pdu(5.0)
    if len(request) > 1024 * 1024 + 6:
        assert abort_reason(answer) == 0x06  # over the A-ASSOCIATE-RQ cap, refused from its header
    else:
        assert answer is not None and answer[0] in (0x02, 0x03, 0x07)
    peer.close()
    assert worker(node).memory_info().rss - rss_before < 64 * 1024 * 1024
    assert echo_ok(node)


def test_a_pdu_cut_short_is_aborted_at_its_deadline(node):
    peer = RawPeer(node.port)
    peer.send(associate_rq(node.ae_title, "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])])[:10])
    started = time.monotonic()
    assert abort_reason(peer.read_pdu(LIMITS["request_timeout"] + ANSWER)) == 0x00
    assert time.monotonic() - started < LIMITS["request_timeout"] + ANSWER
    # The same inside an association: half a P-DATA, then silence.
    peer = associated(node)
    peer.send(pdata(3, c_echo_rq(), command=True)[:9])
    assert abort_reason(peer.read_pdu(LIMITS["pdu_timeout"] + ANSWER)) == 0x00


def test_a_silent_connection_is_closed_at_the_request_deadline(node):
    peer = RawPeer(node.port)
    assert peer.closed_within(LIMITS["request_timeout"] + ANSWER)


def test_double_release_is_answered_and_the_connection_ends(node):
    peer = associated(node)
    peer.send(pdu(0x05, bytes(4)) + pdu(0x05, bytes(4)))
    answer = peer.read_pdu(ANSWER)
    # PS3.8 9.2: the second A-RELEASE-RQ is unexpected (Sta8, Evt12: AA-8) unless the RP went first.
    assert answer is not None and answer[0] in (0x06, 0x07)
    assert peer.closed_within(ANSWER)


def test_aborted_connections_free_their_slot_at_once(node):
    baseline = worker(node).num_threads()
    for _ in range(80):
        with socket.create_connection(("127.0.0.1", node.port)) as s:
            s.sendall(bytes.fromhex("09 00 00000000"))
    started = time.monotonic()
    assert echo_ok(node)
    assert time.monotonic() - started < ANSWER
    wait_for(lambda: worker(node).num_threads() <= baseline, timeout=ANSWER, what="threads back to baseline")


def test_idle_and_drip_feeding_connections_do_not_lock_real_peers_out(node):
    """200 idle connections and 50 that drip an A-ASSOCIATE-RQ a byte at a time, held (and reopened
    when closed) while echoscu runs once a second: nearly every echo succeeds from the first second."""
    request = associate_rq(node.ae_title, "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])])
    stop = threading.Event()
    closed_in_time = []
    connections_made = []

    def hold(count: int, drip: bool) -> None:
        socks: dict[socket.socket, tuple[float, int]] = {}
        while not stop.is_set():
            while len(socks) < count:
                s = socket.create_connection(("127.0.0.1", node.port))
                socks[s] = (time.monotonic(), 0)
                connections_made.append(s)
            ready, _, _ = select.select(list(socks), [], [], 0.5)  # the node closing one, or the drip's pace
            for s in ready:
                opened, _ = socks.pop(s)
                closed_in_time.append(time.monotonic() - opened <= LIMITS["request_timeout"] + ANSWER)
                s.close()
            if drip:
                for s, (opened, sent) in list(socks.items()):
                    try:
                        s.send(request[sent : sent + 1])
                        socks[s] = (opened, sent + 1)
                    except OSError:
                        pass
        for s in socks:
            s.close()

    holders = [threading.Thread(target=hold, args=(200, False)), threading.Thread(target=hold, args=(50, True))]
    for t in holders:
        t.start()
    try:
        wait_for(lambda: len(connections_made) >= 250, timeout=10, what="the hostile connections to be open")
        results = []
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            started = time.monotonic()
            results.append(echo_ok(node))
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))  # one echo a second, as a modality would
    finally:
        stop.set()
        for t in holders:
            t.join(timeout=10)
    assert sum(results) / len(results) >= 0.95, results
    assert closed_in_time and all(closed_in_time), "a hostile connection outlived its deadline"


# --- associations ------------------------------------------------------------------------------------


def test_associations_per_calling_ae_are_limited_and_freed_on_close(node_factory):
    handle = node_factory("per_ae", workers=1, limits={"max_associations_per_ae": 2})
    handle.start()
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(VERIFICATION)
    first = [ae.associate("127.0.0.1", handle.port, ae_title=handle.ae_title) for _ in range(2)]
    assert all(a.is_established for a in first)
    third = ae.associate("127.0.0.1", handle.port, ae_title=handle.ae_title)
    assert third.is_rejected
    rj = third.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit exceeded
    assert echo_ok(handle)  # another calling AE title still gets in
    first[0].release()
    again = ae.associate("127.0.0.1", handle.port, ae_title=handle.ae_title)
    assert again.is_established
    for assoc in (first[1], again):
        assoc.release()
    rejected = handle.rows("SELECT reason FROM associations WHERE result = 'rejected'")
    assert any("local limit exceeded" in r["reason"] for r in rejected)


# --- C-STORE command sets and datasets --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, sop_class, sop_uid",
    [
        ("empty instance", CT_IMAGE_STORAGE.encode(), b""),
        ("spaces", CT_IMAGE_STORAGE.encode(), b"    "),
        ("NULs", CT_IMAGE_STORAGE.encode(), b"\0\0\0\0"),
        ("empty class", b"", b"1.2.826.0.1.3680043.2.1125.9.1\0"),
        ("65 characters", CT_IMAGE_STORAGE.encode(), b"1." + b"2" * 63),
        ("trailing newline", CT_IMAGE_STORAGE.encode(), b"1.2.826.0.1.3680043.2.1125.9\n"),
        ("leading zero", CT_IMAGE_STORAGE.encode(), b"1.2.826.0.01\0"),
    ],
)
def test_bad_command_uids_get_0xA900_and_the_association_goes_on(node, name, sop_class, sop_uid):
    peer = associated(node)
    answer = store(peer, c_store_rq(pad(sop_class), pad(sop_uid)), encode(dataset(), True, True))
    assert status_of(answer) == 0xA900, (name, answer)
    # The association is still usable: a good instance on it is stored.
    good = dataset("1.2.826.0.1.3680043.2.1125.7." + str(abs(hash(name)) % 10**9))
    answer = store(
        peer, c_store_rq(CT_IMAGE_STORAGE.encode(), pad(good.SOPInstanceUID.encode())), encode(good, True, True)
    )
    assert status_of(answer) == 0x0000
    peer.close()


def test_a_command_set_without_command_field_is_aborted(node):
    peer = associated(node)
    command = c_store_rq(CT_IMAGE_STORAGE.encode(), b"1.2.826.0.1.3680043.2.1125.9.2\0", command_field=False)
    answer = store(peer, command, encode(dataset("1.2.826.0.1.3680043.2.1125.9.2"), True, True))
    assert abort_reason(answer) == 0x06
    assert echo_ok(node)


def test_a_dataset_uid_with_a_trailing_newline_is_refused(node):
    """pydicom strips the newline when it reads the value; the bytes as sent are what is checked."""
    uid = "1.2.826.0.1.3680043.2.1125.93"  # odd length: encoded with a NUL pad, which becomes the newline
    data = encode(dataset(uid), True, True)
    assert data.count(uid.encode() + b"\0") == 1
    data = data.replace(uid.encode() + b"\0", uid.encode() + b"\n")
    peer = associated(node)
    answer = store(peer, c_store_rq(CT_IMAGE_STORAGE.encode(), pad(uid.encode())), data)
    assert status_of(answer) == 0xA900
    assert not rows(node, uid)


def test_an_instance_over_max_instance_size_is_aborted(node):
    uid = "1.2.826.0.1.3680043.2.1125.9.4"
    big = (
        encode(dataset(uid), True, True) + struct.pack("<HHL", 0x0009, 0x1010, 3 * 1024 * 1024) + bytes(3 * 1024 * 1024)
    )
    peer = associated(node)
    peer.send(pdata(1, c_store_rq(CT_IMAGE_STORAGE.encode(), pad(uid.encode())), command=True))
    answer = None
    step = 16384 - 6
    for i in range(0, len(big), step):
        try:
            peer.send(pdata(1, big[i : i + step], command=False, last=i + step >= len(big)))
        except OSError:  # the node aborted and closed while we were still sending
            break
    answer = peer.read_pdu(ANSWER)
    assert answer is None or abort_reason(answer) == 0x00
    assert not rows(node, uid)
    assert echo_ok(node)


def test_a_deflate_bomb_is_refused_without_inflating_it(node):
    uid = "1.2.826.0.1.3680043.2.1125.9.5"
    plain = encode(dataset(uid), False, True) + b"\x09\x00\x10\x10OB\0\0" + struct.pack("<L", 64 * 1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(plain) + compressor.compress(bytes(64 * 1024 * 1024)) + compressor.flush()
    assert len(bomb) < 256 * 1024
    peer = associated(node, syntaxes=(DEFLATED_LE,))
    answer = store(peer, c_store_rq(CT_IMAGE_STORAGE.encode(), pad(uid.encode())), bomb)
    assert status_of(answer) == 0xA700
    assert not rows(node, uid)


def nested_sequences(depth: int) -> bytes:
    inner = struct.pack("<HHL", 0x0008, 0x0100, 4) + b"CODE"
    for _ in range(depth):
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
        inner = struct.pack("<HHL", 0x0008, 0x1140, len(item)) + item
    return inner


@pytest.mark.parametrize("depth", [9, 5000])
def test_sequences_nested_too_deep_are_refused(node, depth):
    uid = f"1.2.826.0.1.3680043.2.1125.9.6.{depth}"
    data = encode(dataset(uid), True, True)
    # (0008,1140) sorts after (0008,0018) and before the study UIDs: splice it in tag order.
    cut = data.index(struct.pack("<HH", 0x0008, 0x0018))
    cut += 8 + struct.unpack_from("<L", data, cut + 4)[0]
    data = data[:cut] + nested_sequences(depth) + data[cut:]
    peer = associated(node)
    answer = store(peer, c_store_rq(CT_IMAGE_STORAGE.encode(), pad(uid.encode())), data)
    assert status_of(answer) == 0xC000
    assert not rows(node, uid)


# --- what the administrator sees ---------------------------------------------------------------------


def test_refusals_are_counted_and_logged_without_tracebacks(node):
    peer = RawPeer(node.port)
    peer.send(bytes.fromhex("08 00 00000002 01 02"))
    peer.read_pdu(ANSWER)
    port = node.extra.get("metrics_port") or __import__("yaml").safe_load(node.config.read_text())["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'pacsdeck_rejected_total{reason="unknown-pdu-type"}' in text
    log = node.log_text()
    assert "refused unknown-pdu-type" in log
    assert "limits per worker:" in log
    assert "Traceback" not in log


def test_a_stopping_node_does_not_wait_for_idle_or_stalled_peers(node_factory):
    """SIGTERM ends the node at once even with an idle association and a PDU stalled halfway open
    (pynetdicom's threads would keep it up for the idle timeout, 60 s)."""
    handle = node_factory("stopping", workers=1)
    handle.start()
    idle = RawPeer(handle.port)
    assert idle.associate(handle.ae_title, "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])])[0] == 0x02
    stalled = RawPeer(handle.port)
    assert stalled.associate(handle.ae_title, "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])])[0] == 0x02
    stalled.send(pdata(1, c_echo_rq(), command=True)[:9])
    half_open = RawPeer(handle.port)
    half_open.send(associate_rq(handle.ae_title, "ECHOSCU", [(1, VERIFICATION, [IMPLICIT_LE])])[:10])
    started = time.monotonic()
    handle.proc.terminate()
    try:
        handle.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        handle.proc.send_signal(signal.SIGUSR1)  # the node writes every thread's stack to its log
        wait_for(lambda: "Thread 0x" in handle.log_text(), timeout=10, what="the thread dump")
        raise AssertionError("the node did not stop within 10 s:\n" + handle.log_text()[-6000:]) from None
    assert time.monotonic() - started < 5
    assert handle.proc.returncode == 0
    handle.proc = None
    for peer in (idle, stalled, half_open):
        assert peer.closed_within(ANSWER)


def test_an_association_is_served_past_descriptor_1024(node_factory):
    """400 idle connections hold 1,200 descriptors in the node (socket and wake-up pipe each): a new
    association still gets in (pynetdicom's select() would raise past 1,024 and drop it)."""
    handle = node_factory("many", workers=1, limits={"max_pending": 600, "request_timeout": 30})
    handle.start()
    idle = [socket.create_connection(("127.0.0.1", handle.port)) for _ in range(400)]
    try:
        wait_for(lambda: worker(handle).num_fds() > 1100, timeout=20, what="the node to hold the connections")
        assert echo_ok(handle)
    finally:
        for sock in idle:
            sock.close()
