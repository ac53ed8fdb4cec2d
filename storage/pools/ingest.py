"""Ingest: validate an incoming instance, store its bytes as received, index it, and only then succeed."""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from storage import status
from storage.index.database import Index, InstanceRecord
from storage.uids import InvalidUID, check_raw_uid, check_uid, instance_path

from .committer import GroupCommitter
from .placement import Placement
from .pool import Pool, StoreFailed

log = logging.getLogger(__name__)

UNDEFINED_LENGTH = 0xFFFFFFFF


class NotStorable(Exception):
    """The instance was refused; `status` is the C-STORE status to answer with."""

    def __init__(self, status_code: int, reason: str):
        super().__init__(reason)
        self.status = status_code
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    sop_uid: str
    pool: str
    path: str
    size: int
    duplicate: bool  # True: an earlier copy was kept and these bytes were discarded


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


# Values larger than this are skipped, not read: the pixel data is never copied or decoded here.
_DEFER = 4096


def _check_complete(ds: Dataset, end: int) -> None:
    """Raise if a top-level element is cut short (a transfer that ended mid-value).

    pydicom accepts a value shorter than its declared length, and skipped (deferred) values are
    not read at all, so each element's declared extent is compared with the bytes there are.
    """
    for tag in ds.keys():  # noqa: SIM118 - iterating a pydicom Dataset yields its elements, .keys() its tags
        elem = ds.get_item(tag, keep_deferred=True)  # a deferred value stays unread
        length = getattr(elem, "length", None)
        if length is None or length == UNDEFINED_LENGTH:
            continue
        value = getattr(elem, "value", None)
        if value is None:
            if elem.value_tell + length > end:
                raise ValueError(f"element {elem.tag} is truncated ({end - elem.value_tell} of {length} bytes)")
        elif isinstance(value, bytes) and len(value) != length:
            raise ValueError(f"element {elem.tag} is truncated ({len(value)} of {length} bytes)")


def parse_part10(fp: BinaryIO, size: int) -> Dataset:
    """Parse a Part 10 file (meta and dataset) for indexing; NotStorable if it will not parse or is cut short."""
    try:
        ds = dcmread(fp, defer_size=_DEFER)
        _check_complete(ds, size)
        return ds
    except Exception as err:  # pydicom raises many types for bad input
        raise NotStorable(status.CANNOT_UNDERSTAND, f"cannot parse dataset: {err}") from err


