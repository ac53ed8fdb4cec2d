"""Auto-routing and the forward queue against a real DCMTK storescp: bytes as stored, retries, kill -9."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from storage import synthetic
from storage.dimse.forward import ACK_BATCH

from .agent_support import agent_env, agents, dcmqrscp_factory  # noqa: F401 - fixtures
from .conftest import dataset_bytes, free_port, require_tool, start_listener, storescu, terminate, wait_for

FAST_QUEUE = {"backoff_base": 0.2, "backoff_max": 0.5, "max_attempts": 1000, "timeout": 5}


@dataclass
class Receiver:
    """A DCMTK storescp writing every received instance to its own file (+uf), so a second copy of
    an instance shows up as a second file."""

    port: int
    dir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Receiver:
        self.proc = start_listener(
            [require_tool("storescp"), "-aet", "DEST", "+B", "+xa", "+uf", "-od", str(self.dir), str(self.port)],
            self.port,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file())

    def uids(self) -> list[str]:
        """SOP Instance UIDs of the files received, one per file (duplicates kept)."""
        return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.files()]


@pytest.fixture
def receiver(tmp_path):
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    rcv = Receiver(port=port, dir=folder)
    yield rcv
    rcv.stop()


@pytest.fixture
def env(tmp_path):
    return agent_env(tmp_path / "authorized_keys")


def dest_aets(port: int) -> list[dict]:
    return [
        {"ae_title": "STORESCU", "host": "127.0.0.1"},
        {"ae_title": "ECHOSCU", "host": "127.0.0.1"},
        {"ae_title": "DEST", "host": "127.0.0.1", "port": port, "operations": ["store"]},
    ]


def write_studies(folder: Path, studies: int, per_study: int, modality: str = "CT") -> list[Path]:
    files = []
    for n, spec in enumerate(synthetic.studies(studies, prefix=f"{modality}{folder.name[:4]}")):
        files += synthetic.write_study(folder / f"s{n}", spec, per_study, rows=32, cols=32, modality=modality)
    return files


def store(node, files: list[Path]) -> None:
    results, proc = storescu(node, files)
    assert set(results.values()) == {"Success"} and len(results) == len(files), proc.stdout + proc.stderr


def queue_settled(admin) -> dict:
    """queue.list once no forward job is pending or running any more."""

    def settled():
        q = admin.call("queue.list", {"kind": "forward"})
        return q if q["counts"]["pending"] == 0 and q["counts"]["running"] == 0 and q["jobs"] else None

    return wait_for(settled, timeout=60, interval=0.1, what="the forward queue to drain")


def test_route_forwards_matching_instances_byte_identical(node_factory, receiver, agents, env, tmp_path):
    receiver.start()
    node = node_factory(aets=dest_aets(receiver.port), queue=FAST_QUEUE).start()
    admin = agents(node.config, env=env)
    route = admin.call(
        "routes.add",
        {"name": "ct-to-dest", "match": {"Modality": "C?", "calling_ae": "STORE*"}, "destinations": ["DEST"]},
    )["route"]
    assert route["match"] == {"Modality": "C?", "calling_ae": "STORE*"} and route["destinations"] == ["DEST"]

    ct = write_studies(tmp_path / "ct", 2, 5, "CT")
    mr = write_studies(tmp_path / "mr", 1, 3, "MR")
    store(node, ct + mr)
    q = queue_settled(admin)
    assert q["counts"]["done"] == 2 and q["counts"]["failed"] == 0  # one job per study and destination
    assert {j["items_total"] for j in q["jobs"]} == {5} and all(j["items_done"] == 5 for j in q["jobs"])
    assert all(j["destination"] == "DEST" and j["attempts"] == 1 for j in q["jobs"])

    stored = {r["sop_uid"]: dataset_bytes(node.file(r)) for r in node.rows("SELECT * FROM instances")}
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in receiver.files()}
    ct_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct}
    assert set(received) == ct_uids and len(receiver.files()) == 10  # the MR study matched no route
    for uid, data in received.items():
        assert data == stored[uid], f"{uid} changed on the way"
    assert all(j["bytes_done"] == j["bytes_total"] > 0 for j in q["jobs"])


def test_destination_down_backs_off_then_delivers_each_instance_once(node_factory, receiver, agents, env, tmp_path):
    (tmp_path / "other").mkdir()
    other = Receiver(port=free_port(), dir=tmp_path / "other").start()  # a second destination, up
    aets = dest_aets(receiver.port) + [{"ae_title": "OTHER", "host": "127.0.0.1", "port": other.port}]
    # Two associations per destination: both studies go at once, and still each instance once.
    node = node_factory(aets=aets, queue={**FAST_QUEUE, "associations": 2}).start()
    admin = agents(node.config, env=env)
    admin.call("routes.add", {"name": "all", "match": {}, "destinations": ["DEST", "OTHER"]})
    files = write_studies(tmp_path / "in", 2, 6)
    store(node, files)  # acknowledged although the destination is down: forwarding is queued
    expected = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files)
    # The down destination holds up nobody else.
    wait_for(lambda: len(other.files()) == 12, timeout=30, what="the other destination to get everything")
    assert sorted(other.uids()) == expected
    other.stop()

    def retried():
        jobs = admin.call("queue.list", {"kind": "forward", "destination": "DEST"})["jobs"]
        return jobs if len(jobs) == 2 and all(j["attempts"] >= 3 and j["state"] == "pending" for j in jobs) else None

    jobs = wait_for(retried, timeout=30, what="three failed attempts per job")
    for job in jobs:
        assert "refused the connection" in job["last_error"] and job["next_attempt_at"].endswith("Z")
        assert job["items_done"] == 0 and job["items_total"] == 6
    log_text = node.log_text()  # each failed attempt is said once, by us, with the reason
    assert "queue: forward to DEST failed" in log_text and "refused the connection" in log_text
    assert "TCP Initialisation Error" not in log_text and "unable to connect to remote" not in log_text

    receiver.start()
    q = queue_settled(admin)
    assert q["counts"]["done"] == 4 and q["oldest_pending_age_s"] is None
    uids = receiver.uids()
    assert sorted(uids) == expected
    assert len(uids) == len(set(uids)) == 12  # none lost, none sent twice


def test_failed_jobs_wait_for_queue_retry_and_cancel_stops_a_job(node_factory, receiver, agents, env, tmp_path):
    node = node_factory(aets=dest_aets(receiver.port), queue={**FAST_QUEUE, "max_attempts": 2}).start()
    admin = agents(node.config, env=env)
    admin.call("routes.add", {"name": "all", "match": {}, "destinations": ["DEST"]})
    first, second = write_studies(tmp_path / "a", 1, 4), write_studies(tmp_path / "b", 1, 3)
    store(node, first)
    store(node, second)

    def failed():
        q = admin.call("queue.list", {"state": "failed"})
        return q["jobs"] if q["counts"]["failed"] == 2 else None

    jobs = wait_for(failed, timeout=30, what="both jobs to use up their 2 attempts")
    assert all(j["attempts"] == 2 and j["next_attempt_at"] is None and "refused" in j["last_error"] for j in jobs)
    by_size = {j["items_total"]: j for j in jobs}

    receiver.start()  # the destination is back; failed jobs stay failed until an operator acts
    assert admin.call("queue.cancel", {"id": by_size[3]["id"]}) == {"cancelled": 1}
    assert admin.call("queue.retry", {"destination": "DEST", "state": "failed"}) == {"retried": 1}
    q = queue_settled(admin)
    states = {j["id"]: j["state"] for j in q["jobs"]}
    assert states == {by_size[4]["id"]: "done", by_size[3]["id"]: "cancelled"}
    first_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in first}
    assert sorted(receiver.uids()) == sorted(first_uids)  # the cancelled study never went

    # A cancelled job can be retried by id, and then it is sent.
    assert admin.call("queue.retry", {"id": by_size[3]["id"]}) == {"retried": 1}
    q = queue_settled(admin)
    assert q["counts"]["done"] == 2 and len(receiver.uids()) == 7
    done = admin.error("queue.retry", {"id": by_size[3]["id"]})
    assert (done.kind, done.data["field"]) == ("conflict", "id")
    assert admin.error("queue.cancel", {"id": 999999}).kind == "not_found"
    audited = admin.call("audit.recent", {"method": "queue.cancel"})["entries"]
    assert [e["result"] for e in audited] == ["not_found", "ok"]


def test_kill_9_with_100_pending_forwards_delivers_all_after_restart(node_factory, receiver, agents, env, tmp_path):
    node = node_factory(aets=dest_aets(receiver.port), queue=FAST_QUEUE).start()
    admin = agents(node.config, env=env)
    admin.call("routes.add", {"name": "all", "match": {}, "destinations": ["DEST"]})
    files = write_studies(tmp_path / "in", 4, 25)
    store(node, files)
    expected = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files)
    pending = node.rows("SELECT count(*) n FROM job_items WHERE state = 'pending'")[0]["n"]
    assert pending == 100
    node.kill9()

    receiver.start()
    node.start()  # running jobs go back to pending, then the forwarder sends them
    wait_for(lambda: len(receiver.files()) >= 10, timeout=60, interval=0.01, what="forwarding to start")
    node.kill9()  # again, this time in the middle of sending
    node.start()
    queue_settled(admin)
    uids = receiver.uids()
    assert sorted(set(uids)) == expected  # every instance arrived
    # Acknowledgements are recorded every ACK_BATCH instances (or 0.5 s): a kill -9 may resend at
    # most that many per destination, never more.
    assert len(uids) - len(expected) <= ACK_BATCH
    rows = node.rows("SELECT state, count(*) n FROM job_items GROUP BY state")
    assert {r["state"]: r["n"] for r in rows} == {"done": 100}


def test_studies_send_queues_a_study(node_factory, receiver, agents, env, tmp_path):
    receiver.start()
    node = node_factory(
        aets=dest_aets(receiver.port) + [{"ae_title": "NOPORT", "host": "127.0.0.1"}], queue=FAST_QUEUE
    ).start()
    admin = agents(node.config, env=env)
    files = write_studies(tmp_path / "in", 1, 4)
    store(node, files)
    assert node.rows("SELECT count(*) n FROM jobs")[0]["n"] == 0  # no route: nothing queued
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    sent = admin.call("studies.send", {"StudyInstanceUID": study, "destination": "DEST"})
    assert sent["items_total"] == 4 and sent["bytes_total"] > 0 and isinstance(sent["job_id"], int)
    q = queue_settled(admin)
    assert [(j["id"], j["state"], j["reason"]) for j in q["jobs"]] == [(sent["job_id"], "done", "requested")]
    assert len(receiver.uids()) == 4

    unknown_study = admin.error("studies.send", {"StudyInstanceUID": "1.2.3.4", "destination": "DEST"})
    assert (unknown_study.kind, unknown_study.data["field"]) == ("not_found", "StudyInstanceUID")
    unknown_dest = admin.error("studies.send", {"StudyInstanceUID": study, "destination": "NOSUCH"})
    assert (unknown_dest.kind, unknown_dest.data["field"]) == ("not_found", "destination")
    no_port = admin.error("studies.send", {"StudyInstanceUID": study, "destination": "NOPORT"})
    assert (no_port.kind, no_port.data["field"]) == ("invalid_params", "destination")
    bad = admin.error("studies.send", {"StudyInstanceUID": "1.2.x", "destination": "DEST"})
    assert (bad.kind, bad.data["field"]) == ("invalid_params", "StudyInstanceUID")


def test_cancel_stops_a_running_job_at_an_instance_boundary(node_factory, receiver, agents, env, tmp_path):
    receiver.start()
    node = node_factory(aets=dest_aets(receiver.port), queue=FAST_QUEUE).start()
    admin = agents(node.config, env=env)
    files = write_studies(tmp_path / "in", 1, 600)
    store(node, files)
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    job_id = admin.call("studies.send", {"StudyInstanceUID": study, "destination": "DEST"})["job_id"]
    wait_for(
        lambda: admin.call("queue.list", {"state": "running"})["jobs"],
        timeout=30,
        interval=0.005,
        what="the job to start",
    )
    assert admin.call("queue.cancel", {"id": job_id}) == {"cancelled": 1}
    # The forwarder records what was acknowledged before it stopped (the instance in flight too),
    # says so in the log, then leaves the job alone.
    wait_for(
        lambda: f"queue: job {job_id} cancelled" in node.log_text(),
        timeout=30,
        what="the forwarder stopping for the cancel",
    )
    [job] = admin.call("queue.list", {"kind": "forward"})["jobs"]
    assert job["state"] == "cancelled" and job["items_done"] < 600
    assert len(receiver.files()) == job["items_done"]


def test_rejecting_destination_fails_with_its_reason(node_factory, agents, env, tmp_path, dcmqrscp_factory):
    qr = dcmqrscp_factory("QRSCP")  # it rejects called AE titles it does not know
    node = node_factory(
        aets=[
            {"ae_title": "STORESCU", "host": "127.0.0.1"},
            {"ae_title": "WRONGNAME", "host": "127.0.0.1", "port": qr.port},
        ],
        queue={**FAST_QUEUE, "max_attempts": 2},
    ).start()
    admin = agents(node.config, env=env)
    store(node, write_studies(tmp_path / "in", 1, 2))
    study = node.rows("SELECT study_uid FROM studies")[0]["study_uid"]
    job_id = admin.call("studies.send", {"StudyInstanceUID": study, "destination": "WRONGNAME"})["job_id"]
    job = wait_for(
        lambda: next((j for j in admin.call("queue.list", {"state": "failed"})["jobs"] if j["id"] == job_id), None),
        timeout=30,
        what="the job to fail",
    )
    assert job["attempts"] == 2 and job["last_error"].startswith("association rejected by 127.0.0.1:")
    assert job["last_error"].endswith("Called AE title not recognised")
