"""Every DICOM network exchange, and every adjustment pacsdeck makes to pynetdicom, behind one door: install().

Owns: the SCP and its handlers (`scp.py`, `qr_scp.py`), association negotiation (`negotiation.py`),
C-GET/C-MOVE sub-operations and the retrieve and forward senders (`suboperations.py`,
`retrieve.py`, `inline.py`, `background.py`; `forward.py` runs the queue's forward jobs over
`forward_link.py`'s association per destination), command sets as bytes (`commands.py`),
the listener guard (`guard.py`, `message_guard.py`, `tls.py`), the reactors' wake-ups
(`reactors.py`), stored files sent in whole frames (`framing.py`), pynetdicom's log (`quiet.py`),
metrics from DIMSE events (`observe.py`), the association log (`associations.py`), C-ECHO as a
client (`echo.py`) and what the services need of the node (`context.py`, a Protocol).
May import: pynetdicom (only here: an import-linter contract keeps everyone else out),
storage.pools, storage.index, storage.imaging, storage.config and the leaves; never storage.node.

Nothing here changes pynetdicom when imported. `install()` applies every adjustment, once per
process, after checking that the installed pynetdicom is a version they were tested with; every
process that speaks DICOM calls it first (the node and its workers, the agent's aets.echo and
diagnose.run, `pacsdeck up`'s demo sender). Each adjustment's comment names the pynetdicom
function it replaces, what it fixes and what it measured, so it can be dropped when upstream
fixes it.
"""

from __future__ import annotations

import threading

# pynetdicom releases the adjustments were tested with (tests/test_tuning.py and the benches in bench/).
TESTED_PYNETDICOM = ("3.0.4",)

_lock = threading.Lock()
_installed = False


class UnsupportedPynetdicom(RuntimeError):
    """The installed pynetdicom is not one the adjustments were tested with."""


def check_version(version: str) -> None:
    """Refuse a pynetdicom release the adjustments in this package were not tested with."""
    if version not in TESTED_PYNETDICOM:
        raise UnsupportedPynetdicom(
            f"pynetdicom {version} is installed, but pacsdeck's adjustments to it (storage/dimse/) were "
            f"tested with {', '.join(TESTED_PYNETDICOM)} only; install that release "
            f"(pip install 'pynetdicom=={TESTED_PYNETDICOM[-1]}') or test the adjustments with {version} "
            f"and add it to TESTED_PYNETDICOM"
        )


def install() -> None:
    """Apply every adjustment to pynetdicom in this process (idempotent; forked workers inherit it)."""
    global _installed
    with _lock:
        if _installed:
            return
        import pynetdicom

        check_version(pynetdicom.__version__)
        from . import commands, framing, negotiation, quiet, reactors, retrieve, scp, suboperations

        for module in (quiet, negotiation, reactors, framing, commands, scp, retrieve, suboperations):
            module.install()
        _installed = True


def installed() -> bool:
    """install() has run in this process."""
    return _installed
