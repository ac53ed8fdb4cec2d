"""/metrics, /healthz and /readyz of a real node with two workers, before and after a real storescu transfer."""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread

from storage import synthetic

from .conftest import dataset_bytes, free_port, storescu, wait_for
from .qr_support import final_status, run_tool


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(port: int) -> dict:
    """{(sample name, sorted label items): value}, parsed by prometheus-client's own text parser."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_move_after_a_real_transfer(node_factory, tmp_path):
    port = free_port()
    aets = [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "GETSCU", "host": "127.0.0.1", "operations": ["get"]},
    ]
    node = node_factory(metrics_port=port, aets=aets).start()
    assert get(port, "/healthz") == (200, "ok\n")
    status, body = get(port, "/readyz")
    assert status == 200 and json.loads(body) == {
        "index_writable": True,
        "pools_above_reserve": True,
        "ready": True,
        "scp_listening": True,
    }
    before = samples(port)
    store_ok = ("pacsdeck_dimse_requests_total", (("operation", "C-STORE"), ("status", "0x0000")))
    assert store_ok not in before
    assert before[("pacsdeck_pool_instances", (("pool", "primary"), ("tier", "primary")))] == 0
    assert before[("pacsdeck_pool_free_bytes", (("pool", "primary"), ("tier", "primary")))] > 0
    assert ("pacsdeck_queue_depth", ()) in before and ("pacsdeck_backup_last_success_timestamp_seconds", ()) in before
    assert [k for k in before if k[0] == "pacsdeck_build_info"]

    files = synthetic.write_study(tmp_path / "study", next(synthetic.studies(1)), 5, rows=32, cols=32)
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}

    def moved():  # the association counter moves when the connection closes, just after storescu exits
        now = samples(port)
        return now if now.get(("pacsdeck_associations_total", (("result", "released"),))) else None

    after = wait_for(moved, what="association counter")
    assert after[store_ok] == 5
    assert after[("pacsdeck_store_duration_seconds_count", ())] == 5
    assert after[("pacsdeck_store_duration_seconds_bucket", (("le", "+Inf"),))] == 5
    # the datasets as sent: each file without its preamble and File Meta
    assert after[("pacsdeck_received_bytes_total", ())] == sum(len(dataset_bytes(f)) for f in files)
    assert after[("pacsdeck_pool_instances", (("pool", "primary"), ("tier", "primary")))] == 5
    assert after[("pacsdeck_pool_bytes", (("pool", "primary"), ("tier", "primary")))] > 0

    # a C-GET's final status is counted, though our own retrieve loop writes it (suboperations.py)
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
            f"StudyInstanceUID={synthetic_study_uid(files)}",
            "127.0.0.1",
            str(node.port),
        )
        assert final_status(proc.stdout + proc.stderr) == 0x0000, (proc.stdout + proc.stderr)[-2000:]
    get_ok = ("pacsdeck_dimse_requests_total", (("operation", "C-GET"), ("status", "0x0000")))
    wait_for(lambda: samples(port).get(get_ok) == 1, what="the C-GET counted")

    # a rejected association is counted too, and a restart starts from zero (the folder is emptied)
    storescu(node, files[:1], aet="UNKNOWN")
    wait_for(
        lambda: samples(port).get(("pacsdeck_associations_total", (("result", "rejected"),))) == 1,
        what="rejected association counter",
    )
    node.stop()
    node.start()
    assert store_ok not in samples(port)


def synthetic_study_uid(files) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def test_metrics_are_off_by_default(node_factory):
    node = node_factory().start()
    assert not (node.dir / "metrics").exists()
