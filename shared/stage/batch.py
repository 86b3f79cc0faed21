"""One batch from polled records to written results: decode, handle, sink, isolate.

`BatchProcessor.process(records)` decodes each record into the input topic's model (a
record that does not decode is a poison record: dead-lettered with the reason), has the
handler process the rest, carries the batch's replay marks onto what it produces, and
writes the result through the `Sink`.

One record must never block its partition, so failures are narrowed down to the record
that causes them: when the handler raises something unexpected, or the sink's rows are
refused (too long, a NUL byte, a constraint), or a step `KeepsFailing` while the
infrastructure works, the batch is handled and written again one record at a time, and
only the record that still fails is dead-lettered, with its `Failure`. An outage is not
the records' fault: it is waited out inside `Faults` and never reaches this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from shared.errors import Failure
from shared.stage.contract import (
    REPLAY_MARKS,
    DeadLetterOut,
    Headers,
    Incoming,
    Outgoing,
    StageHandler,
    StageResult,
)
from shared.stage.deadletters import (
    header_map,
    not_before_ms,
    poison_dead_letter,
    record_dead_letter,
)
from shared.stage.faults import Faults, KeepsFailing, short
from shared.stage.observer import StageObserver
from shared.stage.sink import Sink

log = logging.getLogger(__name__)


class BatchProcessor:
    """Processes one stage's batches (see the module docstring)."""

    def __init__(
        self,
        handler: StageHandler,
        sink: Sink,
        faults: Faults,
        observer: StageObserver,
    ) -> None:
        self.handler = handler
        self.sink = sink
        self.faults = faults
        self.observer = observer

    async def process(
        self,
        records: Sequence[ConsumerRecord[Any, Any]],
        writing: Callable[[], None] = lambda: None,
    ) -> None:
        """Decode, handle and write `records`; `writing()` is called before the first
        write (from then on the batch is better finished than abandoned)."""
        good, poison = self.decode(records)
        marks = _replay_marks(good)
        await self._handle_and_sink(good, poison, marks, writing)

    def decode(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[list[Incoming], list[DeadLetterOut]]:
        """Records as the input topic's events, and the poison ones as dead letters."""
        good: list[Incoming] = []
        poison: list[DeadLetterOut] = []
        model = self.handler.input.model
        assert model is not None
        for r in records:
            raw = r.value or b""
            headers = tuple(r.headers or ())
            try:
                event = model.model_validate_json(raw)
            except (ValidationError, ValueError) as exc:
                src = Incoming(None, r.topic, r.partition, r.offset, raw, r.key, headers)
                poison.append(poison_dead_letter(src, short(exc)))
                continue
            good.append(Incoming(event, r.topic, r.partition, r.offset, raw, r.key, headers))
        return good, poison

    async def _handle_and_sink(
        self,
        good: list[Incoming],
        poison: list[DeadLetterOut],
        marks: Headers,
        writing: Callable[[], None],
    ) -> None:
        result = await self._handle_isolated(good)
        result.dead_letters.extend(poison)
        if marks:
            result.events = [
                Outgoing(e.topic, e.key, e.value, e.headers + marks) for e in result.events
            ]
        writing()
        try:
            await self.sink.write(result)
        except Exception as exc:  # an outage never gets here: `Faults` waits it out
            cause = exc.error if isinstance(exc, KeepsFailing) else exc
            if len(good) > 1:
                log.warning(
                    "writing a batch failed, isolating its records",
                    extra={"stage": self.handler.name, "error": short(cause)},
                )
                if poison:
                    await self._handle_and_sink([], poison, marks, writing)
                for rec in good:
                    await self._handle_and_sink([rec], [], marks, writing)
                return
            failure = self._given_up(exc, good[0] if good else None)
            fallback = StageResult(dead_letters=[record_dead_letter(r, failure) for r in good])
            fallback.dead_letters.extend(poison)
            # If even the dead letter cannot be written, the batch fails and the runner
            # stops: a restart retries it; skipping it would lose the record silently.
            await self.sink.write(fallback)

    async def _handle_isolated(self, batch: list[Incoming]) -> StageResult:
        """Run the handler; on an unexpected error, find the record causing it."""
        if not batch:
            return StageResult()
        try:
            return await self.faults.run(lambda: self.handler.handle(batch), "handle")
        except Exception as exc:  # an outage never gets here: `Faults` waits it out
            if len(batch) == 1:
                failure = self._given_up(exc, batch[0])
                return StageResult(dead_letters=[record_dead_letter(batch[0], failure)])
            merged = StageResult()
            for rec in batch:
                merged.merge(await self._handle_isolated([rec]))
            return merged

    def _given_up(self, exc: BaseException, rec: Incoming | None) -> Failure:
        """The failure of one record, logged; counted apart when the infrastructure kept
        refusing it (an alert fires on that)."""
        where = (
            {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset} if rec else {}
        )
        if isinstance(exc, KeepsFailing):
            failure = Failure(type(exc.error).__name__, str(exc))
            self.observer.on_gave_up(failure)
            log.error(
                "record keeps failing while the infrastructure works, dead-lettering it",
                extra={"stage": self.handler.name, "error": str(exc), **where},
            )
            return failure
        log.exception(
            "record failed, dead-lettering it",
            extra={"stage": self.handler.name, **where},
            exc_info=exc,
        )
        return Failure.of(exc)

    async def wait_until_due(
        self, records: Sequence[ConsumerRecord[Any, Any]], stopping: asyncio.Event
    ) -> bool:
        """Sleep until the batch's last record is due (retry tiers); False if stopping."""
        due_ms = max(not_before_ms(header_map(r.headers or ())) for r in records)
        delay = due_ms / 1000 - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
        return not stopping.is_set()


def _replay_marks(batch: Sequence[Incoming]) -> Headers:
    """The replay headers any record of the batch carries (each key once)."""
    marks: dict[str, bytes] = {}
    for rec in batch:
        for k, v in rec.headers:
            if k in REPLAY_MARKS:
                marks[k] = v
    return tuple(marks.items())
