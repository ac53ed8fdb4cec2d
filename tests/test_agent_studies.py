"""node.status, studies.find, series.list, instances.list, associations.recent against a real node with data."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from storage import synthetic

from .agent_support import agent_env, agents  # noqa: F401 - fixture
from .conftest import storescu, wait_for

SPECS = {
    "S1": dict(patient_id="PAT1", patient_name="Doe^Jane", study_date="20240105", modality="CT", count=4, series=2),
    "S2": dict(patient_id="PAT2", patient_name="Smith^John", study_date="20240310", modality="CR", count=1, series=1),
    "S3": dict(patient_id="PAT3", patient_name="Doe^John", study_date="20231231", modality="CT", count=1, series=1),
    "S4": dict(patient_id="PAT4", patient_name="O[b]rien^Pat", study_date="20240601", modality="MR", count=1, series=1),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One running node holding the four studies, sent by DCMTK storescu; shared by the tests here."""
    from .conftest import make_node

    root = tmp_path_factory.mktemp("studies")
    node = make_node(root / "node").start()
    uids, files = {}, []
    for label, spec in SPECS.items():
        study = synthetic.StudySpec(
            patient_id=spec["patient_id"],
            patient_name=spec["patient_name"],
            study_uid=generate_uid(),
            study_date=spec["study_date"],
            modality=spec["modality"],
            accession=f"ACC-{label}",
        )
        uids[label] = study.study_uid
        files += synthetic.write_study(
            root / "files" / label,
            study,
            spec["count"],
            rows=16,
            cols=16,
            series=spec["series"],
            modality=spec["modality"],
        )
    results, proc = storescu(node, files)
    assert set(results.values()) == {"Success"}, proc.stdout + proc.stderr
    # The node writes the association's log row when the connection closes, just after storescu exits.
    wait_for(lambda: node.rows("SELECT 1 FROM associations WHERE calling_ae='STORESCU'"), what="association row")
    yield node, uids
    node.stop()


@pytest.fixture
def agent(loaded, agents, tmp_path):
    node, _ = loaded
    return agents(node.config, env=agent_env(tmp_path / "authorized_keys"), stderr_path=tmp_path / "agent.log")


def _labels(found: dict, uids: dict) -> list[str]:
    by_uid = {uid: label for label, uid in uids.items()}
    return [by_uid[s["StudyInstanceUID"]] for s in found["studies"]]


def test_find_filters(loaded, agent):
    _, uids = loaded
    cases = [
        ({}, ["S4", "S2", "S1", "S3"]),  # newest first
        ({"PatientName": "Doe*"}, ["S1", "S3"]),
        ({"PatientName": "Doe^J?ne"}, ["S1"]),
        ({"PatientName": "doe*"}, []),  # case-sensitive, as in DICOM
        ({"PatientName": "O[b]rien*"}, ["S4"]),  # GLOB brackets stay literal
        ({"PatientName": "*"}, ["S4", "S2", "S1", "S3"]),
        ({"PatientName": "Doe^Jane"}, ["S1"]),
        ({"PatientID": "PAT2"}, ["S2"]),
        ({"PatientID": "PAT?"}, ["S4", "S2", "S1", "S3"]),
        ({"AccessionNumber": "ACC-S3"}, ["S3"]),
        ({"StudyInstanceUID": uids["S2"]}, ["S2"]),
        ({"StudyDate": "20240105"}, ["S1"]),
        ({"StudyDate": "20240101-20240331"}, ["S2", "S1"]),
        ({"StudyDate": "20240301-"}, ["S4", "S2"]),
        ({"StudyDate": "-20231231"}, ["S3"]),
        ({"ModalitiesInStudy": "CR"}, ["S2"]),
        ({"ModalitiesInStudy": "CT\\MR"}, ["S4", "S1", "S3"]),
        ({"ModalitiesInStudy": ["MR", "CR"]}, ["S4", "S2"]),
        ({"PatientName": "Doe*", "StudyDate": "20240101-"}, ["S1"]),
    ]
    for params, expected in cases:
        assert _labels(agent.call("studies.find", params), uids) == expected, params


