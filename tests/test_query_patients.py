"""C-FIND answers with each study's own patient, matches dates and times as values, returns every key."""

from __future__ import annotations

import sqlite3

import pytest
from pydicom.uid import generate_uid

from storage import synthetic

from .conftest import make_node, pacsdeck
from .qr_support import findscu, send_files

AETS = [
    {"ae_title": "STORESCU", "host": "127.0.0.1"},
    {"ae_title": "FINDSCU", "host": "127.0.0.1", "operations": ["find"]},
]

# Issue 15's reproduction: two studies of one PatientID under two names, two studies without one.
FOUR = [("RP1", "Brown^Tom"), ("RP1", "Brown^Thomas"), ("", "Alpha^A"), ("", "Beta^B")]


def write_instance(
    folder,
    label: str,
    *,
    patient_id: str,
    name: str,
    date: str = "20200101",
    time: str = "",
    birth_date: str = "",
    modality: str = "CT",
) -> tuple:
    spec = synthetic.StudySpec(
        patient_id=patient_id,
        patient_name=name,
        study_uid=generate_uid(),
        study_date=date,
        modality=modality,
        accession=label,
    )
    ds = synthetic.instance(spec, series_uid=generate_uid(), sop_uid=generate_uid(), number=1, rows=8, cols=8)
    if not patient_id:
        del ds.PatientID
    ds.StudyTime = time
    ds.PatientBirthDate = birth_date
    path = folder / f"{label}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, spec.study_uid


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    root = tmp_path_factory.mktemp("patients")
    folder = root / "files"
    folder.mkdir()
    written = [write_instance(folder, f"r{i}", patient_id=pid, name=name) for i, (pid, name) in enumerate(FOUR, 1)]
    node = make_node(root / "node", aets=AETS, workers=1).start()
    assert len(send_files(node, [p for p, _ in written])) == 4  # sent in order: r1 .. r4
    yield node, [uid for _, uid in written]
    node.stop()


def studies_named(node, name: str) -> dict[str, str]:
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "PatientName": name, "StudyInstanceUID": None})
    assert run.status == 0x0000, run.output
    return {str(r.StudyInstanceUID): str(r.PatientName) for r in run.responses}


def test_each_study_answers_with_its_own_patient(four):
    node, (s1, s2, s3, s4) = four
    assert studies_named(node, "Brown^Tom") == {s1: "Brown^Tom"}
    assert studies_named(node, "Brown^Thomas") == {s2: "Brown^Thomas"}
    assert studies_named(node, "Alpha^A") == {s3: "Alpha^A"}
    assert studies_named(node, "Beta^B") == {s4: "Beta^B"}
    assert studies_named(node, "Brown*") == {s1: "Brown^Tom", s2: "Brown^Thomas"}


def test_patient_level_joins_no_empty_id_and_matches_any_of_its_names(four):
    node, _ = four
    run = findscu(
        node,
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientID": None,
            "PatientName": None,
            "NumberOfPatientRelatedStudies": None,
        },
        model="patient",
    )
    assert run.status == 0x0000, run.output
    # One patient: RP1 with its most recent study's name (same date: the later UID decides); no empty ID.
    assert [(str(r.PatientID), int(r.NumberOfPatientRelatedStudies)) for r in run.responses] == [("RP1", 2)]
    for name in ("Brown^Tom", "Brown^Thomas"):  # a corrected name still finds the patient
        run = findscu(node, {"QueryRetrieveLevel": "PATIENT", "PatientName": name, "PatientID": None}, model="patient")
        assert [str(r.PatientID) for r in run.responses] == ["RP1"], name


def test_study_without_patient_id_counts_only_itself(four):
    node, (_, _, s3, _) = four
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s3, "NumberOfPatientRelatedStudies": None})
    assert [int(r.NumberOfPatientRelatedStudies) for r in run.responses] == [1]


def test_a_key_below_the_query_level_comes_back_empty(four):
    node, (s1, *_) = four
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s1, "Modality": None})
    assert run.status == 0x0000, run.output
    assert len(run.responses) == 1 and "Modality" in run.responses[0] and not run.responses[0].Modality


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    root = tmp_path_factory.mktemp("times")
    folder = root / "files"
    folder.mkdir()
    cases = {
        "t101530": ("101530", "20200101"),
        "t1015": ("1015", "20200101"),
        "t140438": ("14:04:38", "20200102"),
        "t1430": ("143000.5", "20200103"),
        "acrnema": ("", "1997.04.24"),
    }
    written = {
        label: write_instance(folder, label, patient_id=f"P{label}", name=f"Time^{label}", time=time, date=date)
        for label, (time, date) in cases.items()
    }
    node = make_node(root / "node", aets=AETS, workers=1).start()
    assert len(send_files(node, [p for p, _ in written.values()])) == len(cases)
    yield node, {label: uid for label, (_, uid) in written.items()}
    node.stop()


