"""The body of POST /v1/messages/replay (contract v1.1): which dead letters to send again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from notify_relay.api.submission import TIMESTAMP_PATTERN, json_integer
from notify_relay.domain.destination import LOOKUP_NAME_PATTERN
from notify_relay.domain.submission import check_timestamp, parse_rfc3339

REPLAY_LIMIT_DEFAULT = 1000
REPLAY_LIMIT_MAX = 10_000
Timestamp = Annotated[str, Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN}),
                      AfterValidator(check_timestamp)]


class ReplayRequest(BaseModel):
    """All fields optional: with none, up to `limit` of the caller's FAILED messages."""

    model_config = ConfigDict(strict=True, extra="forbid")

    destination: Annotated[str, StringConstraints(pattern=LOOKUP_NAME_PATTERN)] | None = None
    since: Timestamp | None = Field(default=None, description="failed at or after this time")
    until: Timestamp | None = Field(default=None, description="failed before this time")
    limit: Annotated[int, Field(ge=1, le=REPLAY_LIMIT_MAX),
                     BeforeValidator(json_integer)] = REPLAY_LIMIT_DEFAULT

    def window(self) -> tuple[datetime | None, datetime | None]:
        """[since, until): an `until` before `since` is an empty window, not an error, as
        a rule across two fields is one that no schema can tell a client."""
        since = parse_rfc3339(self.since).astimezone(UTC) if self.since else None
        until = parse_rfc3339(self.until).astimezone(UTC) if self.until else None
        return since, until

