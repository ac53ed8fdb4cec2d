"""pynetdicom's log made readable: no per-PDU debug text, one line per refused input, no duplicate errors."""

from __future__ import annotations

import logging

import pynetdicom._config

# pynetdicom's "standard" event handlers format every PDU into debug text, whatever the log level:
# for getscu's A-ASSOCIATE-RQ (120 contexts with role items) that was ~8 ms of CPU per association,
# and every P-DATA PDU of every C-STORE paid its share. We log at WARNING; the text was never shown.


class _ReportedByTheCaller(logging.Filter):
    """pynetdicom logs two ERROR lines for every connection it cannot open ("Association request
    failed: unable to connect to remote", "TCP Initialisation Error: [Errno 111] ..."), at every
    retry of a forward to a destination that is down. Each of our callers reports that failure
    itself, with the destination and why (the forwarder's job error and warning, a C-MOVE's 0xA801
    and its comment, aets.echo's answer), so pynetdicom's lines are kept for DEBUG logging only."""

    _MESSAGES = ("Association request failed: unable to connect", "TCP Initialisation Error")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._MESSAGES):
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class _OneLine(logging.Filter):
    """pynetdicom logs a traceback (LOGGER.exception) for every undecodable PDU or DIMSE message a
    peer sends: a hostile peer filled the node's log with hundreds. Such input is answered and
    counted by guard.py; pynetdicom's record keeps its message and the exception's one line, and the
    traceback is kept for DEBUG logging only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            exc = record.exc_info[1]
            text = record.getMessage()
            summary = f"{type(exc).__name__}: {exc}" if exc is not None else ""
            record.msg = text if summary in text else f"{text} ({summary})" if summary else text
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Set pynetdicom's LOG_HANDLER_LEVEL (_config.py) and filter its loggers (once)."""
    # pynetdicom's "standard" event handlers format every PDU into debug text, whatever the log level:
    # for getscu's A-ASSOCIATE-RQ (120 contexts with role items) that was ~8 ms of CPU per association,
    # and every P-DATA PDU of every C-STORE paid its share. We log at WARNING; the text was never shown.
    pynetdicom._config.LOG_HANDLER_LEVEL = "none"
    transport = logging.getLogger("pynetdicom.transport")
    if not any(isinstance(f, _ReportedByTheCaller) for f in transport.filters):
        transport.addFilter(_ReportedByTheCaller())
    for name in [n for n in logging.Logger.manager.loggerDict if n == "pynetdicom" or n.startswith("pynetdicom.")]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())
