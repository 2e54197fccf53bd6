"""Coalesces concurrent requests into batched calls, the way TensorFlow Serving batches.

A single worker task per batcher takes the first waiting item, then everything else already
queued up to ``max_size``, then waits at most ``max_wait`` for more before processing. While
one batch is processed the next one fills, so at low load a request waits for nothing and at
high load batches grow by themselves.

Processing has two stages that overlap across batches, in order: ``process`` (the model call)
returns an awaitable for the second stage (logging), which a second task awaits while the
worker already runs the next batch's first stage. Batches finish in the order they started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], Awaitable[Awaitable[list[Result]]]],
        max_size: int,
        max_wait_seconds: float,
    ) -> None:
        """process: runs the first stage of a batch and returns the awaitable second stage,
        which yields one result per item, in order."""
        self._process = process
        self._max_size = max_size
        self._max_wait = max_wait_seconds
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue()
        self._finishing: asyncio.Queue[tuple[Awaitable[list[Result]], list[tuple[Item, asyncio.Future[Result]]]]] = (
            asyncio.Queue(maxsize=1)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0

    async def submit(self, item: Item) -> Result:
        if not self._tasks or any(t.done() for t in self._tasks):
            for task in self._tasks:
                task.cancel()
            self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._finish())]
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch = [await self._queue.get()]
        await asyncio.sleep(0)  # let requests already parsed on this loop join the batch
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
                second_stage = await self._process([item for item, _ in live])
            except Exception as error:  # every caller of the batch gets the error
                _fail(live, error)
                continue
            await self._finishing.put((second_stage, live))

    async def _finish(self) -> None:
        while True:
            second_stage, live = await self._finishing.get()
            try:
                results = await second_stage
            except Exception as error:
                _fail(live, error)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(batch: Sequence[tuple[object, asyncio.Future[Any]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
