"""Packs the reviews of concurrent batches into shared LLM calls.

The runner hands translate whatever one poll returned: when events trickle in, that is
one small event per batch, and packing per batch alone would make one call per event.
Several batches are in flight at once (`max_inflight`), so `CallPacker` keeps one open
call per (job, target language): each batch adds its reviews and waits for their
results; a call is sent as soon as it is full, or `linger_s` after it was opened, whichever
comes first. A batch still finishes only when all its own reviews have results, so the
runner's upsert-produce-commit order (and with it at-least-once) is unchanged; a review
already waiting in the open call (a replayed duplicate) shares its result.

A call that fails with one of `split_on` (a malformed answer: weak models break down on
big packs) is split in halves, each run as a call of its own, down to single reviews: a
smaller request is a retry that changes something, and it costs about log2(n) calls
instead of one call per review.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from services.translate.core import OpenPack, PackLimits, ToTranslate

R = TypeVar("R")
JobKey = tuple[str, str]  # (job id, target language)
RunCall = Callable[[str, str, list[ToTranslate]], Awaitable[Mapping[str, R]]]


class _OpenCall(Generic[R]):
    """A call being filled, and the futures waiting for each of its reviews."""

    def __init__(self, limits: PackLimits) -> None:
        self.pack = OpenPack(limits)
        self.waiters: dict[str, list[asyncio.Future[R]]] = {}
        self.timer: asyncio.TimerHandle | None = None


class CallPacker(Generic[R]):
    """Fills calls per job across batches and runs them with `run_call`.

    `run_call(job_id, target_language, items)` must return a result for every item id
    (translated or failed); if it raises one of `split_on` for more than one item, the
    items are split in halves and each half is run again; any other exception (or one of
    `split_on` for a single item) goes to every review of the call.
    """

    def __init__(
        self,
        limits: PackLimits,
        linger_s: float,
        run_call: RunCall[R],
        split_on: tuple[type[Exception], ...] = (),
    ) -> None:
        self.limits = limits
        self.linger_s = linger_s
        self.run_call = run_call
        self.split_on = split_on
        self.open: dict[JobKey, _OpenCall[R]] = {}
        self.running: set[asyncio.Task[None]] = set()

    async def submit(
        self, job_id: str, target_language: str, items: Sequence[ToTranslate]
    ) -> list[R]:
        """The results of `items`, in order, once the calls carrying them are answered."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            futures.append(fut)
            self._add((job_id, target_language), item, fut)
        return list(await asyncio.gather(*futures))

    def _add(self, key: JobKey, item: ToTranslate, fut: asyncio.Future[R]) -> None:
        call = self.open.get(key)
        if call is not None and item.review_id in call.waiters:
            call.waiters[item.review_id].append(fut)
            return
        if call is not None and not call.pack.fits(item):
            self._send(key, call)
            call = None
        if call is None:
            call = self.open[key] = _OpenCall(self.limits)
            call.timer = asyncio.get_running_loop().call_later(self.linger_s, self._send, key, call)
        call.pack.add(item)
        call.waiters[item.review_id] = [fut]
        if call.pack.full:
            self._send(key, call)

    def _send(self, key: JobKey, call: _OpenCall[R]) -> None:
        """Close `call` (if it is still the open one of `key`) and run it."""
        if self.open.get(key) is not call:
            return
        del self.open[key]
        if call.timer is not None:
            call.timer.cancel()
        task = asyncio.create_task(self._run(key, call))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, key: JobKey, call: _OpenCall[R]) -> None:
        try:
            results = await self._run_split(key, call.pack.items)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            for futures in call.waiters.values():
                for fut in futures:
                    if not fut.done():
                        fut.cancel() if cancelled else fut.set_exception(exc)
            if cancelled:
                raise
            return
        for rid, futures in call.waiters.items():
            for fut in futures:
                if fut.done():
                    continue
                if rid in results:
                    fut.set_result(results[rid])
                else:
                    fut.set_exception(KeyError(f"no result for review {rid!r}"))

    async def _run_split(self, key: JobKey, items: list[ToTranslate]) -> Mapping[str, R]:
        """`run_call` on `items`, halving them while it fails with one of `split_on`."""
        try:
            return await self.run_call(key[0], key[1], items)
        except self.split_on:
            if len(items) < 2:
                raise
        half = len(items) // 2
        first, second = await asyncio.gather(
            self._run_split(key, items[:half]), self._run_split(key, items[half:])
        )
        return {**first, **second}

    async def close(self) -> None:
        """Cancel open and running calls (their batches fail and are replayed)."""
        for key, call in list(self.open.items()):
            self._send(key, call)
        tasks = list(self.running)
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
