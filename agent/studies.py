"""studies.find, series.list, instances.list: filters on the index, with C-FIND style matching; studies.send."""

from __future__ import annotations

import re

from storage.index import catalog
from storage.index.queue import QueueError, enqueue_study

from . import validate as v
from .aets import addressed
from .protocol import NOT_FOUND, RPCError, iso_time
from .registry import Method, Param
from .schema import BOOL, INT, STR, TIME, Arr, Obj

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


def _pattern(params: dict, key: str) -> str | None:
    """A matching key's value; None for universal matching (absent, empty or '*')."""
    value = params.get(key)
    if value is not None:
        v.dicom_pattern(value, key)
    return None if _universal(value) else value


def find(ctx, params: dict) -> dict:
    node = ctx.require_node()
    keys = catalog.StudyFilter(
        patient_name=_pattern(params, "PatientName"),
        patient_id=_pattern(params, "PatientID"),
        accession_number=_pattern(params, "AccessionNumber"),
        study_uid=v.uid(params["StudyInstanceUID"], "StudyInstanceUID")
        if params.get("StudyInstanceUID") is not None
        else None,
        date_range=v.date_range(params["StudyDate"], "StudyDate")
        if params.get("StudyDate") not in (None, "")
        else None,
        modalities=tuple(_modalities(params["ModalitiesInStudy"]))
        if params.get("ModalitiesInStudy") not in (None, "")
        else None,
    )
    page = catalog.find_studies(node.index, keys, v.limit(params.get("limit")))
    studies = [
        {
            "StudyInstanceUID": s.study_uid,
            "PatientName": s.patient_name,
            "PatientID": s.patient_id,
            "StudyDate": s.study_date,
            "StudyTime": s.study_time,
            "AccessionNumber": s.accession_number,
            "StudyID": s.study_id,
            "StudyDescription": s.study_description,
            "ModalitiesInStudy": list(s.modalities),
            "NumberOfStudyRelatedSeries": s.series,
            "NumberOfStudyRelatedInstances": s.instances,
            "bytes": s.bytes,
        }
        for s in page.items
    ]
    return {"studies": studies, "count": len(studies), "truncated": page.truncated}


def series_list(ctx, params: dict) -> dict:
    node = ctx.require_node()
    study_uid = v.uid(params.get("StudyInstanceUID"), "StudyInstanceUID")
    page = catalog.series_of(node.index, study_uid, v.limit(params.get("limit")))
    if page is None:
        raise RPCError(NOT_FOUND, f"no study {study_uid} in the index", {"field": "StudyInstanceUID"})
    series = [
        {
            "SeriesInstanceUID": x.series_uid,
            "StudyInstanceUID": x.study_uid,
            "Modality": x.modality,
            "SeriesNumber": x.series_number,
            "SeriesDescription": x.series_description,
            "BodyPartExamined": x.body_part,
            "NumberOfSeriesRelatedInstances": x.instances,
            "bytes": x.bytes,
        }
        for x in page.items
    ]
    return {"series": series, "count": len(series), "truncated": page.truncated}


def instances_list(ctx, params: dict) -> dict:
    node = ctx.require_node()
    series_uid = v.uid(params.get("SeriesInstanceUID"), "SeriesInstanceUID")
    page = catalog.instances_of(node.index, series_uid, v.limit(params.get("limit")))
    if page is None:
        raise RPCError(NOT_FOUND, f"no series {series_uid} in the index", {"field": "SeriesInstanceUID"})
    instances = [
        {
            "SOPInstanceUID": i.sop_uid,
            "SOPClassUID": i.sop_class_uid,
            "InstanceNumber": i.instance_number,
            "TransferSyntaxUID": i.transfer_syntax,
            "pool": i.pool,
            "bytes": i.size,
            "sha256": i.sha256,
            "received_at": iso_time(i.received_at),
            "source_ae": i.source_ae,
        }
        for i in page.items
    ]
    return {"instances": instances, "count": len(instances), "truncated": page.truncated}


