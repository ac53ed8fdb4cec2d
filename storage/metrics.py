"""Prometheus counters of the DICOM service, kept per forked worker; served by storage/metrics_server.py.

Design (the node runs several forked worker processes sharing the DICOM port):
- counters and the histogram are incremented in whichever worker served the association;
  prometheus-client's multiprocess mode keeps each process's values in mmap'd files under
  `<node dir>/metrics/` (emptied at start, so a restart never adds stale values);
- state (instances, bytes and free space per pool, queue depth, last backup, build info) is not
  counted anywhere: the supervisor reads it from the index and the filesystem at each scrape, so
  it is never stale and no worker has to own it;
- the HTTP server (storage/metrics_server.py) runs in the supervisor, which serves no DICOM, bound
  to 127.0.0.1 only.
With `metrics_port: 0` (the default) nothing here is imported or registered and the hooks return at once.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig

log = logging.getLogger(__name__)

BIND = "127.0.0.1"  # metrics say a lot about a site; whoever scrapes them tunnels or runs a local agent
# Store durations: an fsync'd small instance takes a few ms, a large CT slice on a busy disk ~100 ms.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Metrics:
    """The metric objects; created once in the supervisor before the workers fork."""

    def __init__(self, prometheus_client):
        p = prometheus_client
        self.associations = p.Counter(
            "pacsdeck_associations", "DICOM associations by final result", ["result"], registry=None
        )
        self.dimse = p.Counter(
            "pacsdeck_dimse_requests",
            "DIMSE requests answered, by operation and final status",
            ["operation", "status"],
            registry=None,
        )
        self.store_seconds = p.Histogram(
            "pacsdeck_store_duration_seconds",
            "C-STORE request received to response sent",
            buckets=STORE_BUCKETS,
            registry=None,
        )
        self.received = p.Counter(
            "pacsdeck_received_bytes", "Dataset bytes received in C-STORE requests", registry=None
        )
        self.rejected = p.Counter(
            "pacsdeck_rejected", "Peer input refused by the listener's limits and checks", ["reason"], registry=None
        )


_metrics: _Metrics | None = None


def setup(config: NodeConfig) -> bool:
    """Before the workers fork: empty the multiprocess folder and create the metrics. False when off."""
    global _metrics
    if not config.metrics_port:
        return False
    folder = config.node_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    import prometheus_client
    from prometheus_client import values

    # The value class is chosen when prometheus_client is first imported; choose again in case
    # something imported it before the folder was set.
    values.ValueClass = values.get_value_class()
    _metrics = _Metrics(prometheus_client)
    return True


# --- hooks in the workers (each a dictionary lookup and an increment) ------------------------------


def association_closed(result: str) -> None:
    if _metrics is not None:
        _metrics.associations.labels(result).inc()


def rejected(reason: str) -> None:
    """A malformed, oversized, unexpected or late input was refused (storage/dimse/guard.py names the reasons)."""
    if _metrics is not None:
        _metrics.rejected.labels(reason).inc()


def enabled() -> bool:
    """Metrics are on (metrics_port set): the DIMSE event hooks are worth installing."""
    return _metrics is not None


def store_received(nbytes: int) -> None:
    """A C-STORE request's dataset arrived (storage/dimse/observe.py, from pynetdicom's EVT_DIMSE_RECV)."""
    if _metrics is not None:
        _metrics.received.inc(nbytes)


def store_answered(seconds: float) -> None:
    """A C-STORE response left, `seconds` after its request arrived."""
    if _metrics is not None:
        _metrics.store_seconds.observe(seconds)


def response_sent(operation: str, status: int) -> None:
    """A final response written without pynetdicom's DIMSE layer (storage/dimse/suboperations.py)."""
    if _metrics is not None:
        _metrics.dimse.labels(operation, f"0x{status:04X}").inc()
