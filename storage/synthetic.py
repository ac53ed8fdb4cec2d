"""Synthetic DICOM instances (CT and CR) for demo studies, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class StudySpec:
    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str = "20240101"
    modality: str = "CT"
    accession: str = ""
    description: str = "Synthetic study"


def _pixels(rows: int, cols: int, seed: int, bits: int) -> np.ndarray:
    """A smooth body-like disc with noise: compresses and previews like a real image."""
    y, x = np.ogrid[:rows, :cols]
    r = np.hypot((y - rows / 2) / (rows / 2), (x - cols / 2) / (cols / 2))
    base = np.where(r < 0.9, 1000 + 200 * np.cos(r * 8), 0)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, size=(rows, cols))
    top = (1 << bits) - 1
    return np.clip(base + noise, 0, top).astype(np.uint16)


def instance(
    spec: StudySpec,
    *,
    series_uid: str,
    sop_uid: str,
    number: int,
    rows: int = 512,
    cols: int = 512,
    modality: str | None = None,
    charset: str | None = None,
) -> Dataset:
    """One uncompressed 16-bit instance (CT by default, CR when modality is 'CR')."""
    modality = modality or spec.modality
    sop_class = ComputedRadiographyImageStorage if modality == "CR" else CTImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec.accession
    ds.Modality = modality
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = spec.description
    ds.SeriesDescription = f"{modality} series"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelData = _pixels(rows, cols, seed=number, bits=12).tobytes()
    return ds


def write_study(
    folder: Path,
    spec: StudySpec,
    count: int,
    *,
    rows: int = 512,
    cols: int = 512,
    series: int = 1,
    modality: str | None = None,
) -> list[Path]:
    """Write `count` instances of one study spread over `series` series; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uids = [generate_uid() for _ in range(series)]
    paths = []
    for i in range(count):
        sop_uid = generate_uid()
        ds = instance(
            spec,
            series_uid=series_uids[i % series],
            sop_uid=sop_uid,
            number=i + 1,
            rows=rows,
            cols=cols,
            modality=modality,
        )
        path = folder / f"{spec.patient_id}_{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def studies(count: int, prefix: str = "PAT") -> Iterator[StudySpec]:
    """`count` distinct study descriptions with varied names and dates."""
    names = ["Doe^Jane", "Smith^John", "Muller^Anna", "Garcia^Luis", "Okafor^Ada", "Tanaka^Ken"]
    for i in range(count):
        yield StudySpec(
            patient_id=f"{prefix}{i:04d}",
            patient_name=names[i % len(names)],
            study_uid=generate_uid(),
            study_date=f"2024{(i % 12) + 1:02d}{(i % 28) + 1:02d}",
            accession=f"ACC{i:06d}",
            description=f"Synthetic study {i}",
        )


def index_rows(index, instances: int, per_study: int = 10) -> None:
    """Put `instances` index rows (no files) into an Index in one transaction: five studies per
    patient, dates spread over ten years. For benchmarks and tests of what reads the index alone."""
    from storage.index.database import InstanceRecord

    studies = instances // per_study
    with index.transaction() as conn:
        batch = []
        for s in range(studies):
            patient_id = f"P{s // 5:06d}"
            study_uid = f"2.25.{10**20 + s}"
            series_uid = f"{study_uid}.1"
            date = f"{2014 + (s % 3650) // 365:04d}{(s % 12) + 1:02d}{(s % 28) + 1:02d}"
            for i in range(per_study):
                batch.append(
                    InstanceRecord(
                        patient=(patient_id, f"Name{s // 5:06d}^Given", "19600101", "O"),
                        study=(study_uid, patient_id, date, "120000", f"A{s:07d}", "1", "Filler", "", ""),
                        series=(series_uid, study_uid, "CT", "1", "", ""),
                        instance={
                            "sop_uid": f"{series_uid}.{i + 1}",
                            "series_uid": series_uid,
                            "study_uid": study_uid,
                            "sop_class_uid": str(CTImageStorage),
                            "instance_number": str(i + 1),
                            "transfer_syntax": str(ExplicitVRLittleEndian),
                            "pool": "primary",
                            "path": f"synthetic/{s}/{i}.dcm",
                            "size": 0,
                            "sha256": "",
                            "received_at": 0.0,
                            "last_access": 0.0,
                            "source_ae": "",
                        },
                    )
                )
            if len(batch) >= 10_000:
                index.put_instances(conn, batch)
                batch.clear()
        index.put_instances(conn, batch)
