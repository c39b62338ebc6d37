"""Logging set up once in main: readable lines on a terminal, or JSON lines for Cloud Logging.

Records carry identifiers as ``extra`` fields (UIDs, AE titles, message ids). Nothing here
adds patient data, and no module passes any.

Once configured, everything the process would otherwise print to stderr goes through the one
root handler, so with JSON every line is one JSON object: a traceback is the ``stack_trace``
field of its record, library warnings are captured, uncaught exceptions (main thread, other
threads, ``__del__`` and the like) are ERROR records, and library loggers lose any handler of
their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from .settings import Flag, parse_bool

FLAGS = (
    Flag("log_format", "log output", "text", choices=("text", "json")),
    Flag("verbose", "debug logging", False, parse_bool),
)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        trace = []
        if record.exc_info:
            trace.append(self.formatException(record.exc_info))
        elif record.exc_text:
            trace.append(record.exc_text)
        if record.stack_info:
            trace.append(self.formatStack(record.stack_info))
        if trace:
            entry["stack_trace"] = "\n".join(trace)
        # ensure_ascii keeps the line one line whatever the message holds.
        return json.dumps(entry, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be formatted becomes a line saying so, in the same format."""
        if not logging.raiseExceptions:
            return
        with contextlib.suppress(Exception):  # nothing more can be done for this record
            failed = logging.makeLogRecord(
                {
                    "name": __name__,
                    "levelno": logging.ERROR,
                    "levelname": "ERROR",
                    "msg": "a log record could not be written",
                    "exc_info": sys.exc_info(),
                    "failed_logger": record.name,
                    "failed_at": f"{record.pathname}:{record.lineno}",
                }
            )
            sys.stderr.write(self.format(failed) + self.terminator)
            sys.stderr.flush()


_uncaught = logging.getLogger("dicom_ingest.uncaught")


def _log_uncaught(
    exc_type: type[BaseException],
    value: BaseException,
    traceback: TracebackType | None,
) -> None:
    _uncaught.error(
        "uncaught exception: %s", exc_type.__name__, exc_info=(exc_type, value, traceback)
    )


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread that exits that way is not an error
    thread = args.thread.name if args.thread is not None else "unknown"
    value = args.exc_value if args.exc_value is not None else args.exc_type()
    _uncaught.error(
        "uncaught exception in thread %s: %s",
        thread,
        args.exc_type.__name__,
        exc_info=(args.exc_type, value, args.exc_traceback),
        extra={"thread_name": thread},
    )


def _log_unraisable(args: sys.UnraisableHookArgs) -> None:
    """Exceptions Python can only ignore (in ``__del__``, finalizers, callbacks)."""
    exc_type = args.exc_type
    value = args.exc_value if args.exc_value is not None else exc_type()
    where = type(args.object).__name__ if args.object is not None else "unknown"
    _uncaught.warning(
        "exception ignored in %s",
        where,
        exc_info=(exc_type, value, args.exc_traceback),
    )


def _adopt_library_loggers(root: logging.Logger) -> None:
    """Every logger that exists now writes through the root handler, and only through it."""
    for logger in list(root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue  # a placeholder for loggers below it
        for handler in list(logger.handlers):
            if not isinstance(handler, logging.NullHandler):
                logger.removeHandler(handler)
        logger.propagate = True


def configure(fmt: str = "text", verbose: bool = False) -> None:
    """One handler on the root logger, and everything else that writes to stderr routed to it.

    Called once by each command; it changes process-wide state (warnings capture, the
    exception hooks), so tests that call it put that state back.
    """
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    _adopt_library_loggers(root)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
    # pynetdicom logs every PDU at INFO/DEBUG; its errors still come through.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if not verbose else logging.INFO)


def fatal(message: str, usage: str = "") -> None:
    """The line a command ends with: a CRITICAL record when logging is JSON, else plain text.

    ``usage`` (the command's usage, for a command-line mistake) comes first in text.
    """
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        logging.getLogger("dicom_ingest").critical(message)
    else:
        print(f"{usage}{message}", file=sys.stderr)
