"""Coalesces concurrent requests into batched calls, the way TensorFlow Serving batches.

A single worker task per batcher takes the first waiting item, then everything else already
queued up to ``max_size``, then waits at most ``max_wait`` for more before processing. While
one batch is processed the next one fills, so at low load a request waits for nothing and at
high load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], Awaitable[list[Result]]],
        max_size: int,
        max_wait_seconds: float,
    ) -> None:
        """process: turns a batch of items into one result per item, in order."""
        self._process = process
        self._max_size = max_size
        self._max_wait = max_wait_seconds
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, item: Item) -> Result:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._max_wait
        while len(batch) < self._max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            self.batches += 1
            try:
                results = await self._process([item for item, _ in live])
            except Exception as error:  # every caller of the batch gets the error
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
