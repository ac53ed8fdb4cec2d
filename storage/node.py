"""The Node: the one context object (config, index, pools, ingest) handed to handlers and the agent."""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

from pydicom import config as pydicom_config

from storage.backups.scheduler import BackupScheduler
from storage.config.limits import LimitsConfig
from storage.config.settings import NodeConfig, default_config_text, load_config
from storage.dimse.associations import AssociationLog
from storage.index.database import Index
from storage.pools.committer import GroupCommitter
from storage.pools.ingest import Ingestor
from storage.pools.migration import migration_lock
from storage.pools.placement import Placement
from storage.pools.pool import Pool
from storage.pools.recovery import RecoveryReport, recover, reread_studies
from storage.pools.scheduler import MigrationScheduler

from . import __version__

log = logging.getLogger(__name__)


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.index = Index(config.index)
        self.pools = [Pool.from_config(p) for p in config.pools]
        self.placement = Placement(config.pools, self.pools, self.index)
        self.committer: GroupCommitter | None = None
        self.ingestor: Ingestor | None = None
        self.server = None
        self.started_at = time.time()
        self.associations = AssociationLog(self.index, self.may, self.rejection_reason)

    # --- access control ----------------------------------------------------------------------

    def registered_titles(self) -> list[str]:
        return [row[0] for row in self.index.connection().execute("SELECT ae_title FROM aets")]

    def may(self, calling_ae: str, operation: str) -> bool:
        """May this calling AE use the operation? Unregistered AEs only get in at all in open mode."""
        aet = self.index.aet(calling_ae)
        if aet is None:
            return self.config.open_mode
        return operation in aet["operations"]

    def rejection_reason(self, calling_ae: str, called_ae: str) -> str:
        """Why pynetdicom rejected an association, as a sentence with the fix."""
        reasons = []
        if self.config.require_called_aet and called_ae != self.config.ae_title:
            reasons.append(
                f"called AE title {called_ae!r} is not ours ({self.config.ae_title!r}); "
                f"set the sender's destination AE title to {self.config.ae_title}"
            )
        if not self.config.open_mode and calling_ae not in self.registered_titles():
            reasons.append(f"calling AE title {calling_ae!r} is not registered; add it with aets.add")
        return "; ".join(reasons) or "too many associations or local limit"

    # --- lifecycle -----------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Make index and pools agree after any crash; single-threaded, before serving."""
        for pool in self.pools:
            if not os.access(pool.root, os.W_OK | os.X_OK):
                log.error("pool %s (%s) is not writable: instances go to the next pool", pool.name, pool.root)
        # A `node migrate` still running would have fresh copies that look like crash leftovers.
        with migration_lock(self.config, wait=True):
            report = recover(self.pools, self.index)
            reread = reread_studies(self.pools, self.index)
        if reread:
            log.info("index upgrade: %d studies took their own patient attributes from their files", reread)
        log.info("recovery: %s", report.as_dict())
        return report

    def serve(self, listening=None) -> None:
        """Start the group committer and the SCP (threads: after any fork)."""
        from storage import dimse
        from storage.dimse.scp import start_scp

        dimse.install()  # already done by run_node; here for nodes built in-process (tests, tools)

        self.committer = GroupCommitter(
            self.index, self.config.index.with_suffix(".writelock"), max_attempts=self.config.queue.max_attempts
        )
        limits = self.config.limits or LimitsConfig()
        self.ingestor = Ingestor(
            self.pools,
            self.index,
            self.committer,
            self.config.duplicates,
            placement=self.placement,
            max_instance_size=limits.max_instance_size,
            max_sequence_depth=limits.max_sequence_depth,
        )
        self.server = start_scp(self, listening)
        self.started_at = time.time()

    def start(self) -> RecoveryReport:
        report = self.recover()
        self.serve()
        return report

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self.committer is not None:
            self.committer.stop()
            self.committer = None


def init_node(node_dir: Path, ae_title: str, port: int) -> tuple[NodeConfig, bool]:
    """Create node.yaml (unless one is there), pools and index; import node.yaml's AEs. Idempotent."""
    node_dir = Path(node_dir).expanduser().absolute()
    node_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = node_dir / "node.yaml"
    created = False
    if not cfg_path.exists():
        fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(default_config_text(ae_title, port))
        created = True
    config = load_config(cfg_path, create_dirs=True)
    index = Index(config.index)
    with index.transaction() as conn:
        for aet in config.aets:
            if index.aet(aet.ae_title) is None:
                index.put_aet(
                    conn,
                    aet.ae_title,
                    aet.host,
                    aet.port,
                    aet.description,
                    aet.operations,
                    aet.move_destination,
                    aet.tls,
                )
    index.close()
    for p in config.pools:
        Pool.from_config(p).prepare()
    return config, created


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state, if it is listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), addr)
    except OSError as err:
        log.warning("sd_notify failed: %s", err)


