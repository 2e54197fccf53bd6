"""The event log's one error: Redis could not be reached or failed (worth retrying)."""

from __future__ import annotations


class LogUnavailable(Exception):
    """Redis errors become this at the event log's boundary (HTTP 503, retryable)."""

    status = 503
    code = "unavailable"
    retryable = True

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
