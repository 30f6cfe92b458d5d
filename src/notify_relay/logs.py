"""Structured JSON logs: one object a line, with the message's ids wherever they are known.

Every accepted message and every attempt writes a line, so the per-line cost is paid
thousands of times a second: lines are built with orjson, the time's second is formatted
once per second, records skip what nobody prints (the caller's frame, thread and process
names), and a line goes to the file descriptor in one write, with no text layer between.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from notify_relay.context import correlation_id

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "color_message", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def head(self, created: float, level: str, logger: str, message: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": self._time(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        cid = correlation_id.get()
        if cid is not None:
            entry["correlationId"] = cid
        return entry

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry = self.head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return entry

    @staticmethod
    def dumps(entry: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(entry, default=str)
        except TypeError:  # what orjson refuses (an int beyond 64 bits, a non-str key, a
            # lone surrogate from undecodable bytes): escaped to ASCII, never a lost line
            return json.dumps(entry, default=str).encode()

    def line(self, record: logging.LogRecord) -> bytes:
        return self.dumps(self.entry(record))

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record).decode()


class LineHandler(logging.Handler):
    """One os.write per line: no buffering to lose at a crash, and no text wrapper."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._json = JsonFormatter()
        self.setFormatter(self._json)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self._json.line(record))
        except Exception:
            self.handleError(record)

    def _write(self, line: bytes) -> None:
        data = line + b"\n"
        while data:
            data = data[os.write(self._fd, data):]

    def info_line(self, logger: str, message: str, fields: dict[str, Any]) -> None:
        """The line `emit` writes for logger.info(message, extra=fields), without the
        record (see info)."""
        created = time.time()
        self.acquire()  # as emit is called: the formatter's clock is shared
        try:
            entry = self._json.head(created, "INFO", logger, message)
            entry.update(fields)
            self._write(self._json.dumps(entry))
        except Exception:
            self.handleError(logging.makeLogRecord({"name": logger, "msg": message}))
        finally:
            self.release()


def info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """logger.info(message, extra=fields) for the lines of every message's life ("accepted",
    "attempt"): when the line would reach only the LineHandler, unfiltered, it is written
    without a LogRecord and the logging machinery around it (4.3 us a line against 9.2);
    otherwise (a test's capture, another handler, a filter, a record factory of someone's,
    a field logging refuses or leaves out) through logging as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    root = logging.root
    handlers = root.handlers
    if (len(handlers) == 1 and type(handlers[0]) is LineHandler and not handlers[0].filters
            and handlers[0].level <= logging.INFO
            and logging.getLogRecordFactory() is logging.LogRecord
            and _STANDARD.isdisjoint(fields) and not any(key[:1] == "_" for key in fields)):
        node: logging.Logger | None = logger
        while node is not None and node is not root:
            if node.handlers or node.filters or not node.propagate:
                break
            node = node.parent
        else:
            if not root.filters:
                handlers[0].info_line(logger.name, message, fields)
                return
    logger.info(message, extra=fields)


def configure_logging(level: str = "INFO") -> None:
    # the logging HOWTO's "Optimization": none of these is in a line
    logging._srcfile = None  # no stack walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    try:
        handler: logging.Handler = LineHandler(sys.stderr.fileno())
    except (AttributeError, io.UnsupportedOperation):  # stderr replaced by an object
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class XrayTraceId(logging.Filter):
    """On Lambda, a line carries its invocation's X-Ray trace id, which Lambda sets in the
    environment per invocation: a message's lines lead to its trace. Named as Powertools
    Logger names it (the worker's batch lines), so that one query finds both."""

    def filter(self, record: logging.LogRecord) -> bool:
        header = os.environ.get("_X_AMZN_TRACE_ID")
        if header:
            for part in header.split(";"):
                if part.startswith("Root="):
                    record.xray_trace_id = part[5:]
        return True


def configure_lambda_logging() -> None:
    """The same JSON lines on Lambda, at INFO unless NOTIFY_RELAY_LOG_LEVEL says otherwise:
    the runtime's own root handler writes text at WARNING, which dropped every "accepted"
    and "attempt" line and the ids of the warnings. Idempotent: each handler calls it
    as it builds its runtime."""
    configure_logging(os.environ.get("NOTIFY_RELAY_LOG_LEVEL", "INFO"))
    for handler in logging.getLogger().handlers:
        handler.addFilter(XrayTraceId())