def _stop_with_lifeline() -> None:
    """Under `pacsdeck up`: stop (as on SIGTERM) when the process that started us ends, even by kill -9.

    It passes the read end of a pipe (PACSDECK_STOP_WITH_FD) whose write end only it holds; the
    kernel closes that end when it exits, so the read below returns EOF.
    """
    value = os.environ.pop("PACSDECK_STOP_WITH_FD", None)
    if value is None:
        return
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        log.warning("PACSDECK_STOP_WITH_FD=%r is not an open file descriptor; ignored", value)
        return

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        log.info("the process that started this node has ended: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _freeze_startup_objects() -> None:
    """Keep what exists now out of every later garbage collection.

    pynetdicom's server runs a full gc.collect() every 60 connections (transport.py,
    service_actions). Over the ~40,000 objects of pydicom's dictionaries, pynetdicom and our modules
    that took ~10 ms with the GIL held: a stall for every association in flight. These objects live
    as long as the process, so they are frozen (gc.freeze); a collection then looks only at newer
    ones (microseconds), and forked workers keep sharing their pages."""
    from storage.dimse import scp  # noqa: F401 - the SCP's modules are among what lives as long as the process

    gc.collect()
    gc.freeze()


def _raise_file_limit() -> None:
    """Each connection holds three descriptors (its socket, a wake-up pipe); systemd's default soft
    limit of 1,024 would stop accepting near 300 connections. Raise the soft limit to the hard one
    (at most 65,536), as servers commonly do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d: %s", soft, err)


def run_node(config_path: str) -> int:
    """`pacsdeck node run`: recover, serve in the foreground until SIGTERM or SIGINT."""
    from storage import dimse
    from storage.dimse.forward import Forwarder  # pynetdicom's SCU side: only the node process needs it

    from . import metrics, metrics_server
    from .workers import hold_node_lock, serve_in_workers, wait_for_signal

    dimse.install()  # first: an untested pynetdicom release is refused before anything starts
    config = load_config(config_path)
    logging.getLogger().setLevel(config.log_level)
    # `kill -USR1 PID` writes every thread's stack to the log (stderr): what a stuck node is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    _raise_file_limit()
    _stop_with_lifeline()
    # We validate UIDs and values ourselves and answer with a status; pydicom's per-value
    # warnings would only flood the log with the same news.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    lock = hold_node_lock(config)  # one node process tree per node folder
    node = Node(config)
    node.recover()
    metrics.setup(config)  # before the fork: the workers inherit the metrics and their folder
    workers = config.worker_count()
    _freeze_startup_objects()

    def announce() -> None:
        log.info(
            "pacsdeck %s node %s listening on %s:%d (%d worker%s)",
            __version__,
            config.ae_title,
            config.bind,
            config.port,
            workers,
            "" if workers == 1 else "s",
        )
        limits = config.limits or LimitsConfig()
        log.info(
            "limits per worker: max_pdu %d, max_associations %d (per AE %s, per host %s), max_pending %d, "
            "request_timeout %gs, pdu_timeout %gs, idle_timeout %gs, max_instance_size %d, "
            "max_sequence_depth %d",
            config.max_pdu,
            config.max_associations,
            limits.max_associations_per_ae or "no limit",
            limits.max_associations_per_host or "no limit",
            limits.max_pending,
            limits.request_timeout,
            limits.pdu_timeout,
            limits.idle_timeout,
            limits.max_instance_size,
            limits.max_sequence_depth,
        )
        # here, in the supervisor, once the SCP listens (/readyz asks it)
        metrics_server.serve(node.config, node.index, node.pools, node.placement)
        print(f"ready {config.ae_title}@{config.bind}:{config.port}", flush=True)
        _sd_notify("READY=1")

    # Migrations and forwards run in exactly one process: this one, after any fork (see
    # storage/pools/scheduler.py, storage/dimse/forward.py).
    scheduler = MigrationScheduler(node)
    backups = BackupScheduler(node.config, node.index)
    forwarder = Forwarder(node)
    if workers > 1:
        node.index.close()  # each worker opens its own connections after the fork

        def announce_and_schedule() -> None:  # called in this (supervisor) process once workers listen
            announce()
            scheduler.start()
            backups.start()
            forwarder.start()

        code = serve_in_workers(node, workers, announce_and_schedule)
    else:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        node.serve()
        announce()
        scheduler.start()
        backups.start()
        forwarder.start()
        wait_for_signal(stop)
        forwarder.stop()
        node.stop()
        code = 0
    forwarder.stop()
    scheduler.stop()
    backups.stop()
    metrics_server.stop()
    _sd_notify("STOPPING=1")
    log.info("stopped")
    lock.close()
    return code