def inflate(data: bytes, limit: int) -> bytes:
    """A Deflated Explicit VR dataset inflated, refused past `limit` bytes (a deflate bomb of 1 MB
    inflates to 1 GB): zlib stops at the limit instead of allocating what the stream claims."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise NotStorable(
            status.OUT_OF_RESOURCES, f"the Deflated dataset inflates beyond {limit} bytes (limits.max_instance_size)"
        )
    return out


def parse_received(
    stream: BinaryIO, transfer_syntax: str, max_size: int = 2**62, max_depth: int | None = None
) -> Dataset:
    """Parse a dataset as it came off the wire (no File Meta) in its transfer syntax, without copying it."""
    try:
        syntax = UID(transfer_syntax)
        if syntax.is_deflated:
            stream.seek(0)
            stream = BytesIO(inflate(stream.read(), max_size))
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        ds = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=_DEFER)
        if ds.original_encoding[0] != syntax.is_implicit_VR:
            # pydicom guesses the other VR encoding and reads on; the file would then carry a File
            # Meta naming the negotiated syntax that no reader could follow.
            found = "implicit" if ds.original_encoding[0] else "explicit"
            raise NotStorable(
                status.CANNOT_UNDERSTAND,
                f"the dataset is encoded in {found} VR, not in the negotiated transfer syntax {syntax}",
            )
        _check_complete(ds, size)
        if max_depth is not None:
            check_sequence_depth(ds, max_depth, stream)
        return ds
    except NotStorable:
        raise
    except Exception as err:  # unknown syntax, bad data: pydicom raises many types
        raise NotStorable(status.CANNOT_UNDERSTAND, f"cannot parse dataset: {err}") from err


def check_sequence_depth(ds: Dataset, limit: int, source: BinaryIO) -> None:
    """Refuse sequences nested deeper than `limit`, walking them with a stack of our own (pydicom's
    parsing and writing recurse, so a dataset nested thousands deep would fail later and elsewhere).
    Only sequence elements are parsed; other values stay as received. A top-level sequence that
    parsing deferred (over 4 KiB) is read from `source`, the buffer `ds` was parsed from."""
    stack = [(ds, 1)]
    while stack:
        current, depth = stack.pop()
        for tag in current.keys():  # noqa: SIM118 - iterating a pydicom Dataset yields its elements, .keys() its tags
            raw = current.get_item(tag, keep_deferred=True)
            vr = getattr(raw, "VR", None)
            if vr != "SQ" and not ((vr is None or vr == "UN") and tag in _SEQUENCE_TAGS):
                continue
            if current is ds and getattr(raw, "value", b"") is None and hasattr(raw, "_replace"):
                source.seek(raw.value_tell)  # a sequence over 4 KiB that parsing deferred: read it now
                raw = raw._replace(value=source.read(raw.length))
                ds._dict[tag] = raw
            if depth > limit:
                raise NotStorable(
                    status.CANNOT_UNDERSTAND, f"sequences nested deeper than {limit} (limits.max_sequence_depth)"
                )
            try:
                items = current[tag].value
            except RecursionError:
                raise NotStorable(status.CANNOT_UNDERSTAND, "sequences nested too deep to parse") from None
            except Exception as err:  # pydicom raises many types for bad items
                raise NotStorable(status.CANNOT_UNDERSTAND, f"cannot parse sequence {tag}: {err}") from err
            stack.extend((item, depth + 1) for item in items)


# Tags the standard defines as sequences: in implicit VR a raw element does not say its VR. One set
# lookup per element (dictionary_VR per element cost ~0.1 ms per CT instance).
_SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


_UID_TAGS = (
    ("SOPInstanceUID", 0x00080018),
    ("SOPClassUID", 0x00080016),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)


def _strict_uid(ds: Dataset, keyword: str, tag: int) -> str:
    """A dataset UID checked on its encoded bytes, as received (see uids.check_raw_uid)."""
    elem = ds.get_item(tag)
    if elem is None:
        raise InvalidUID(f"{keyword} missing")
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return check_raw_uid(bytes(value), keyword)
    return check_uid(ds.get(keyword), keyword)


def build_record(ds: Dataset, *, transfer_syntax: str, source_ae: str, strict: bool = False) -> InstanceRecord:
    """Index rows for one instance; location, size, checksum and times are filled in after the write.

    `strict` (what a peer sends) checks the UIDs' encoded bytes; files already stored are read as
    pydicom reads them, so a reindex never loses an instance the node once accepted."""
    try:
        if strict:
            for keyword, tag in _UID_TAGS:
                _strict_uid(ds, keyword, tag)
        sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
        sop_class = check_uid(ds.get("SOPClassUID"), "SOPClassUID")
        study_uid = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
        series_uid = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
    except InvalidUID as err:
        raise NotStorable(status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(err)) from err
    except Exception as err:  # a value that cannot even be decoded
        raise NotStorable(status.CANNOT_UNDERSTAND, f"cannot read UIDs: {err}") from err
    try:
        patient_id = _text(ds, "PatientID")
        patient = (patient_id, _text(ds, "PatientName"), _text(ds, "PatientBirthDate"), _text(ds, "PatientSex"))
        study = (
            study_uid,
            patient_id,
            _text(ds, "StudyDate"),
            _text(ds, "StudyTime"),
            _text(ds, "AccessionNumber"),
            _text(ds, "StudyID"),
            _text(ds, "StudyDescription"),
            _text(ds, "ReferringPhysicianName"),
            _text(ds, "SpecificCharacterSet"),
        )
        series = (
            series_uid,
            study_uid,
            _text(ds, "Modality"),
            _text(ds, "SeriesNumber"),
            _text(ds, "SeriesDescription"),
            _text(ds, "BodyPartExamined"),
        )
        instance_number = _text(ds, "InstanceNumber")
    except Exception as err:
        raise NotStorable(status.CANNOT_UNDERSTAND, f"cannot decode attributes: {err}") from err
    instance = {
        "sop_uid": sop_uid,
        "series_uid": series_uid,
        "study_uid": study_uid,
        "sop_class_uid": sop_class,
        "instance_number": instance_number,
        "transfer_syntax": transfer_syntax,
        "source_ae": source_ae,
    }
    return InstanceRecord(patient=patient, study=study, series=series, instance=instance)


class Ingestor:
    """The one way instances enter the node: C-STORE today, recovery and reindex share its parts."""

    def __init__(
        self,
        pools: list[Pool],
        index: Index,
        committer: GroupCommitter,
        duplicates: str,
        placement: Placement | None = None,
        max_instance_size: int = 2**62,
        max_sequence_depth: int = 32,
    ):
        self._max_size = max_instance_size
        self._max_depth = max_sequence_depth
        self._pools = pools
        self._placement = placement
        self._index = index
        self._committer = committer
        self._duplicates = duplicates

    def store(
        self,
        header: bytes,
        stream: BytesIO,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        calling_ae: str,
    ) -> Stored:
        """Store one received dataset behind its Part 10 header; return once file and row are durable.

        `stream` is the dataset exactly as received (pynetdicom's buffer); it is parsed in place and
        copied once, into the write buffer. Raises NotStorable with the status to answer.
        """
        try:
            cmd_sop = check_uid(sop_instance_uid, "AffectedSOPInstanceUID")
            cmd_class = check_uid(sop_class_uid, "AffectedSOPClassUID")
        except InvalidUID as err:
            raise NotStorable(status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(err)) from err
        dataset = parse_received(stream, transfer_syntax, self._max_size, self._max_depth)
        record = build_record(dataset, transfer_syntax=transfer_syntax, source_ae=calling_ae, strict=True)
        if record.sop_uid != cmd_sop:
            raise NotStorable(
                status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "dataset SOPInstanceUID differs from the command's"
            )
        if record.instance["sop_class_uid"] != cmd_class:
            raise NotStorable(status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "dataset SOPClassUID differs from the command's")
        with stream.getbuffer() as body:
            return self._store(
                record, (header, body), keep=self._duplicates == "keep", calling_ae=calling_ae, dataset=dataset
            )

    def _store(
        self, record: InstanceRecord, parts: tuple, keep: bool, calling_ae: str, dataset: Dataset | None = None
    ) -> Stored:
        cmd_sop = record.sop_uid
        if keep:  # the common duplicate: skip the write (the commit below settles any race)
            existing = self._index.instance(cmd_sop)
            if existing is not None:
                log.info("duplicate %s from %s: first copy kept", cmd_sop, calling_ae)
                return Stored(cmd_sop, existing["pool"], existing["path"], existing["size"], duplicate=True)
        rel = instance_path(record.instance["study_uid"], cmd_sop)
        pool, st = self._write(rel, parts)
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        record.instance.update(
            pool=pool.name,
            path=rel,
            size=st.st_size,
            sha256=digest.hexdigest(),
            received_at=st.st_mtime,
            last_access=st.st_mtime,
        )
        try:
            outcome = self._committer.commit(record, pool.file(rel).parent, keep_existing=keep, dataset=dataset)
        except Exception as err:
            row = self._index.instance(cmd_sop)
            if row is None or (row["pool"], row["path"]) != (pool.name, rel):
                _remove(pool.file(rel))
            raise NotStorable(status.OUT_OF_RESOURCES, f"index commit failed: {err}") from err
        if not outcome.written:  # another association stored it first: theirs is kept
            _remove(pool.file(rel))
            old_pool, old_path, old_size = outcome.previous
            return Stored(cmd_sop, old_pool, old_path, old_size, duplicate=True)
        if outcome.previous is not None:  # overwrite: the old file goes only after the new row is in
            old = self._pool(outcome.previous[0])
            if old is not None:
                _remove(old.file(outcome.previous[1]))
        return Stored(cmd_sop, pool.name, rel, st.st_size, duplicate=False)

    def _write(self, rel: str, parts: tuple) -> tuple[Pool, os.stat_result]:
        """Write to the first pool with room (see placement); a failing pool passes the instance on."""
        errors: list[str] = []
        pools = self._pools
        if self._placement is not None:
            pools, errors = self._placement.candidates(sum(len(p) for p in parts))
        for pool in pools:
            try:
                st = pool.write(rel, parts)
            except StoreFailed as err:
                log.warning("pool %s refused %s: %s", pool.name, rel, err.strerror)
                errors.append(f"{pool.name}: {err.strerror}")
                continue
            if self._placement is not None:
                self._placement.placed(pool)
            return pool, st
        raise NotStorable(status.OUT_OF_RESOURCES, "no pool could store it (" + "; ".join(errors) + ")")

    def _pool(self, name: str) -> Pool | None:
        return next((p for p in self._pools if p.name == name), None)


def _remove(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
