"""C-FIND with DCMTK findscu against a real node holding pydicom's test files and generated studies."""

from __future__ import annotations

from collections import defaultdict
from fnmatch import fnmatchcase

import pytest
from pydicom.uid import generate_uid

from storage import synthetic
from storage.index.database import Index

from .conftest import make_node
from .qr_support import PYDICOM_TEST_FILES, expected_instances, findscu, send_files

AETS = [
    {"ae_title": "STORESCU", "host": "127.0.0.1"},
    {"ae_title": "FINDSCU", "host": "127.0.0.1", "operations": ["find"]},
    {"ae_title": "NOFIND", "host": "127.0.0.1", "operations": ["store", "move", "get"]},
]

# label: (PatientID, PatientName, StudyDate, modality, instances, series, SpecificCharacterSet)
SPECS = {
    "Q1": ("QR1", "Doe^Jane", "20240105", "CT", 3, 2, None),
    "Q2": ("QR2", "Doe^John", "20240310", "MR", 2, 1, None),
    "Q3": ("QR3", "Smith^Anna", "20231231", "CR", 1, 1, None),
    "Q4": ("QR4", "Müller^Jürgen", "20240601", "CT", 2, 1, "ISO_IR 192"),
    "Q5": ("QR5", "Müller^Käthe", "20240602", "CT", 1, 1, "ISO_IR 100"),
}


def _write_generated(folder) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, (pid, name, date, modality, count, n_series, charset) in SPECS.items():
        spec = synthetic.StudySpec(
            patient_id=pid,
            patient_name=name,
            study_uid=generate_uid(),
            study_date=date,
            modality=modality,
            accession=f"ACC-{label}",
        )
        series = [generate_uid() for _ in range(n_series)]
        for n in range(count):
            ds = synthetic.instance(
                spec,
                series_uid=series[n % n_series],
                sop_uid=generate_uid(),
                number=n + 1,
                rows=8,
                cols=8,
                charset=charset,
            )
            path = folder / f"{label}_{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    node = make_node(root / "node", aets=AETS).start()
    sent = send_files(node, _write_generated(root / "files") + PYDICOM_TEST_FILES)
    instances = expected_instances(sent)
    yield node, instances
    node.stop()


def _studies(instances: dict) -> dict[str, dict]:
    """Study rows as the index should describe them: patient and study fields from the last instance sent."""
    names = {}
    for inst in instances.values():
        names[inst["PatientID"]] = inst["PatientName"]
    studies: dict[str, dict] = {}
    for inst in instances.values():
        row = studies.setdefault(inst["StudyInstanceUID"], {"series": defaultdict(int), "modalities": set()})
        row.update(PatientID=inst["PatientID"], StudyDate=inst["StudyDate"])
        row["PatientName"] = names[inst["PatientID"]]
        row["series"][inst["SeriesInstanceUID"]] += 1
    for inst in instances.values():  # series modality: last instance of the series, as upserted
        studies[inst["StudyInstanceUID"]].setdefault("series_modality", {})[inst["SeriesInstanceUID"]] = inst[
            "Modality"
        ]
    for row in studies.values():
        row["modalities"] = {m for m in row["series_modality"].values() if m}
    return studies


def _uid_of(instances: dict, patient_id: str) -> str:
    return next(i["StudyInstanceUID"] for i in instances.values() if i["PatientID"] == patient_id)


def _in_range(date: str, low: str, high: str) -> bool:
    return bool(date) and (not low or date >= low) and (not high or date <= high)


