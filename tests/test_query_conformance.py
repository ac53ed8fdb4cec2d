"""Differential C-FIND test (issue 15): the same generated instances stored into a pacsdeck node and into
DCMTK's dcmqrscp, the same queries asked of both, the sets of returned unique keys compared.

Where pacsdeck deliberately answers otherwise than dcmqrscp, the query is listed in DIFFERENCES with the
PS3.4 clause that decides it; the test asserts that every other query agrees exactly and that every listed
query really differs, so DIFFERENCES stays the conformance record."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import generate_uid

from storage import synthetic

from .agent_support import QRSCP
from .conftest import free_port, make_node, require_tool, start_listener, terminate
from .qr_support import findscu, send_files

AETS = [
    {"ae_title": "STORESCU", "host": "127.0.0.1"},
    {"ae_title": "FINDSCU", "host": "127.0.0.1", "operations": ["find"]},
]
ABSENT = None  # in STUDIES: the attribute is deleted from the instances

# label: (PatientID, PatientName, StudyDate, StudyTime, charset, modality per series, instances per series)
STUDIES = {
    "S01": ("CF1", "Doe^Jane", "20240105", "101530", None, ("CT", "CT"), 3),
    "S02": ("CF2", "doe^john", "20240310", "1015", None, ("MR", "OT"), 3),
    "S03": ("CF3", "DOE^JANE^M", "20231231", "143000.5", None, ("CR", "CR"), 2),
    "S04": ("CF4", "Müller^Jürgen", "20240601", "0800", "ISO_IR 192", ("CT", "MR"), 3),
    "S05": ("CF5", "Müller^Käthe", "20240602", "235959.123456", "ISO_IR 100", ("CT", "US"), 3),
    "S06": ("CF6", "Smith", "20240601", "120000", None, ("US", "US", "US"), 2),
    "S07": ("CF7", "", "20240105", "", None, ("CT", "CT"), 2),
    "S08": ("CF8", ABSENT, ABSENT, "0930", None, ("MR", "MR"), 3),
    "S09": ("", "Anon^One", "20220101", "000000", None, ("CT", "CT"), 2),
    "S10": (ABSENT, "Anon^Two", "20220102", "0930", None, ("CR", "CT"), 2),
    "S11": ("CF11", "Brown^Tom", "20200101", "1200", None, ("CT", "CT"), 3),
    "S12": ("CF11", "Brown^Thomas", "20200102", "12", None, ("CT", "MR"), 3),
    "S13": ("CF13", "O'Neil^Mary", "", "1405", None, ("OT", "OT"), 2),
    "S14": ("CF14", "Van Der Berg^Ann", "19991231", "140438", None, ("CT", "CT"), 3),
    "S15": ("CF15", "Garçon^Émile", "20240605", "14:04:38", "ISO_IR 100", ("MR", "MR"), 2),
    "S16": ("CF16", "Garçon^Émile", "20240606", "2300", "ISO_IR 192", ("CT", "CT"), 2),
}

# S15 is stored with the ACR-NEMA time form on purpose; pydicom warns when writing it.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR TM")

S, SE, IM, PT = "STUDY", "SERIES", "IMAGE", "PATIENT"


def _study(qid, **keys):
    return (qid, "study", S, keys, None)


def _names(qid, value, charset=None):
    return (qid, "study", S, {"PatientName": value}, charset)


# (id, model, level, keys, charset of the query values); {S01}, {S01_1}, {S01_1_0} are study, series and
# instance UIDs of the generated data.
QUERIES = [
    # --- PatientName: carets, case, wildcards
    _names("pn-exact", "Doe^Jane"),
    _names("pn-lower", "doe^jane"),
    _names("pn-upper", "DOE^JANE"),
    _names("pn-three-parts", "DOE^JANE^M"),
    _names("pn-prefix", "Doe*"),
    _names("pn-prefix-lower", "doe*"),
    _names("pn-prefix-upper", "DOE*"),
    _names("pn-contains", "*oe*"),
    _names("pn-question", "D?e^J*"),
    _names("pn-question-lower", "d?e^j*"),
    _names("pn-no-caret", "Smith"),
    _names("pn-trailing-caret", "Smith^"),
    _names("pn-family-only", "Doe"),
    _names("pn-caret-star", "*^J*"),
    _names("pn-star", "*"),
    _names("pn-universal", ""),
    _names("pn-empty-value", '""'),
    _names("pn-brown-tom", "Brown^Tom"),
    _names("pn-brown-thomas", "Brown^Thomas"),
    _names("pn-brown-star", "Brown*"),
    _names("pn-brown-t-star", "Brown^T*"),
    _names("pn-anon", "Anon*"),
    _names("pn-given-one", "*^One"),
    _names("pn-apostrophe", "O'Neil*"),
    _names("pn-spaces", "Van Der Berg^Ann"),
    _names("pn-spaces-star", "Van*"),
    _names("pn-no-match", "Nobody^Here"),
    # --- PatientName: Latin-1 and UTF-8
    _names("pn-utf8-exact", "Müller^Jürgen", "ISO_IR 192"),
    _names("pn-utf8-prefix", "Müller*", "ISO_IR 192"),
    _names("pn-utf8-latin1-name", "Müller^Käthe", "ISO_IR 192"),
    _names("pn-latin1-exact", "Müller^Käthe", "ISO_IR 100"),
    _names("pn-latin1-prefix", "Müller*", "ISO_IR 100"),
    _names("pn-latin1-utf8-name", "Müller^Jürgen", "ISO_IR 100"),
    _names("pn-question-umlaut", "M?ller*"),
    _names("pn-utf8-no-charset", "Müller*"),
    _names("pn-garcon-latin1", "Garçon^Émile", "ISO_IR 100"),
    _names("pn-garcon-utf8", "Garçon^Émile", "ISO_IR 192"),
    _names("pn-garcon-suffix-utf8", "*Émile", "ISO_IR 192"),
    # --- PatientID: case, wildcards, empty and absent
    _study("pid-exact", PatientID="CF1"),
    _study("pid-lower", PatientID="cf1"),
    _study("pid-prefix", PatientID="CF1*"),
    _study("pid-question", PatientID="CF?"),
    _study("pid-question2", PatientID="CF1?"),
    _study("pid-shared", PatientID="CF11"),
    _study("pid-star", PatientID="*"),
    _study("pid-universal", PatientID=""),
    _study("pid-empty-value", PatientID='""'),
    _study("pid-and-name", PatientID="CF11", PatientName="Brown^Tom"),
    _study("pid-and-name-miss", PatientID="CF1", PatientName="Brown^Tom"),
    # --- StudyDate: single values, ranges, empty and absent
    _study("da-single", StudyDate="20240105"),
    _study("da-single-shared", StudyDate="20240601"),
    _study("da-single-none", StudyDate="20240104"),
    _study("da-range", StudyDate="20240101-20240331"),
    _study("da-range-one-day", StudyDate="20240105-20240105"),
    _study("da-range-upper", StudyDate="20240601-20240602"),
    _study("da-open-low", StudyDate="-20231231"),
    _study("da-open-high", StudyDate="20240601-"),
    _study("da-range-wide", StudyDate="19000101-29991231"),
    _study("da-range-2020", StudyDate="20200101-20200102"),
    _study("da-range-reversed", StudyDate="20240602-20240601"),
    _study("da-star", StudyDate="*"),
    _study("da-universal", StudyDate=""),
    _study("da-empty-value", StudyDate='""'),
    _study("da-acr-nema", StudyDate="2024.01.05"),
    ("da-and-name", "study", S, {"StudyDate": "20240101-20241231", "PatientName": "Müller*"}, "ISO_IR 192"),
    # --- StudyTime: single values (HHMMSS, HHMM, HH, fractions), ranges
    _study("tm-hhmmss", StudyTime="101530"),
    _study("tm-hhmm", StudyTime="1015"),
    _study("tm-hh", StudyTime="10"),
    _study("tm-1200", StudyTime="1200"),
    _study("tm-120000", StudyTime="120000"),
    _study("tm-12", StudyTime="12"),
    _study("tm-fraction", StudyTime="143000.5"),
    _study("tm-fraction-whole", StudyTime="143000"),
    _study("tm-fraction-long", StudyTime="235959.123456"),
    _study("tm-0800", StudyTime="0800"),
    _study("tm-080000", StudyTime="080000"),
    _study("tm-midnight", StudyTime="000000"),
    _study("tm-colons", StudyTime="14:04:38"),
    _study("tm-range", StudyTime="1405-1500"),
    _study("tm-range-1404", StudyTime="1404-1500"),
    _study("tm-open-low", StudyTime="-1015"),
    _study("tm-open-high", StudyTime="1015-"),
    _study("tm-range-morning", StudyTime="0000-0930"),
    _study("tm-range-late", StudyTime="2359-"),
    _study("tm-range-point", StudyTime="1200-1200"),
    _study("tm-range-seconds", StudyTime="120000-143000"),
    _study("tm-universal", StudyTime=""),
    _study("tm-empty-value", StudyTime='""'),
    _study("tm-and-date", StudyDate="20240105-20240601", StudyTime="1000-1200"),
    _study("dt-combined-range", StudyDate="20240105-20240310", StudyTime="1015-1015"),
    # --- other study keys
    _study("acc-exact", AccessionNumber="ACC-S03"),
    _study("acc-prefix", AccessionNumber="ACC-S1*"),
    _study("desc-star", StudyDescription="Synthetic*"),
    # --- UID lists
    _study("uid-single", StudyInstanceUID="{S01}"),
    _study("uid-list", StudyInstanceUID="{S01}\\{S05}\\{S09}"),
    _study("uid-list-unknown", StudyInstanceUID="{S02}\\1.2.3.4.5.6.7.8.9"),
    _study("uid-unknown", StudyInstanceUID="1.2.3.4.5.6.7.8.9"),
    _study("uid-list-and-name", StudyInstanceUID="{S11}\\{S12}", PatientName="Brown^Tom"),
    # --- SERIES level
    ("se-all", "study", SE, {"StudyInstanceUID": "{S06}"}, None),
    ("se-modality", "study", SE, {"StudyInstanceUID": "{S04}", "Modality": "MR"}, None),
    ("se-modality-wild", "study", SE, {"StudyInstanceUID": "{S02}", "Modality": "?T"}, None),
    ("se-modality-lower", "study", SE, {"StudyInstanceUID": "{S01}", "Modality": "ct"}, None),
    ("se-modality-none", "study", SE, {"StudyInstanceUID": "{S01}", "Modality": "US"}, None),
    ("se-uid", "study", SE, {"StudyInstanceUID": "{S06}", "SeriesInstanceUID": "{S06_1}"}, None),
    ("se-uid-list", "study", SE, {"StudyInstanceUID": "{S06}", "SeriesInstanceUID": "{S06_0}\\{S06_2}"}, None),
    ("se-uid-other-study", "study", SE, {"StudyInstanceUID": "{S06}", "SeriesInstanceUID": "{S01_0}"}, None),
    ("se-number", "study", SE, {"StudyInstanceUID": "{S05}", "SeriesNumber": "1"}, None),
    ("se-desc", "study", SE, {"StudyInstanceUID": "{S05}", "SeriesDescription": "US*"}, None),
    ("se-no-pid-study", "study", SE, {"StudyInstanceUID": "{S10}"}, None),
    # --- IMAGE level
    ("im-all", "study", IM, {"StudyInstanceUID": "{S01}", "SeriesInstanceUID": "{S01_0}"}, None),
    (
        "im-number",
        "study",
        IM,
        {"StudyInstanceUID": "{S01}", "SeriesInstanceUID": "{S01_1}", "InstanceNumber": "2"},
        None,
    ),
    (
        "im-uid",
        "study",
        IM,
        {"StudyInstanceUID": "{S05}", "SeriesInstanceUID": "{S05_0}", "SOPInstanceUID": "{S05_0_1}"},
        None,
    ),
    (
        "im-uid-list",
        "study",
        IM,
        {
            "StudyInstanceUID": "{S05}",
            "SeriesInstanceUID": "{S05_1}",
            "SOPInstanceUID": "{S05_1_0}\\{S05_1_1}\\{S05_0_0}",
        },
        None,
    ),
    (
        "im-sop-class",
        "study",
        IM,
        {"StudyInstanceUID": "{S03}", "SeriesInstanceUID": "{S03_1}", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1"},
        None,
    ),
    (
        "im-sop-class-miss",
        "study",
        IM,
        {"StudyInstanceUID": "{S03}", "SeriesInstanceUID": "{S03_1}", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
        None,
    ),
    # --- Patient Root
    ("p-all", "patient", PT, {}, None),
    ("p-pid", "patient", PT, {"PatientID": "CF11"}, None),
    ("p-pid-wild", "patient", PT, {"PatientID": "CF1*"}, None),
    ("p-pid-empty-value", "patient", PT, {"PatientID": '""'}, None),
    ("p-name", "patient", PT, {"PatientName": "Doe^Jane"}, None),
    ("p-name-wild", "patient", PT, {"PatientName": "*oe*"}, None),
    ("p-name-old", "patient", PT, {"PatientName": "Brown^Tom"}, None),
    ("p-name-new", "patient", PT, {"PatientName": "Brown^Thomas"}, None),
    ("p-name-star", "patient", PT, {"PatientName": "*"}, None),
    ("p-name-latin1", "patient", PT, {"PatientName": "Müller^Käthe"}, "ISO_IR 100"),
    ("p-name-utf8", "patient", PT, {"PatientName": "Müller^Jürgen"}, "ISO_IR 192"),
    ("p-anon", "patient", PT, {"PatientName": "Anon*"}, None),
    ("ps-study", "patient", S, {"PatientID": "CF11"}, None),
    ("ps-study-date", "patient", S, {"PatientID": "CF11", "StudyDate": "20200102"}, None),
    ("ps-study-time", "patient", S, {"PatientID": "CF11", "StudyTime": "1200"}, None),
    ("ps-study-uid-list", "patient", S, {"PatientID": "CF1", "StudyInstanceUID": "{S01}\\{S02}"}, None),
    ("ps-series", "patient", SE, {"PatientID": "CF4", "StudyInstanceUID": "{S04}", "Modality": "CT"}, None),
    (
        "ps-image",
        "patient",
        IM,
        {"PatientID": "CF6", "StudyInstanceUID": "{S06}", "SeriesInstanceUID": "{S06_2}"},
        None,
    ),
]

UNIQUE = {PT: "PatientID", S: "StudyInstanceUID", SE: "SeriesInstanceUID", IM: "SOPInstanceUID"}

# Queries where pacsdeck deliberately answers otherwise than dcmqrscp: id -> (PS3.4 clause, why).
DIFFERENCES: dict[str, tuple[str, str]] = {
    "pn-question-umlaut": (
        "C.2.2.2.4",
        "'?' is one character: ü in UTF-8 (2 bytes) and Latin-1 (1 byte); dcmqrscp: none",
    ),
    "pn-utf8-no-charset": ("C.2.2.2.1, PS3.5 6.1.2.5", "non-ASCII bytes without SpecificCharacterSet: not guessed"),
    "da-star": ("C.2.2.2.4", "'*' alone is universal, for DA too, keeping dateless studies; dcmqrscp: a literal"),
    # Empty value matching ('""') is not supported yet: refused, where dcmqrscp answers nothing.
    "da-empty-value": ("C.2.2.2.1, C.2.2.2.5", "'\"\"' is neither a date nor a range: 0xA900; dcmqrscp: none"),
    "tm-empty-value": ("C.2.2.2.1, C.2.2.2.5", "'\"\"' is neither a time nor a range: 0xA900; dcmqrscp: none"),
    "tm-open-low": ("C.2.2.2.5", "an upper bound includes its whole unit: -1015 takes 10:15:30; dcmqrscp does not"),
    "tm-range-seconds": ("C.2.2.2.5", "an upper bound includes its whole unit: -143000 takes 14:30:00.5"),
    "dt-combined-range": ("C.2.2.2.5", "1015-1015 takes the whole minute (10:15:30); date and time matched apart"),
    "se-desc": ("C.2.2.2.4, C.2.2.1.2", "SeriesDescription is matched; dcmqrscp's index lacks it, ignores the key"),
    "im-sop-class-miss": ("C.2.2.2.1, C.2.2.1.2", "SOPClassUID is matched; dcmqrscp ignores the key"),
    "p-all": ("C.2.2.1.1, C.6.1.1.2", "a patient is its PatientID (unique key): no patient with an empty one"),
    "p-name-star": ("C.2.2.1.1, C.6.1.1.2", "no patient with an empty PatientID (unique key); dcmqrscp answers one"),
    "p-anon": ("C.2.2.1.1, C.6.1.1.2", "the Anon studies have no PatientID: no patient; dcmqrscp answers ''"),
}

# Queries where pacsdeck, not dcmqrscp, is wrong: kept out of the assertion until fixed.
PACSDECK_BUGS: dict[str, str] = {}


def _write(folder) -> tuple[list, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    paths, uids = [], {}
    for label, (pid, name, date, time, charset, modalities, per_series) in STUDIES.items():
        spec = synthetic.StudySpec(
            patient_id=pid or "",
            patient_name=name or "",
            study_uid=generate_uid(),
            study_date=date or "",
            accession=f"ACC-{label}",
        )
        uids[label] = spec.study_uid
        for s, modality in enumerate(modalities):
            series = uids[f"{label}_{s}"] = generate_uid()
            for n in range(per_series):
                sop = uids[f"{label}_{s}_{n}"] = generate_uid()
                ds = synthetic.instance(
                    spec,
                    series_uid=series,
                    sop_uid=sop,
                    number=n + 1,
                    rows=8,
                    cols=8,
                    modality=modality,
                    charset=charset,
                )
                ds.SeriesNumber = s + 1
                ds.StudyTime = time
                for keyword, value in (("PatientID", pid), ("PatientName", name), ("StudyDate", date)):
                    if value is ABSENT:
                        del ds[keyword]
                path = folder / f"{label}_{s}_{n}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
    return paths, uids


def _start_dcmqrscp(folder) -> QRSCP:
    """dcmqrscp forking (it crashes after every association with --single-process), its storage area
    large enough to keep every study (the factory's 10 studies would drop the oldest)."""
    binary = require_tool("dcmqrscp")
    (folder / "db").mkdir(parents=True)
    port = free_port()
    cfg = folder / "dcmqrscp.cfg"
    cfg.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRSCP {folder / 'db'} RW (200, 256mb) ANY\nAETable END\n"
    )
    return QRSCP(port=port, ae_title="QRSCP", proc=start_listener([binary, "-c", str(cfg), str(port)], port))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    files, uids = _write(root / "files")
    node = make_node(root / "node", aets=AETS, workers=1).start()
    try:
        qrscp = _start_dcmqrscp(root / "dcmqrscp")
        try:
            assert len(send_files(node, files)) == len(files)
            assert len(send_files(qrscp, files)) == len(files)
            yield node, qrscp, uids
        finally:
            terminate(qrscp.proc)
    finally:
        node.stop()


