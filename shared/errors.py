"""The one exception hierarchy of vocstream, and the failure value that leaves it.

Every error the pipeline raises on purpose is a `VocError`, and each class says what
becomes of the record that met it. A stage that gives up on a record (or on one review of
it) turns the exception into a `Failure` right where it caught it (`Failure.of(exc)`):
the class name, the reason and whether waiting may cure it. That value travels unchanged
to the runner's router, which sends a retryable failure through the stage's retry topics
and everything else (or a retryable one out of tiers) to its dead-letter topic, and then
into the record's headers and its `dead_letters` row. Nothing downstream re-derives
retryability from a name.

    VocError                     (retryable: False unless a subclass says so)
    ├── PoisonRecord             the record can never be processed: dead-lettered at once
    └── LLMError                 shared.llm.errors: the LLM layer's failures
        ├── LLMMalformedOutput   the model kept answering junk
        ├── LLMRequestRejected   the provider refused the request (4xx)
        └── LLMUnavailable       retryable: the provider could not be used in time
            ├── LLMTimeout
            └── LLMRateLimited

Errors of the infrastructure (Postgres, Kafka, Redis, the network) are not `VocError`s:
the stage runner retries the work through them (`shared.stage.faults`) and only turns
one into a `Failure` when it keeps failing for one record while the infrastructure works.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """Why a record (or one review of it) failed: what the retry and dead-letter path carry.

    `kind` is the class name of the error (the `error_type` of headers, rows and metrics),
    `reason` its message, `retryable` whether trying again later may succeed.
    """

    kind: str
    reason: str
    retryable: bool = False

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure an exception stands for (a `VocError` describes itself)."""
        if isinstance(exc, VocError):
            return exc.failure()
        return cls(type(exc).__name__, str(exc) or type(exc).__name__)


class VocError(Exception):
    """Base of every vocstream error; `retryable` says whether waiting may cure it."""

    retryable: bool = False

    def failure(self) -> Failure:
        """This error as a `Failure` (subclasses add detail to the reason)."""
        return Failure(type(self).__name__, str(self) or type(self).__name__, self.retryable)


class PoisonRecord(VocError):
    """A record that can never be processed (undecodable, schema-invalid, ids that cannot
    be stored): dead-lettered at once, with the reason, never retried."""
