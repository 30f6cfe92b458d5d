"""The JSON log lines: one object a line, every extra field, written to a real pipe."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from notify_relay import logs
from notify_relay.context import correlation_id
from notify_relay.logs import LineHandler, configure_logging

Log = Callable[[Callable[[logging.Logger], None]], list[dict[str, Any]]]


@pytest.fixture
def log() -> Iterator[Log]:
    """Runs the calls against a logger whose handler writes to a pipe; the lines read back."""
    read, write = os.pipe()
    logger = logging.getLogger("notify_relay.test_logs")
    logger.propagate = False
    logger.handlers[:] = [LineHandler(write)]
    logger.setLevel(logging.INFO)

    def run(calls: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
        calls(logger)
        os.set_blocking(read, False)
        data = b""
        while True:
            try:
                chunk = os.read(read, 65536)
            except BlockingIOError:
                break
            data += chunk
        assert data.endswith(b"\n")
        return [json.loads(line) for line in data.splitlines()]

    yield run
    logger.handlers[:] = []
    logger.propagate = True
    os.close(read)
    os.close(write)


def test_a_line_has_time_level_logger_message_correlation_and_every_extra(log: Log) -> None:
    def calls(logger: logging.Logger) -> None:
        token = correlation_id.set("corr-9")
        try:
            logger.info("attempt", extra={"messageId": "m-1", "statusCode": 503, "error": None,
                                          "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)})
        finally:
            correlation_id.reset(token)

    (line,) = log(calls)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {"level": "INFO", "logger": "notify_relay.test_logs", "message": "attempt",
                    "correlationId": "corr-9", "messageId": "m-1", "statusCode": 503,
                    "error": None, "at": "2026-01-02T03:04:05+00:00"}


def test_the_time_is_the_records_own_in_utc(log: Log) -> None:
    def calls(logger: logging.Logger) -> None:
        for created in (1_800_000_000.5, 1_800_000_000.999, 1_800_000_001.0):
            record = logger.makeRecord(logger.name, logging.INFO, "f", 1, "t", (), None)
            record.created = created
            logger.handle(record)

    times = [line["time"] for line in log(calls)]
    assert times == ["2027-01-15T08:00:00.500Z", "2027-01-15T08:00:00.999Z",
                     "2027-01-15T08:00:01.000Z"]


def test_what_orjson_refuses_and_exceptions_still_make_a_line(log: Log) -> None:
    def calls(logger: logging.Logger) -> None:
        try:
            raise ValueError("bad thing")
        except ValueError:
            logger.exception("failed %s", "here", extra={"huge": 2**70})

    (line,) = log(calls)
    assert (line["message"], line["level"], line["huge"]) == ("failed here", "ERROR", 2**70)
    assert "ValueError: bad thing" in line["exception"]


def test_a_stderr_without_a_descriptor_still_gets_json_lines(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that replaces sys.stderr with an object (a test runner, an embedding app)."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        logging.getLogger("notify_relay.fallback_check").info("hello", extra={"n": 1})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["message"], line["n"]) == ("hello", 1)


def test_a_lone_surrogate_still_makes_a_line(log: Log) -> None:
    """Undecodable bytes (a file name, say) decoded with surrogateescape: orjson refuses
    them, and the fallback must not refuse them too (the line was lost)."""
    path = b"/tmp/x\xff".decode("utf-8", "surrogateescape")

    (line,) = log(lambda logger: logger.warning("a file", extra={"path": path}))
    assert line["path"] == path


@pytest.fixture
def root_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The root logger with only a LineHandler on a pipe, as `serve` sets it; its lines."""
    read, write = os.pipe()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [LineHandler(write)]
    root.setLevel(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        os.set_blocking(read, False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read, 65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    yield lines
    root.handlers[:], level = saved
    root.setLevel(level)
    os.close(read)
    os.close(write)


FIELDS: dict[str, Any] = {"messageId": "m-1", "senderId": "s", "statusCode": 503,
                          "error": None, "correlationId": "corr-extra", "big": 2**70,
                          "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}


def only_the_line_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called in a test's body: pytest adds its capture handlers for the call, after the
    fixtures, and with them a hot line takes logging's path."""
    monkeypatch.setattr(logging.root, "handlers",
                        [h for h in logging.root.handlers if type(h) is LineHandler])


def test_a_hot_line_is_the_line_logging_writes(
        root_lines: Callable[[], list[dict[str, Any]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("notify_relay.service")
    only_the_line_handler(monkeypatch)
    records: list[logging.LogRecord] = []
    make = logging.Logger.makeRecord
    monkeypatch.setattr(logging.Logger, "makeRecord", lambda self, *a, **k: (
        records.append(record := make(self, *a, **k)), record)[1])
    token = correlation_id.set("corr-9")
    try:
        logger.info("attempt", extra=FIELDS)
        logs.info(logger, "attempt", FIELDS)
    finally:
        correlation_id.reset(token)
    assert len(records) == 1  # the second line was written without one
    through_logging, direct = root_lines()
    assert list(direct) == list(through_logging)  # same keys, same order
    assert {**direct, "time": ""} == {**through_logging, "time": ""}
    assert direct["big"] == 2**70  # orjson refuses it: escaped by json, as logging's line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", direct["time"])


def test_a_hot_line_goes_through_logging_where_someone_else_listens(
        root_lines: Callable[[], list[dict[str, Any]]],
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("notify_relay.service")
    with caplog.at_level(logging.INFO, logger="notify_relay.service"):
        logs.info(logger, "accepted", {"messageId": "m-2"})
    assert [(r.getMessage(), getattr(r, "messageId", None)) for r in caplog.records] == [
        ("accepted", "m-2")]
    assert [line["messageId"] for line in root_lines()] == ["m-2"]  # and still written
    logger.setLevel(logging.WARNING)
    try:
        logs.info(logger, "accepted", {"messageId": "m-3"})
    finally:
        logger.setLevel(logging.NOTSET)
    assert root_lines() == []


def test_a_hot_line_logging_would_write_differently_goes_through_logging(
        root_lines: Callable[[], list[dict[str, Any]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("notify_relay.service")
    only_the_line_handler(monkeypatch)
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(args[0])
        return factory(*args, **kwargs)

    logs.info(logger, "accepted", {"messageId": "m-1", "_private": 1})  # logging drops it
    with pytest.raises(KeyError):  # logging refuses to overwrite a record's own attribute
        logs.info(logger, "accepted", {"messageId": "m-2", "name": "x"})
    monkeypatch.setattr(logging, "_logRecordFactory", counting)  # someone's own factory
    logs.info(logger, "accepted", {"messageId": "m-3"})
    assert made == ["notify_relay.service"]
    lines = root_lines()
    assert [(line["messageId"], "_private" in line) for line in lines] == [
        ("m-1", False), ("m-3", False)]
