"""The request being served (correlation id, method and path), for log lines and problem
documents."""

from __future__ import annotations

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# (method, path) of the request being served, for the line that logs its refusal
request_line: ContextVar[tuple[str, str] | None] = ContextVar("request_line", default=None)