def test_study_root_study_level_matching(loaded):
    node, instances = loaded
    studies = _studies(instances)
    q1, q3 = _uid_of(instances, "QR1"), _uid_of(instances, "QR3")
    cases = [
        ({}, lambda s: True),  # universal matching
        ({"PatientID": "QR1"}, lambda s: s["PatientID"] == "QR1"),
        ({"PatientID": "QR?"}, lambda s: fnmatchcase(s["PatientID"], "QR?")),
        ({"PatientName": "Doe*"}, lambda s: fnmatchcase(s["PatientName"], "Doe*")),
        ({"PatientName": "*Jan?"}, lambda s: fnmatchcase(s["PatientName"], "*Jan?")),
        ({"PatientName": "doe*"}, lambda s: fnmatchcase(s["PatientName"], "doe*")),  # case-sensitive
        ({"StudyDate": "20240101-20240331"}, lambda s: _in_range(s["StudyDate"], "20240101", "20240331")),
        ({"StudyDate": "20240601-"}, lambda s: _in_range(s["StudyDate"], "20240601", "")),
        ({"StudyDate": "-20231231"}, lambda s: _in_range(s["StudyDate"], "", "20231231")),
        ({"StudyDate": "20240105"}, lambda s: s["StudyDate"] == "20240105"),
        ({"StudyInstanceUID": f"{q1}\\{q3}"}, lambda s: s is studies[q1] or s is studies[q3]),  # UID list
        ({"ModalitiesInStudy": "CR\\MR"}, lambda s: bool(s["modalities"] & {"CR", "MR"})),
        (
            {"PatientName": "Doe*", "StudyDate": "20240201-"},
            lambda s: fnmatchcase(s["PatientName"], "Doe*") and _in_range(s["StudyDate"], "20240201", ""),
        ),
    ]
    for keys, predicate in cases:
        run = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, **keys})
        assert run.status == 0x0000, run.output[-2000:]
        got = sorted(str(r.StudyInstanceUID) for r in run.responses)
        want = sorted(uid for uid, s in studies.items() if predicate(s))
        assert got == want, keys
        assert want or keys.get("PatientName") == "doe*", f"case {keys} matches nothing: a weak case"


def test_study_level_return_keys_and_derived_attributes(loaded):
    node, instances = loaded
    studies = _studies(instances)
    run = findscu(
        node,
        {
            "QueryRetrieveLevel": "STUDY",
            "PatientID": "QR1",
            "StudyInstanceUID": None,
            "PatientName": None,
            "StudyDate": None,
            "AccessionNumber": None,
            "ModalitiesInStudy": None,
            "NumberOfStudyRelatedSeries": None,
            "NumberOfStudyRelatedInstances": None,
            "RetrieveAETitle": None,
            "InstitutionName": None,
        },
    )
    assert run.status == 0x0000 and len(run.responses) == 1, run.output[-2000:]
    rsp = run.responses[0]
    study = studies[str(rsp.StudyInstanceUID)]
    assert rsp.PatientName == "Doe^Jane" and rsp.StudyDate == "20240105" and rsp.AccessionNumber == "ACC-Q1"
    assert rsp["ModalitiesInStudy"].VM == 1 and rsp.ModalitiesInStudy == "CT"
    assert rsp.NumberOfStudyRelatedSeries == len(study["series"]) == 2
    assert rsp.NumberOfStudyRelatedInstances == sum(study["series"].values()) == 3
    assert rsp.RetrieveAETitle == node.ae_title
    assert "InstitutionName" in rsp and rsp.InstitutionName in ("", None)  # not indexed: returned empty
    assert rsp.QueryRetrieveLevel == "STUDY"


def test_patient_root_every_level(loaded):
    node, instances = loaded
    studies = _studies(instances)
    q1 = _uid_of(instances, "QR1")
    patient = findscu(
        node,
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientID": "QR1",
            "PatientName": None,
            "NumberOfPatientRelatedStudies": None,
            "NumberOfPatientRelatedInstances": None,
        },
        model="patient",
    )
    assert patient.status == 0 and len(patient.responses) == 1, patient.output[-2000:]
    assert patient.responses[0].NumberOfPatientRelatedStudies == 1
    assert patient.responses[0].NumberOfPatientRelatedInstances == 3

    study = findscu(
        node, {"QueryRetrieveLevel": "STUDY", "PatientID": "QR1", "StudyInstanceUID": None}, model="patient"
    )
    assert [str(r.StudyInstanceUID) for r in study.responses] == [q1]

    series = findscu(
        node,
        {
            "QueryRetrieveLevel": "SERIES",
            "PatientID": "QR1",
            "StudyInstanceUID": q1,
            "SeriesInstanceUID": None,
            "Modality": None,
            "NumberOfSeriesRelatedInstances": None,
        },
        model="patient",
    )
    got = {str(r.SeriesInstanceUID): int(r.NumberOfSeriesRelatedInstances) for r in series.responses}
    assert got == dict(studies[q1]["series"])
    assert {r.Modality for r in series.responses} == {"CT"}

    one_series = next(iter(got))
    images = findscu(
        node,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": q1,
            "SeriesInstanceUID": one_series,
            "SOPInstanceUID": None,
            "SOPClassUID": None,
            "InstanceNumber": None,
        },
        model="patient",
    )
    want = sorted(uid for uid, i in instances.items() if i["SeriesInstanceUID"] == one_series)
    assert sorted(str(r.SOPInstanceUID) for r in images.responses) == want

    # Study Root at the IMAGE level, and the same series by a wildcard on a series attribute
    study_root = findscu(
        node,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": q1,
            "SeriesInstanceUID": one_series,
            "SOPInstanceUID": None,
        },
    )
    assert sorted(str(r.SOPInstanceUID) for r in study_root.responses) == want
    # Study Root has no PATIENT level
    bad = findscu(node, {"QueryRetrieveLevel": "PATIENT", "PatientID": "QR1"})
    assert bad.status == 0xA900 and bad.responses == []


