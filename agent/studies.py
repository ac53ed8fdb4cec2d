"""studies.find, series.list, instances.list: filters on the index, with C-FIND style matching; studies.send."""

from __future__ import annotations

import re

from storage.index import query as q
from storage.index.query import match_clause
from storage.index.queue import QueueError, enqueue_study

from .aets import addressed
from .protocol import NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from . import validate as v

_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


def _universal(value: str | None) -> bool:
    return value is None or value in ("", "*")


def _modalities(value) -> list[str]:
    items = value.split("\\") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise v.invalid("ModalitiesInStudy", "a modality such as CT, or several as 'CT\\MR' or a list")
    for item in items:
        if not isinstance(item, str) or not _MODALITY.match(item):
            raise v.invalid("ModalitiesInStudy", f"{str(item)[:20]!r} is not a modality code such as CT or MR")
    return items


def find(ctx, params: dict) -> dict:
    node = ctx.require_node()
    where, args = [], []
    for key, column in (("PatientName", "s.patient_name"), ("PatientID", "s.patient_id"),
                        ("AccessionNumber", "s.accession_number")):
        value = params.get(key)
        if value is not None:
            v.dicom_pattern(value, key)
        if not _universal(value):
            clause, values = match_clause(column, value)
            where.append(clause)
            args += values
    if params.get("StudyInstanceUID") is not None:
        where.append("s.study_uid = ?")
        args.append(v.uid(params["StudyInstanceUID"], "StudyInstanceUID"))
    if params.get("StudyDate") not in (None, ""):
        clause, values = q.key_range_clause("s.date_key", *v.date_range(params["StudyDate"], "StudyDate"))
        where.append(clause)
        args += values
    if params.get("ModalitiesInStudy") not in (None, ""):
        clause, values = q.modalities_clause(_modalities(params["ModalitiesInStudy"]))
        where.append(clause)
        args += values
    limit = v.limit(params.get("limit"))
    sql = (
        "SELECT s.*,"
        f" {q.STUDY_MODALITIES} AS modalities, {q.STUDY_SERIES} AS n_series,"
        f" {q.STUDY_INSTANCES} AS n_instances, {q.STUDY_BYTES} AS bytes"
        " FROM studies s"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY s.date_key DESC, s.time_key DESC, s.study_uid LIMIT ?"
    )
    rows = node.index.connection().execute(sql, (*args, limit + 1)).fetchall()
    studies = [{
        "StudyInstanceUID": r["study_uid"],
        "PatientName": r["patient_name"],
        "PatientID": r["patient_id"],
        "StudyDate": r["study_date"],
        "StudyTime": r["study_time"],
        "AccessionNumber": r["accession_number"],
        "StudyID": r["study_id"],
        "StudyDescription": r["study_description"],
        "ModalitiesInStudy": sorted(m for m in (r["modalities"] or "").split(",") if m),
        "NumberOfStudyRelatedSeries": r["n_series"],
        "NumberOfStudyRelatedInstances": r["n_instances"],
        "bytes": r["bytes"],
    } for r in rows[:limit]]
    return {"studies": studies, "count": len(studies), "truncated": len(rows) > limit}


def series_list(ctx, params: dict) -> dict:
    node = ctx.require_node()
    study_uid = v.uid(params.get("StudyInstanceUID"), "StudyInstanceUID")
    limit = v.limit(params.get("limit"))
    conn = node.index.connection()
    if conn.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone() is None:
        raise RPCError(NOT_FOUND, f"no study {study_uid} in the index", {"field": "StudyInstanceUID"})
    rows = conn.execute(
        f"SELECT x.*, {q.SERIES_INSTANCES} AS n_instances, {q.SERIES_BYTES} AS bytes"
        " FROM series x WHERE x.study_uid = ? ORDER BY CAST(x.series_number AS INTEGER), x.series_uid LIMIT ?",
        (study_uid, limit + 1)).fetchall()
    series = [{
        "SeriesInstanceUID": r["series_uid"],
        "StudyInstanceUID": r["study_uid"],
        "Modality": r["modality"],
        "SeriesNumber": r["series_number"],
        "SeriesDescription": r["series_description"],
        "BodyPartExamined": r["body_part"],
        "NumberOfSeriesRelatedInstances": r["n_instances"],
        "bytes": r["bytes"],
    } for r in rows[:limit]]
    return {"series": series, "count": len(series), "truncated": len(rows) > limit}


def instances_list(ctx, params: dict) -> dict:
    node = ctx.require_node()
    series_uid = v.uid(params.get("SeriesInstanceUID"), "SeriesInstanceUID")
    limit = v.limit(params.get("limit"))
    conn = node.index.connection()
    if conn.execute("SELECT 1 FROM series WHERE series_uid=?", (series_uid,)).fetchone() is None:
        raise RPCError(NOT_FOUND, f"no series {series_uid} in the index", {"field": "SeriesInstanceUID"})
    rows = conn.execute(
        "SELECT * FROM instances WHERE series_uid = ? ORDER BY CAST(instance_number AS INTEGER), sop_uid LIMIT ?",
        (series_uid, limit + 1)).fetchall()
    instances = [{
        "SOPInstanceUID": r["sop_uid"],
        "SOPClassUID": r["sop_class_uid"],
        "InstanceNumber": r["instance_number"],
        "TransferSyntaxUID": r["transfer_syntax"],
        "pool": r["pool"],
        "bytes": r["size"],
        "sha256": r["sha256"],
        "received_at": iso_time(r["received_at"]),
        "source_ae": r["source_ae"],
    } for r in rows[:limit]]
    return {"instances": instances, "count": len(instances), "truncated": len(rows) > limit}


def send(ctx, params: dict) -> dict:
    """Queue a forward of every instance of a study to a registered AE; the node's forwarder sends it."""
    node = ctx.require_node()
    study_uid = v.uid(params.get("StudyInstanceUID"), "StudyInstanceUID")
    destination = v.ae_title(params.get("destination"), "destination")
    addressed(node.index.aet(destination), destination, "destination")
    try:
        job = enqueue_study(node.index, study_uid, destination, node.config.queue.max_attempts)
    except QueueError as err:
        raise RPCError(NOT_FOUND, str(err), {"field": err.field}) from None
    return {**job, "destination": destination, "StudyInstanceUID": study_uid}


_LIMIT = Param("integer", "at most this many rows (1-1000, default 100)")
METHODS = (
    Method("studies.find", find, "Studies in the index matching every given filter, newest first", {
        "PatientName": Param("string", "exact, or with * and ? wildcards (case-sensitive)"),
        "PatientID": Param("string", "exact, or with * and ? wildcards"),
        "AccessionNumber": Param("string", "exact, or with * and ? wildcards"),
        "StudyInstanceUID": Param("string", "exact UID"),
        "StudyDate": Param("string", "YYYYMMDD, or a range A-B, A- or -B"),
        "ModalitiesInStudy": Param("string", "CT, or several as CT\\MR (a JSON list works too)"),
        "limit": _LIMIT,
    }),
    Method("series.list", series_list, "Series of one study", {
        "StudyInstanceUID": Param("string", "the study", required=True),
        "limit": _LIMIT,
    }),
    Method("studies.send", send, "Queue a forward of a whole study to a registered AE (a job in queue.list)", {
        "StudyInstanceUID": Param("string", "the study", required=True),
        "destination": Param("string", "registered AE title with host and port", required=True),
    }, audit=True),
    Method("instances.list", instances_list, "Instances of one series, with pool, size and checksum", {
        "SeriesInstanceUID": Param("string", "the series", required=True),
        "limit": _LIMIT,
    }),
)
