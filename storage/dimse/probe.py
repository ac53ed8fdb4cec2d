"""Ask a node what a client would: how many studies C-FIND finds, and the bytes C-GET returns (a restore test)."""

from __future__ import annotations

import hashlib

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet

from . import install


class ProbeFailed(RuntimeError):
    """The node did not answer as a PACS should; the message says where it stopped."""


def _associate(ae: AE, host: str, port: int, called: str, **kw):
    assoc = ae.associate(host, port, ae_title=called, **kw)
    if not assoc.is_established:
        raise ProbeFailed(f"no association with {called} at {host}:{port}")
    return assoc


def count_studies(host: str, port: int, called: str, calling: str = "PACSDECK-TEST", timeout: float = 30.0) -> int:
    """C-FIND at STUDY level with a universal match: the number of studies the node answers with."""
    install()
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = _associate(ae, host, port, called)
    found = 0
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is None:
                raise ProbeFailed("C-FIND: no answer in time")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found += 1
            elif status.Status != 0x0000:
                raise ProbeFailed(f"C-FIND failed with status 0x{status.Status:04X}")
    finally:
        assoc.release()
        ae.shutdown()
    return found


def get_study(
    host: str,
    port: int,
    called: str,
    study_uid: str,
    contexts: list[tuple[str, str]],
    calling: str = "PACSDECK-TEST",
    timeout: float = 60.0,
) -> dict[str, str]:
    """C-GET one study: SOP Instance UID -> SHA-256 of the dataset bytes as received. `contexts`: the
    (SOP Class, transfer syntax) pairs to accept the sub-operations in (the ones the instances are stored in,
    so the node sends the bytes it holds)."""
    install()
    received: dict[str, str] = {}

    def on_store(event) -> int:
        data = event.request.DataSet.getvalue()
        received[str(event.request.AffectedSOPInstanceUID)] = hashlib.sha256(data).hexdigest()
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = sorted({c for c, _ in contexts})
    for sop_class in classes:
        ae.add_requested_context(sop_class, sorted({t for c, t in contexts if c == sop_class}))
    roles = [build_role(c, scp_role=True) for c in classes]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    assoc = _associate(ae, host, port, called, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        last = None
        for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status is None:
                raise ProbeFailed("C-GET: no answer in time")
            last = status.Status
        if last not in (0x0000, None):
            raise ProbeFailed(f"C-GET of study {study_uid} ended with status 0x{last:04X}")
    finally:
        assoc.release()
        ae.shutdown()
    return received
