"""The pacsdeck node: DICOM SCP, index, pools and durable ingest."""

__version__ = "0.1.0"