def _encode(value: str, charset: str | None) -> str:
    """A key value as findscu must receive it: Latin-1 bytes through argv for ISO_IR 100."""
    if charset == "ISO_IR 100":
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    return value


def _ask(server, query, uids) -> frozenset | str:
    _, model, level, keys, charset = query
    unique = UNIQUE[level]
    request = {"QueryRetrieveLevel": level}
    if charset:
        request["SpecificCharacterSet"] = charset
    for key, value in keys.items():
        request[key] = _encode(value.format_map(uids), charset)
    request.setdefault(unique, None)
    run = findscu(server, request, model=model)
    if run.status != 0x0000:
        return f"status {run.status if run.status is None else hex(run.status)}"
    return frozenset(str(r.get(unique, "")) for r in run.responses)


def test_pacsdeck_and_dcmqrscp_answer_the_same_queries_alike(both):
    node, qrscp, uids = both
    assert len(QUERIES) >= 100 and len({q[0] for q in QUERIES}) == len(QUERIES)
    assert set(DIFFERENCES) | set(PACSDECK_BUGS) <= {q[0] for q in QUERIES}
    names = {v: k for k, v in uids.items()}
    with ThreadPoolExecutor(8) as pool:
        ours = list(pool.map(lambda q: _ask(node, q, uids), QUERIES))
        theirs = list(pool.map(lambda q: _ask(qrscp, q, uids), QUERIES))

    def show(answer):
        return answer if isinstance(answer, str) else sorted(names.get(u, u) for u in answer)

    for query, a, b in zip(QUERIES, ours, theirs, strict=False):  # the whole record, shown with -s or on failure
        print(f"{query[0]:24} {'same' if a == b else 'DIFF'} pacsdeck {show(a)} dcmqrscp {show(b)}")
    unexpected, honest = [], []
    for query, a, b in zip(QUERIES, ours, theirs, strict=False):
        qid = query[0]
        if qid in PACSDECK_BUGS:
            continue
        if qid in DIFFERENCES:
            if a == b:
                honest.append(f"{qid}: listed as a difference, but both answer {show(a)}")
        elif a != b:
            unexpected.append(f"{qid} {query[3]}: pacsdeck {show(a)} dcmqrscp {show(b)}")
    assert not unexpected and not honest, "\n".join(unexpected + honest)