def test_find_fields_and_limit(loaded, agent):
    _, _uids = loaded
    found = agent.call("studies.find", {"PatientID": "PAT1"})
    assert found["count"] == 1 and found["truncated"] is False
    study = found["studies"][0]
    assert study["PatientName"] == "Doe^Jane" and study["StudyDate"] == "20240105"
    assert study["ModalitiesInStudy"] == ["CT"]
    assert study["NumberOfStudyRelatedSeries"] == 2 and study["NumberOfStudyRelatedInstances"] == 4
    assert study["bytes"] > 4 * 16 * 16 * 2
    limited = agent.call("studies.find", {"limit": 2})
    assert limited["count"] == 2 and limited["truncated"] is True


def test_series_and_instances(loaded, agent):
    _, uids = loaded
    series = agent.call("series.list", {"StudyInstanceUID": uids["S1"]})["series"]
    assert len(series) == 2 and all(s["NumberOfSeriesRelatedInstances"] == 2 for s in series)
    assert {s["Modality"] for s in series} == {"CT"}
    instances = agent.call("instances.list", {"SeriesInstanceUID": series[0]["SeriesInstanceUID"]})["instances"]
    assert len(instances) == 2
    first = instances[0]
    assert first["pool"] == "primary" and first["bytes"] > 0 and len(first["sha256"]) == 64
    assert first["source_ae"] == "STORESCU" and first["received_at"].endswith("Z")
    assert int(instances[0]["InstanceNumber"]) < int(instances[1]["InstanceNumber"])
    assert agent.error("series.list", {"StudyInstanceUID": "1.2.3.4"}).kind == "not_found"
    assert agent.error("instances.list", {"SeriesInstanceUID": "1.2.3.4"}).kind == "not_found"
    assert agent.error("series.list", {}).kind == "invalid_params"


def test_associations_recent(loaded, agent):
    rows = agent.call("associations.recent", {"calling_ae": "STORESCU"})["associations"]
    assert rows and rows[0]["result"] == "released" and rows[0]["instances"] == 7
    assert rows[0]["peer_host"] == "127.0.0.1" and rows[0]["started_at"].endswith("Z")
    assert agent.call("associations.recent", {"result": "rejected"})["associations"] == []
    assert len(agent.call("associations.recent", {"limit": 1})["associations"]) == 1


def test_node_status(loaded, agent):
    node, _ = loaded
    status = agent.call("node.status")
    assert status["listening"] is True
    assert status["process"]["pid"] == node.proc.pid and status["process"]["uptime_s"] >= 0
    assert status["counts"] == {**status["counts"], "studies": 4, "series": 5, "instances": 7, "patients": 4}
    pools = {p["name"]: p for p in status["pools"]}
    assert pools["primary"]["instances"] == 7 and pools["archive"]["instances"] == 0
    assert pools["primary"]["disk_total_bytes"] > pools["primary"]["disk_free_bytes"] > 0
    assert status["registered_aets"] == 2
    assert status["node"]["port"] == node.port and status["version"]
    assert status["schema_version"] == 1 and status["time"].endswith("Z")


def test_node_status_when_stopped(tmp_path, node_factory, agents):
    node = node_factory("quiet")
    agent = agents(node.config, env=agent_env(tmp_path / "authorized_keys"))
    assert agent.call("node.status")["listening"] is False
    node.start()
    up = wait_for(lambda: (s := agent.call("node.status"))["listening"] and s, what="listening")
    assert up["process"]["pid"] == node.proc.pid
    node.stop()
    down = wait_for(lambda: not (s := agent.call("node.status"))["listening"] and s, what="not listening")
    assert down["process"] is None
