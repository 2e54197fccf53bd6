"""Where a job reports how far it is (the CLI draws a bar on stderr; the API ignores it)."""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger(__name__)


# -- progress ----------------------------------------------------------------------------


class Progress(Protocol):
    """Where a job reports how far it is (the CLI draws a bar on stderr; the API ignores it)."""

    def start(self, task: str, total: int | None) -> None:
        """A new phase of ``total`` units (None: unknown) begins."""

    def advance(self, n: int) -> None:
        """``n`` more units of the current phase are done."""

    def finish(self) -> None:
        """The current phase is done."""


class NoProgress:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass
