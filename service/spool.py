"""The local spool: where log writes go while Redis cannot take them.

A decision is answered only once it is logged. While Redis is unreachable, decision batches
and rewards are appended instead to a file on local disk, each entry fsynced before its
callers are answered, in order; a background task writes them to Redis, in the same order,
when it answers again. Until the spool is empty every new write also goes through it, so the
log keeps the order in which callers were answered. A full spool refuses writes with 503 and
Retry-After: the service never answers a decision it could not log.

File format (``<dir>/spool.log``): entries of a 4-byte big-endian length and an orjson body.
``<dir>/spool.offset`` holds the byte offset of the first entry not yet in Redis, replaced
atomically after each group of entries is written there. When everything is written the log
is truncated. A process killed mid-drain replays from the offset, and replays are
idempotent: a decision by its event id, a reward by a token spooled with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from eventlog import LogUnavailable
from service.errors import ServiceError, Unavailable

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
LOG = "spool.log"
OFFSET = "spool.offset"


class SpoolFull(Unavailable):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "event log unavailable and the local spool is full; the decision was not made",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class SpoolFile:
    """The on-disk queue itself (blocking file calls; ``Spool`` runs them off the event loop)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOG
        self.offset_path = directory / OFFSET
        self.max_bytes = max_bytes
        self._file = open(self.path, "ab")  # kept open for the process's life
        self.size = self._file.seek(0, os.SEEK_END)
        self.offset = int(self.offset_path.read_text()) if self.offset_path.exists() else 0
        self.offset = min(self.offset, self.size)  # an offset from before an unfinished truncation
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """Cuts off a last entry whose write a crash interrupted (it was never acknowledged)."""
        good = self.offset
        for end, _ in self.entries():
            good = end
        if good < self.size:
            logger.warning("spool: dropping %d bytes of an unfinished last entry", self.size - good)
            self._file.truncate(good)
            os.fsync(self._file.fileno())
            self.size = good

    @property
    def pending_bytes(self) -> int:
        return self.size - self.offset

    def append(self, entry: dict[str, Any]) -> None:
        body = orjson.dumps(entry)
        if self.size + len(body) + _LENGTH.size > self.max_bytes:
            raise OverflowError("spool full")
        self._file.write(_LENGTH.pack(len(body)) + body)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size += len(body) + _LENGTH.size

    def entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(end offset, entry) of every complete entry from the committed offset on."""
        with open(self.path, "rb") as reader:
            reader.seek(self.offset)
            position = self.offset
            while True:
                head = reader.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    return
                (length,) = _LENGTH.unpack(head)
                body = reader.read(length)
                if len(body) < length:
                    return
                try:
                    entry = orjson.loads(body)
                except orjson.JSONDecodeError:
                    return
                position += _LENGTH.size + length
                yield position, entry

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is in Redis; an empty spool is truncated."""
        if offset >= self.size:
            self._file.truncate(0)
            os.fsync(self._file.fileno())
            self.size = offset = 0
        temporary = self.offset_path.with_suffix(".tmp")
        with open(temporary, "w") as out:
            out.write(str(offset))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.offset_path)
        self.offset = offset

    def close(self) -> None:
        self._file.close()


Writer = Callable[[dict[str, Any]], Awaitable[None]]
"""Writes one spooled entry to Redis; raises Unavailable while Redis is still away."""


class Spool:
    """Ordered fallback for log writes, and the task that drains it into Redis."""

    def __init__(self, directory: Path, max_bytes: int, retry_after_seconds: int = 5) -> None:
        self.file = SpoolFile(directory, max_bytes)
        self.retry_after_seconds = retry_after_seconds
        self._lock = asyncio.Lock()
        self._writers: dict[str, Writer] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        """Why the last write went to the spool (None once Redis took everything again)."""
        self.spooled = 0
        self.flushed = 0
        self.full = False
        """True since a write was refused for lack of room, until one fits again."""

    @property
    def active(self) -> bool:
        """True while older writes wait in the spool: new ones must queue behind them."""
        return self.file.pending_bytes > 0

    def register(self, kind: str, writer: Writer) -> None:
        self._writers[kind] = writer

    async def append(self, kind: str, entry: dict[str, Any], reason: str) -> None:
        """Appends durably (fsynced) or raises SpoolFull."""
        async with self._lock:
            try:
                await asyncio.to_thread(self.file.append, {"kind": kind, **entry})
            except OverflowError:
                self.full = True
                raise SpoolFull(self.retry_after_seconds) from None
        self.full = False
        self.last_error = reason
        self.spooled += 1
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain_forever())
        if self.active:
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.file.close()

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.active:
                if await self.drain():
                    break
                await asyncio.sleep(0.5)  # Redis still away

    async def drain(self) -> bool:
        """Writes spooled entries to Redis in order; True when the spool is empty."""
        while True:
            entries = await asyncio.to_thread(lambda: list(_take(self.file.entries(), 512)))
            written = None
            try:
                for end, entry in entries:
                    try:
                        await self._writers[entry["kind"]](entry)
                    except LogUnavailable:
                        raise
                    except ServiceError as error:  # e.g. a reward for an unknown event: logged, dropped
                        logger.warning("spool: %s entry not written: %s", entry["kind"], error.message)
                    written = end
                    self.flushed += 1
            except LogUnavailable as error:
                self.last_error = error.message
                return False
            finally:
                if written is not None:
                    async with self._lock:
                        await asyncio.to_thread(self.file.commit, written)
                    self.full = False
            async with self._lock:
                if not self.active:
                    if self.last_error is not None:
                        logger.info("spool: drained into Redis (%d entries so far)", self.flushed)
                    self.last_error = None
                    return True


def _take(entries: Iterator[tuple[int, dict[str, Any]]], n: int) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, item in enumerate(entries):
        if i >= n:
            return
        yield item