def test_non_ascii_patient_name_both_ways(loaded):
    """A UTF-8 query matches names stored in UTF-8 and in Latin-1; answers come back in UTF-8."""
    node, _instances = loaded
    run = findscu(
        node,
        {
            "SpecificCharacterSet": "ISO_IR 192",
            "QueryRetrieveLevel": "STUDY",
            "PatientName": "Müller*",
            "StudyInstanceUID": None,
            "PatientID": None,
        },
    )
    assert run.status == 0, run.output[-2000:]
    got = {str(r.PatientID): str(r.PatientName) for r in run.responses}
    assert got == {"QR4": "Müller^Jürgen", "QR5": "Müller^Käthe"}
    assert {r.SpecificCharacterSet for r in run.responses} == {"ISO_IR 192"}
    # Asked in Latin-1 (argv carries the Latin-1 bytes as they are), answered in Latin-1: it can carry the name.
    latin_bytes = "Müller^Jürgen".encode("latin-1").decode("utf-8", "surrogateescape")
    latin = findscu(
        node,
        {
            "SpecificCharacterSet": "ISO_IR 100",
            "QueryRetrieveLevel": "STUDY",
            "PatientName": latin_bytes,
            "PatientID": None,
        },
    )
    assert latin.status == 0, latin.output[-2000:]
    assert [(r.SpecificCharacterSet, str(r.PatientName), r.PatientID) for r in latin.responses] == [
        ("ISO_IR 100", "Müller^Jürgen", "QR4")
    ]


def test_find_refused_without_permission(loaded):
    node, _ = loaded
    run = findscu(node, {"QueryRetrieveLevel": "STUDY", "PatientID": "QR1"}, aet="NOFIND")
    assert run.status == 0x0124 and run.responses == [], run.output[-2000:]


def test_cancel(tmp_path):
    """C-CANCEL after the first response: matching stops with 0xFE00 long before every match went out.

    20,000 indexed instances (rows only) with no query limit, so the answer takes far longer than
    findscu needs to send its C-CANCEL: the test does not depend on timing."""
    node = make_node(tmp_path / "big", aets=AETS, query_limit=0)
    index = Index(node.index_path)
    synthetic.index_rows(index, 20_000)
    index.close()
    node.start()
    try:
        run = findscu(node, {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": None}, extra=("--cancel", "1"))
        assert run.status == 0xFE00, run.output[-2000:]
        assert 1 <= len(run.responses) < 20_000
    finally:
        node.stop()


def test_query_limit(tmp_path):
    node = make_node(tmp_path / "limited", aets=AETS, query_limit=2).start()
    try:
        sent = send_files(node, _write_generated(tmp_path / "files"))
        assert len(expected_instances(sent)) == 9
        cut = findscu(node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None})
        assert cut.status == 0xFE00 and len(cut.responses) == 2, cut.output[-2000:]
        assert "narrow the query" in cut.output
        fits = findscu(node, {"QueryRetrieveLevel": "STUDY", "PatientID": "QR1", "StudyInstanceUID": None})
        assert fits.status == 0 and len(fits.responses) == 1
    finally:
        node.stop()