def send(ctx, params: dict) -> dict:
    """Queue a forward of every instance of a study to a registered AE; the node's forwarder sends it."""
    node = ctx.require_node()
    study_uid = v.uid(params.get("StudyInstanceUID"), "StudyInstanceUID")
    destination = v.ae_title(params.get("destination"), "destination")
    addressed(node.index, destination, "destination")
    try:
        job = enqueue_study(node.index, study_uid, destination, node.config.queue.max_attempts)
    except QueueError as err:
        raise RPCError(NOT_FOUND, str(err), {"field": err.field}) from None
    return {
        "job_id": job["job_id"],
        "items_total": job["items_total"],
        "bytes_total": job["bytes_total"],
        "destination": destination,
        "StudyInstanceUID": study_uid,
    }


def _page(name: str, item: dict) -> dict:
    return Obj({name: Arr(item), "count": INT, "truncated": BOOL})


STUDY = Obj(
    {
        "StudyInstanceUID": STR,
        "PatientName": STR,
        "PatientID": STR,
        "StudyDate": STR,
        "StudyTime": STR,
        "AccessionNumber": STR,
        "StudyID": STR,
        "StudyDescription": STR,
        "ModalitiesInStudy": Arr(STR),
        "NumberOfStudyRelatedSeries": INT,
        "NumberOfStudyRelatedInstances": INT,
        "bytes": INT,
    }
)
SERIES = Obj(
    {
        "SeriesInstanceUID": STR,
        "StudyInstanceUID": STR,
        "Modality": STR,
        "SeriesNumber": STR,
        "SeriesDescription": STR,
        "BodyPartExamined": STR,
        "NumberOfSeriesRelatedInstances": INT,
        "bytes": INT,
    }
)
INSTANCE = Obj(
    {
        "SOPInstanceUID": STR,
        "SOPClassUID": STR,
        "InstanceNumber": STR,
        "TransferSyntaxUID": STR,
        "pool": STR,
        "bytes": INT,
        "sha256": STR,
        "received_at": TIME,
        "source_ae": STR,
    }
)
_LIMIT = Param("integer", "at most this many rows (1-1000, default 100)")
METHODS = (
    Method(
        "studies.find",
        find,
        "Studies in the index matching every given filter, newest first",
        {
            "PatientName": Param("string", "exact, or with * and ? wildcards (case-sensitive)"),
            "PatientID": Param("string", "exact, or with * and ? wildcards"),
            "AccessionNumber": Param("string", "exact, or with * and ? wildcards"),
            "StudyInstanceUID": Param("string", "exact UID"),
            "StudyDate": Param("string", "YYYYMMDD, or a range A-B, A- or -B"),
            "ModalitiesInStudy": Param("string", "CT, or several as CT\\MR (a JSON list works too)"),
            "limit": _LIMIT,
        },
        result=_page("studies", STUDY),
    ),
    Method(
        "series.list",
        series_list,
        "Series of one study",
        {
            "StudyInstanceUID": Param("string", "the study", required=True),
            "limit": _LIMIT,
        },
        result=_page("series", SERIES),
    ),
    Method(
        "studies.send",
        send,
        "Queue a forward of a whole study to a registered AE (a job in queue.list)",
        {
            "StudyInstanceUID": Param("string", "the study", required=True),
            "destination": Param("string", "registered AE title with host and port", required=True),
        },
        audit=True,
        result=Obj(
            {"job_id": INT, "items_total": INT, "bytes_total": INT, "destination": STR, "StudyInstanceUID": STR}
        ),
    ),
    Method(
        "instances.list",
        instances_list,
        "Instances of one series, with pool, size and checksum",
        {
            "SeriesInstanceUID": Param("string", "the series", required=True),
            "limit": _LIMIT,
        },
        result=_page("instances", INSTANCE),
    ),
)
