"""C-FIND matching on the index (PS3.4 C.2.2): identifiers become SQL, rows become response identifiers."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from . import dicomtime

log = logging.getLogger(__name__)

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_ROOT = "patient"
STUDY_ROOT = "study"
MODEL_LEVELS = {PATIENT_ROOT: LEVELS, STUDY_ROOT: LEVELS[1:]}
UTF8 = "ISO_IR 192"


class QueryError(ValueError):
    """The identifier cannot be answered: PS3.4 0xA900 (does not match SOP class) or 0xC000 family."""


@dataclass(frozen=True)
class Attr:
    """One matchable/returnable attribute: where it lives in the index and how it is compared."""

    keyword: str
    level: str
    sql: str  # an expression over the aliases p (patients), s (studies), x (series), i (instances)
    kind: str = "text"  # text | uid | date | time | count | modalities
    key: str | None = None  # dates and times: the column matched, holding the value as a value (dicomtime.py)


_P, _S, _X, _I = "PATIENT", "STUDY", "SERIES", "IMAGE"
# Derived attributes (PS3.4 C.3.4) are correlated subqueries, computed only when a key asks for them.
STUDY_MODALITIES = "(SELECT group_concat(DISTINCT m.modality) FROM series m WHERE m.study_uid = s.study_uid)"
STUDY_SERIES = "(SELECT count(*) FROM series m WHERE m.study_uid = s.study_uid)"
STUDY_INSTANCES = "(SELECT count(*) FROM instances n WHERE n.study_uid = s.study_uid)"
STUDY_BYTES = "(SELECT coalesce(sum(n.size), 0) FROM instances n WHERE n.study_uid = s.study_uid)"
SERIES_INSTANCES = "(SELECT count(*) FROM instances n WHERE n.series_uid = x.series_uid)"
SERIES_BYTES = "(SELECT coalesce(sum(n.size), 0) FROM instances n WHERE n.series_uid = x.series_uid)"

ATTRS = {
    a.keyword: a
    for a in (
        Attr("PatientName", _P, "p.patient_name"),
        Attr("PatientID", _P, "p.patient_id"),
        Attr("IssuerOfPatientID", _P, "p.issuer"),
        Attr("PatientBirthDate", _P, "p.birth_date", "date", key="p.birth_date_key"),
        Attr("PatientSex", _P, "p.sex"),
        # An empty PatientID joins no two studies: its studies count only themselves.
        Attr(
            "NumberOfPatientRelatedStudies",
            _P,
            "(CASE WHEN p.patient_id = '' THEN 1 ELSE (SELECT count(*) FROM studies m"
            " WHERE m.patient_id = p.patient_id AND m.issuer = p.issuer) END)",
            "count",
        ),
        Attr(
            "NumberOfPatientRelatedSeries",
            _P,
            "(CASE WHEN p.patient_id = '' THEN (SELECT count(*) FROM series m WHERE m.study_uid = {own_study})"
            " ELSE (SELECT count(*) FROM series m JOIN studies t ON t.study_uid = m.study_uid"
            " WHERE t.patient_id = p.patient_id AND t.issuer = p.issuer) END)",
            "count",
        ),
        Attr(
            "NumberOfPatientRelatedInstances",
            _P,
            "(CASE WHEN p.patient_id = '' THEN (SELECT count(*) FROM instances n WHERE n.study_uid = {own_study})"
            " ELSE (SELECT count(*) FROM instances n JOIN studies t ON t.study_uid = n.study_uid"
            " WHERE t.patient_id = p.patient_id AND t.issuer = p.issuer) END)",
            "count",
        ),
        Attr("StudyInstanceUID", _S, "s.study_uid", "uid"),
        Attr("StudyDate", _S, "s.study_date", "date", key="s.date_key"),
        Attr("StudyTime", _S, "s.study_time", "time", key="s.time_key"),
        Attr("AccessionNumber", _S, "s.accession_number"),
        Attr("StudyID", _S, "s.study_id"),
        Attr("StudyDescription", _S, "s.study_description"),
        Attr("ReferringPhysicianName", _S, "s.referring_physician"),
        Attr("ModalitiesInStudy", _S, STUDY_MODALITIES, "modalities"),
        Attr("NumberOfStudyRelatedSeries", _S, STUDY_SERIES, "count"),
        Attr("NumberOfStudyRelatedInstances", _S, STUDY_INSTANCES, "count"),
        Attr("SeriesInstanceUID", _X, "x.series_uid", "uid"),
        Attr("Modality", _X, "x.modality"),
        Attr("SeriesNumber", _X, "x.series_number"),
        Attr("SeriesDescription", _X, "x.series_description"),
        Attr("BodyPartExamined", _X, "x.body_part"),
        Attr("NumberOfSeriesRelatedInstances", _X, SERIES_INSTANCES, "count"),
        Attr("SOPInstanceUID", _I, "i.sop_uid", "uid"),
        Attr("SOPClassUID", _I, "i.sop_class_uid", "uid"),
        Attr("InstanceNumber", _I, "i.instance_number"),
    )
}

# The tables a query at each level reads; upper levels are joined so their keys can match too.
# Below the PATIENT level a study answers with its own patient attributes: the patient columns
# of the study row, which `p.` names there (see column()); the `patients` view serves PATIENT level.
_FROM = {
    _P: "patients p",
    _S: "studies s",
    _X: "series x JOIN studies s ON s.study_uid = x.study_uid",
    _I: "instances i JOIN series x ON x.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid",
}
_ORDER = {
    _P: "p.patient_id, p.issuer",
    _S: "s.date_key DESC, s.time_key DESC, s.study_uid",
    _X: "x.study_uid, CAST(x.series_number AS INTEGER), x.series_uid",
    _I: "i.series_uid, CAST(i.instance_number AS INTEGER), i.sop_uid",
}
_UNIQUE_KEY = {_P: "PatientID", _S: "StudyInstanceUID", _X: "SeriesInstanceUID", _I: "SOPInstanceUID"}
# Returned when asked for, though not in the index: their values are facts about this node.
_NODE_KEYS = ("RetrieveAETitle", "InstanceAvailability")


def column(attr: Attr, level: str, key: bool = False) -> str:
    """The SQL of `attr` in a query at `level`: patient attributes below the PATIENT level are the
    study row's own (`p.` becomes `s.`); `key` picks a date or time's value column."""
    sql = attr.key if key and attr.key else attr.sql
    if attr.level == _P and level != _P:
        sql = sql.replace("p.", "s.")
    # An empty PatientID is no patient: its counts are those of the study itself (NULL at PATIENT level,
    # where the view has no empty IDs).
    return sql.replace("{own_study}", "s.study_uid" if level != _P else "NULL")


# --- matching primitives, shared with the agent's studies.find ---------------------------------


def match_clause(column: str, value: str) -> tuple[str, list]:
    """PS3.4 C.2.2.2.1/4: single value matching, or wildcard matching when the value holds '*' or '?'.

    Becomes a SQLite GLOB (case-sensitive, like DICOM); GLOB's own '[' is escaped so it stays literal.
    """
    if "*" in value or "?" in value:
        return f"{column} GLOB ?", [value.replace("[", "[[]")]
    return f"{column} = ?", [value]


def list_clause(column: str, values: list[str]) -> tuple[str, list]:
    """PS3.4 C.2.2.2.2 list of UID matching (and, for other text, any of the values)."""
    parts, args = [], []
    for value in values:
        clause, extra = match_clause(column, value)
        parts.append(clause)
        args += extra
    if all(" = ?" in p for p in parts):  # one IN uses the column's index; ORs of = may not
        return f"{column} IN ({', '.join('?' for _ in values)})", list(values)
    return "(" + " OR ".join(parts) + ")", args


def modalities_clause(modalities: list[str], study: str = "s.study_uid") -> tuple[str, list]:
    """ModalitiesInStudy matching: a study matches when any of its series has any of the modalities."""
    clause, args = list_clause("m.modality", modalities)
    return f"EXISTS (SELECT 1 FROM series m WHERE m.study_uid = {study} AND {clause})", args


# --- identifiers -> SQL -------------------------------------------------------------------------


def _values(elem: DataElement) -> list[str]:
    """An identifier element's value(s) as text; [] for universal matching (empty or '*')."""
    value = elem.value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    texts = [str(v).strip() if elem.VR != "PN" else str(v) for v in items]
    texts = [t for t in texts if t != ""]
    if texts == ["*"]:
        return []
    return texts


def value_clause(attr: Attr, sql: str, values: list[str]) -> tuple[str, list]:
    """Matching of `values` against `sql`, the attribute's column (its key column for dates and times)."""
    if attr.kind == "uid":
        return list_clause(sql, values)
    if attr.kind in ("date", "time"):
        if len(values) != 1:
            raise QueryError(f"{attr.keyword}: one date/time or range, got {len(values)} values")
        try:
            if attr.kind == "date":
                low, high = dicomtime.date_range(values[0])
                single = low == high and "-" not in values[0]
            else:
                low, high, single = dicomtime.time_range(values[0])
        except dicomtime.BadValue as err:
            raise QueryError(f"{attr.keyword}: {err}") from None
        if single:
            return f"{sql} = ?", [low]
        return key_range_clause(sql, low, high)
    if attr.kind == "modalities":
        return modalities_clause(values)
    if attr.kind == "count":
        return "", []  # derived counts are returned, not matched (PS3.4: matching on them is optional)
    return list_clause(sql, values) if len(values) > 1 else match_clause(sql, values[0])


def key_range_clause(sql: str, low, high) -> tuple[str, list]:
    """PS3.4 C.2.2.2.5 range matching on a key column, inclusive; a value without a key (empty,
    or not a date or time) never matches a range."""
    where, args = [f"{sql} IS NOT NULL"], []
    if low is not None:
        where.append(f"{sql} >= ?")
        args.append(low)
    if high is not None:
        where.append(f"{sql} <= ?")
        args.append(high)
    return " AND ".join(where), args


def _attr_clause(attr: Attr, level: str, values: list[str]) -> tuple[str, list]:
    clause, args = value_clause(attr, column(attr, level, key=True), values)
    if clause and attr.level == _P and level == _P and attr.keyword not in ("PatientID", "IssuerOfPatientID"):
        # A patient matches when any of its studies does: a corrected name still finds the earlier studies.
        inner = clause.replace("p.", "t.")
        clause = (
            f"EXISTS (SELECT 1 FROM studies t WHERE t.patient_id = p.patient_id AND t.issuer = p.issuer AND {inner})"
        )
    return clause, args


@dataclass
class Query:
    """A C-FIND identifier understood: what to match, what to return."""

    level: str
    where: list
    args: list
    keys: list  # (keyword or tag, Attr | None, VR) in identifier order: what each response carries
    charset: list  # the request's SpecificCharacterSet terms

    def unsupported_keys(self) -> list:
        """Requested keys the index does not hold (returned empty)."""
        return [k for k, a, _ in self.keys if a is None and keyword_for_tag(k) not in _NODE_KEYS]

    def sql(self, limit: int | None) -> tuple[str, list]:
        columns = [f"{column(a, self.level)} AS {a.keyword}" for _, a, _ in self.keys if a is not None]
        columns.append(f"{column(ATTRS[_UNIQUE_KEY[self.level]], self.level)} AS _key")
        text = f"SELECT {', '.join(columns)} FROM {_FROM[self.level]}"
        if self.where:
            text += " WHERE " + " AND ".join(self.where)
        text += f" ORDER BY {_ORDER[self.level]}"
        args = list(self.args)
        if limit is not None:
            text += " LIMIT ?"
            args.append(limit)
        return text, args


def parse_identifier(identifier: Dataset, model: str, *, unique_keys_only: bool = False) -> Query:
    """Turn a C-FIND/C-MOVE/C-GET identifier into a Query; QueryError if it does not fit the model.

    Keys of the query level and the levels above it match (relational-style, which a hierarchical
    query is a special case of); keys below the query level do not match (PS3.4 C.4.1.2.1) and come
    back empty, like every requested key the index does not hold.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in MODEL_LEVELS[model]:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not one of {', '.join(MODEL_LEVELS[model])}")
    depth = LEVELS.index(level)
    where, args, keys = [], [], []
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        attr = ATTRS.get(elem.keyword)
        if attr is not None and LEVELS.index(attr.level) > depth:
            attr = None  # a key below the query level: returned empty, never matched
        if attr is None:
            keys.append((elem.tag, None, elem.VR))
            continue
        keys.append((elem.keyword, attr, elem.VR))
        if unique_keys_only and elem.keyword != _UNIQUE_KEY[attr.level]:
            continue
        if elem.VR == "SQ":
            continue
        try:
            values = _values(elem)
        except Exception as err:  # a value pydicom cannot decode
            raise QueryError(f"{elem.keyword}: cannot read the value: {err}") from err
        if values:
            clause, extra = _attr_clause(attr, level, values)
            if clause:
                where.append(clause)
                args += extra
    charset = identifier.get("SpecificCharacterSet") or []
    charset = [charset] if isinstance(charset, str) else [str(c) for c in charset]
    return Query(level=level, where=where, args=args, keys=keys, charset=charset)


def find(conn: sqlite3.Connection, query: Query, limit: int | None = None) -> Iterator[sqlite3.Row]:
    """The matching rows, in a stable order; at most `limit` (None: all)."""
    text, args = query.sql(limit)
    yield from conn.execute(text, args)


# --- rows -> response identifiers --------------------------------------------------------------


def response_charset(query: Query, texts: list[str]) -> list[str]:
    """The SpecificCharacterSet to answer in: the request's when it can carry every value, else UTF-8.

    PS3.4 C.4.1.1.3.1 lets the SCP answer in another character set than the request's, and says
    which through SpecificCharacterSet; UTF-8 (ISO_IR 192) can carry anything in the index.
    """
    if all(t.isascii() for t in texts):
        return query.charset
    if query.charset and len(query.charset) == 1:
        try:
            codec = convert_encodings(query.charset)[0]
            for t in texts:
                t.encode(codec)
            return query.charset
        except (LookupError, UnicodeEncodeError, ValueError):
            pass
    return [UTF8]


def response(row: sqlite3.Row, query: Query, *, ae_title: str) -> Dataset:
    """One C-FIND response identifier: every key of the request, with the index's value or empty."""
    ds = Dataset()
    texts = []
    for key, attr, vr in query.keys:
        if attr is None:
            if key.is_private:
                continue  # private keys are never returned (PS3.4 C.4.1.1.3.2)
            if vr == "SQ":
                ds.add_new(key, "SQ", Sequence())  # sequence matching is not supported: returned empty
                continue
            name = keyword_for_tag(key)
            if name == "RetrieveAETitle":
                ds.RetrieveAETitle = ae_title
            elif name == "InstanceAvailability":
                ds.InstanceAvailability = "ONLINE"
            else:
                ds.add_new(key, vr, None)
            continue
        value = row[attr.keyword]
        if attr.kind == "count":
            setattr(ds, attr.keyword, int(value or 0))
        elif attr.kind == "modalities":
            setattr(ds, attr.keyword, sorted(m for m in (value or "").split(",") if m))
        else:
            text = value or ""
            texts.append(text)
            ds.add_new(attr.keyword, dictionary_VR(attr.keyword), text.split("\\") if "\\" in text else text)
    ds.QueryRetrieveLevel = query.level
    charset = response_charset(query, texts)
    if charset:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    return ds


# --- retrieve: which instances a C-MOVE / C-GET identifier names --------------------------------


def retrieve_rows(conn: sqlite3.Connection, identifier: Dataset, model: str) -> list[sqlite3.Row]:
    """Instances named by a C-MOVE/C-GET identifier: unique keys at and above its level (PS3.4 C.4.2.2.1)."""
    query = parse_identifier(identifier, model, unique_keys_only=True)
    if not query.where:
        raise QueryError(f"a {query.level} level retrieve needs {_UNIQUE_KEY[query.level]}")
    sql = (
        f"SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.pool, i.path, i.study_uid"
        f" FROM {_FROM[_I]} WHERE {' AND '.join(query.where)} ORDER BY {_ORDER[_I]}"
    )
    return conn.execute(sql, query.args).fetchall()
