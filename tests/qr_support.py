"""Helpers for the query/retrieve tests: DCMTK findscu/movescu/getscu runs and expected rows from sent files."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import dcmread

from .conftest import DCMTK_ENV, STORESCU_PROPOSE, require_tool, storescu

PYDICOM_TEST_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm"))
_FINAL = re.compile(r"Received Final (?:Find|Move|Get) Response.*?\n(?:.*\n)*?.*?Status\s*:\s*0x([0-9a-fA-F]{4})")
_STATUS_LINE = re.compile(r"Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass
class DimseRun:
    """One DCMTK SCU run: the final status, the extracted response identifiers, the raw output."""

    status: int | None
    responses: list
    output: str


def final_status(output: str) -> int | None:
    """The Status of the last response a DCMTK SCU printed with -v/-d (DIMSE dump)."""
    codes = _STATUS_LINE.findall(output)
    return int(codes[-1], 16) if codes else None


def run_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A DCMTK tool whose DIMSE dumps may hold non-UTF-8 text (Latin-1 names): decoded with replacement."""
    return subprocess.run(
        [require_tool(tool), *args], capture_output=True, text=True, errors="replace", timeout=timeout, env=DCMTK_ENV
    )


def findscu(node, keys: dict, *, model: str = "study", aet: str = "FINDSCU", extra: tuple = ()) -> DimseRun:
    """Run findscu (-S study root, -P patient root) with -k keys; responses read back with pydicom."""
    with tempfile.TemporaryDirectory() as out:
        args = ["-d", "-S" if model == "study" else "-P", "-aet", aet, "-aec", node.ae_title, "-X", "-od", out, *extra]
        for key, value in keys.items():
            args += ["-k", f"{key}={value}" if value is not None else key]
        proc = run_tool("findscu", *args, "127.0.0.1", str(node.port))
        responses = [dcmread(p) for p in sorted(Path(out).glob("rsp*.dcm"))]
    return DimseRun(final_status(proc.stdout + proc.stderr), responses, proc.stdout + proc.stderr)


def send_files(node, files: list[Path]) -> list[Path]:
    """storescu every file, grouped by the syntax flag it needs; the ones the node acknowledged, in send order."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        try:
            syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - unreadable or no meta: storescu decides
            syntax = ""
        groups[STORESCU_PROPOSE.get(syntax, "-xe")].append(path)
    sent = []
    for flag, group in groups.items():
        results, _ = storescu(node, group, "-R", flag)
        sent += [p for p in group if results.get(str(p)) == "Success"]
    return sent


def expected_instances(files: list[Path]) -> dict[str, dict]:
    """SOPInstanceUID -> the attributes the index should hold, first copy of a duplicate winning
    (the node's `duplicates: keep`); parents are described by the last instance sent."""
    out: dict[str, dict] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        uid = str(ds.SOPInstanceUID)
        if uid in out:
            continue
        out[uid] = {
            "path": path,
            "StudyInstanceUID": str(ds.StudyInstanceUID),
            "SeriesInstanceUID": str(ds.SeriesInstanceUID),
            "PatientID": str(ds.get("PatientID", "") or ""),
            "PatientName": str(ds.get("PatientName", "") or ""),
            "StudyDate": str(ds.get("StudyDate", "") or ""),
            "Modality": str(ds.get("Modality", "") or ""),
        }
    return out
