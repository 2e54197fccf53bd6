"""The offline jobs' errors: each names the input at fault and whether it is worth retrying."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


# -- errors ------------------------------------------------------------------------------


class OfflineError(Exception):
    """Base of the offline jobs' errors; ``field`` names the input at fault and ``retryable``
    says whether the same call may succeed later."""

    retryable = False

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownPolicy(OfflineError):
    """No policy of that name (or it has no live version)."""


class NoCandidate(OfflineError):
    """The policy has no candidate version (retrain first), or not the one asked for."""


class InvalidData(OfflineError):
    """A file or log whose content does not fit the policy (missing column, bad shape, empty)."""


class Busy(OfflineError):
    """The live version kept moving while promoting (a trainer publishing); try again."""

    retryable = True
