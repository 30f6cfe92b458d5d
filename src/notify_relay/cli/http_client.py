"""A small synchronous client of a running server's HTTP API, for the CLI.

One method per endpoint, each returning the parsed JSON of a 2xx answer. Anything else
raises `ApiError`: the server's problem details (`code`, `detail`, `correlationId`), or,
with no `status`, the reason the server could not be reached.
"""

from __future__ import annotations

import contextlib
import json as json_module
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from notify_relay import __version__

# httpx is imported where it is used: `serve` runs from this CLI too, and httpx brings
# rich and pygments along, 4 MiB of the serving process's memory that it never uses
if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0
# the API's largest page
MAX_PAGE = 500


class ApiError(Exception):
    """The server refused (`status` 4xx), failed (5xx), or could not be reached (`None`)."""

    def __init__(self, status: int | None, code: str, detail: str,
                 correlation_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.correlation_id = correlation_id

    @property
    def refused(self) -> bool:
        """The server answered and refused the request (4xx): asking again will not help."""
        return self.status is not None and 400 <= self.status < 500


def path_segment(value: str) -> str:
    """`value` as one percent-encoded path segment; `.` and `..` are kept literal too."""
    quoted = urllib.parse.quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) <= {"."} else quoted


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _problem(response: httpx.Response) -> ApiError:
    correlation_id = response.headers.get("x-correlation-id")
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        detail = body.get("detail") or body.get("title") or response.reason_phrase
        return ApiError(response.status_code, body["code"], str(detail),
                        body.get("correlationId") or correlation_id)
    # not the API's problem details: a proxy, or not notify-relay at all
    text = " ".join(response.text.split())[:200]
    detail = f"{response.reason_phrase or 'no reason given'}" + (f": {text}" if text else "")
    return ApiError(response.status_code, f"HTTP_{response.status_code}", detail, correlation_id)


# the fields each answer must have to be taken for notify-relay's
SUBMITTED = ("messageId", "status", "duplicate")
MESSAGE = ("messageId", "status", "attempts")
PAGE = ("items", "nextCursor")
DESTINATION = ("destination", "state")


class RelayClient:
    """The API of one server, as one sender: its key, or `sender` on a key-less server."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 sender: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"User-Agent": f"notify-relay-cli/{__version__}",
                   "Accept": "application/json, application/problem+json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.sender = sender
        self.timeout = timeout
        import httpx  # see the TYPE_CHECKING import

        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, expect: tuple[str, ...],
                 params: Mapping[str, Any] | None = None, json: Any = None,
                 sender_in_query: bool = True) -> dict[str, Any]:
        """The answer's JSON object, which must have the `expect` fields: a 200 from
        something that is not notify-relay (a mistyped --url) is an error, not a result."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if sender_in_query and self.sender:
            query["senderId"] = self.sender
        import httpx  # see the TYPE_CHECKING import

        try:
            response = self._http.request(method, path, params=query, json=json)
        except httpx.TimeoutException:
            raise ApiError(None, "TIMEOUT", f"no answer from {self.base_url} within "
                                            f"{self.timeout:g} s") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError(None, "UNREACHABLE",
                           f"cannot reach {self.base_url}: {reason}") from None
        if not response.is_success:
            raise _problem(response)
        try:  # strict: NaN or Infinity would make --json print what is not JSON
            answer = json_module.loads(response.content, parse_constant=_not_json)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict) or not all(field in answer for field in expect):
            raise ApiError(None, "BAD_RESPONSE",
                           f"{method} {path} got a {response.status_code} answer that is not "
                           f"notify-relay's: is {self.base_url} a notify-relay server?",
                           response.headers.get("x-correlation-id"))
        return answer

    # messages

    def submit(self, submission: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(submission)
        if self.sender and "senderId" not in body:
            body["senderId"] = self.sender
        result: dict[str, Any] = self._request("POST", "/v1/messages", json=body, expect=SUBMITTED,
                                               sender_in_query=False)
        return result

    def list_messages(self, *, status: str | None = None, limit: int | None = None,
                      cursor: str | None = None) -> dict[str, Any]:
        page: dict[str, Any] = self._request(
            "GET", "/v1/messages", expect=PAGE,
            params={"status": status, "limit": limit, "cursor": cursor})
        return page

    def get_message(self, message_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._request("GET", f"/v1/messages/{path_segment(message_id)}",
                                             expect=MESSAGE)
        return view

    def retry(self, message_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._request(
            "POST", f"/v1/messages/{path_segment(message_id)}/retry", expect=MESSAGE)
        return view

    def cancel(self, message_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._request(
            "POST", f"/v1/messages/{path_segment(message_id)}/cancel", expect=MESSAGE)
        return view

    def replay(self, *, destination: str | None = None, since: str | None = None,
               until: str | None = None, limit: int | None = None) -> dict[str, Any]:
        filters = {"destination": destination, "since": since, "until": until, "limit": limit}
        result: dict[str, Any] = self._request(
            "POST", "/v1/messages/replay", expect=("replayed", "more"),
            json={k: v for k, v in filters.items() if v is not None})
        return result

    # destinations

    def list_destinations(self, *, state: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> dict[str, Any]:
        page: dict[str, Any] = self._request(
            "GET", "/v1/destinations", expect=PAGE,
            params={"state": state, "limit": limit, "cursor": cursor})
        return page

    def get_destination(self, name: str) -> dict[str, Any]:
        view: dict[str, Any] = self._request("GET", f"/v1/destinations/{path_segment(name)}",
                                             expect=DESTINATION)
        return view

    def patch_destination(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = self._request(
            "PATCH", f"/v1/destinations/{path_segment(name)}", json=dict(changes),
            expect=DESTINATION)
        return view


def pages(fetch: Callable[..., dict[str, Any]], *, limit: int | None, cursor: str | None = None,
          **filters: Any) -> Iterator[dict[str, Any]]:
    """The pages of a list, following `nextCursor`, until `limit` items (None: all)."""
    remaining = limit
    while True:
        size = MAX_PAGE if remaining is None else min(remaining, MAX_PAGE)
        page: dict[str, Any] = fetch(limit=size, cursor=cursor, **filters)
        yield page
        if remaining is not None:
            remaining -= len(page["items"])
        cursor = page.get("nextCursor")
        if cursor is None or (remaining is not None and remaining <= 0):
            return


__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "ApiError", "RelayClient", "pages", "path_segment"]
