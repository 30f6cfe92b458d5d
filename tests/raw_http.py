"""Answers read off a raw socket, for the tests that speak HTTP/1.1 byte by byte."""

from __future__ import annotations

import asyncio
import json


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def problem_of(raw: bytes) -> tuple[dict[str, str], dict[str, object]]:
    """The head's fields (lower-case names) and the problem document of an answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:])
    fields = {name.lower(): value for name, value in fields.items()}
    assert fields["content-type"] == "application/problem+json", fields
    document = json.loads(body)
    # every answer carries its correlation id, the same in the document
    assert fields["x-correlation-id"] == document["correlationId"], (fields, document)
    return fields, document


async def read_answer(reader: asyncio.StreamReader, body_length: int | None = None) -> bytes:
    """One answer, head and body: `body_length` bytes of body, or as many as its
    Content-Length says (a HEAD answer's says what a GET's would carry: give 0)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    if body_length is None:
        body_length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:"))
    return head + await asyncio.wait_for(reader.readexactly(body_length), 5)