def labels(node, uids: dict, **keys) -> set[str]:
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, **keys})
    assert run.status == 0x0000, run.output
    found = {str(r.StudyInstanceUID) for r in run.responses}
    return {label for label, uid in uids.items() if uid in found}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1015", {"t1015"}),  # single value: that time, not a prefix (C.2.2.2.1)
        ("101530", {"t101530"}),
        ("14", set()),
        ("1405-1500", {"t1430"}),  # 14:04:38 is before 14:05, compared as a time
        ("1404-1500", {"t140438", "t1430"}),
        ("-1015", {"t1015", "t101530"}),  # the upper bound includes its whole minute
        ("14:04:38", {"t140438"}),  # the ACR-NEMA form, in the query too
    ],
)
def test_times_match_as_times(timed, value, expected):
    node, uids = timed
    assert labels(node, uids, StudyTime=value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("19970424", {"acrnema"}),  # stored as 1997.04.24 (PS3.5 asks readers to accept it)
        ("1997.04.24", {"acrnema"}),
        ("19970101-19971231", {"acrnema"}),
        ("20200102-", {"t140438", "t1430"}),
    ],
)
def test_dates_match_as_dates(timed, value, expected):
    node, uids = timed
    assert labels(node, uids, StudyDate=value) == expected


def test_a_malformed_date_in_a_query_is_refused(timed):
    node, _ = timed
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-13-45"})
    assert run.status is not None and run.status >= 0xA700, run.output


def test_the_upgrade_gives_merged_studies_their_own_patient(tmp_path):
    """An index from before schema 5 (one patients row per ID, the last instance's) is upgraded in
    place at the next start: each study takes its patient attributes back from its files."""
    folder = tmp_path / "files"
    folder.mkdir()
    written = [write_instance(folder, f"r{i}", patient_id=pid, name=name) for i, (pid, name) in enumerate(FOUR, 1)]
    node = make_node(tmp_path / "node", aets=AETS, workers=1).start()
    try:
        assert len(send_files(node, [p for p, _ in written])) == 4
    finally:
        node.stop()
    # Make it what schema 4 kept: a patients table with the last name per ID, no patient columns on studies.
    conn = sqlite3.connect(node.index_path)
    conn.executescript("""
        DROP VIEW patients;
        CREATE TABLE patients (patient_id TEXT PRIMARY KEY, patient_name TEXT NOT NULL DEFAULT '',
            birth_date TEXT NOT NULL DEFAULT '', sex TEXT NOT NULL DEFAULT '');
        INSERT INTO patients VALUES ('RP1', 'Brown^Thomas', '', ''), ('', 'Beta^B', '', '');
        DROP INDEX studies_patient_name; DROP INDEX studies_date_key; DROP INDEX studies_patient_key;
        ALTER TABLE studies DROP COLUMN patient_name; ALTER TABLE studies DROP COLUMN birth_date;
        ALTER TABLE studies DROP COLUMN sex; ALTER TABLE studies DROP COLUMN issuer;
        ALTER TABLE studies DROP COLUMN date_key; ALTER TABLE studies DROP COLUMN time_key;
        ALTER TABLE studies DROP COLUMN birth_date_key; DROP TABLE study_reread;
        PRAGMA user_version = 4;
    """)
    conn.close()
    node.start()
    try:
        assert studies_named(node, "Brown^Tom") == {written[0][1]: "Brown^Tom"}
        assert studies_named(node, "Alpha^A") == {written[2][1]: "Alpha^A"}
        assert node.rows("SELECT count(*) AS n FROM study_reread")[0]["n"] == 0
        assert "4 studies took their own patient attributes" in node.log_text()
        assert node.rows("PRAGMA user_version")[0][0] == 5
    finally:
        node.stop()


def test_reindex_gives_each_study_its_own_patient_again(tmp_path):
    """`node reindex` rebuilds the rows from the files alone, with the same answers as ingest gave."""
    folder = tmp_path / "files"
    folder.mkdir()
    written = [
        write_instance(folder, f"r{i}", patient_id=pid, name=name, time="101530")
        for i, (pid, name) in enumerate(FOUR, 1)
    ]
    node = make_node(tmp_path / "node", aets=AETS, workers=1).start()
    try:
        assert len(send_files(node, [p for p, _ in written])) == 4
        before = {name: studies_named(node, name) for _, name in FOUR}
        node.stop()
        result = pacsdeck("node", "reindex", "--config", str(node.config))
        assert result.returncode == 0, result.stderr
        node.start()
        assert {name: studies_named(node, name) for _, name in FOUR} == before
        assert before["Brown^Tom"] == {written[0][1]: "Brown^Tom"}
        assert labels(node, {"r1": written[0][1]}, StudyTime="101530") == {"r1"}
    finally:
        node.stop()
