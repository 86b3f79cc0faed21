"""The LLM layer's part of the exception hierarchy (`shared.errors` is its root).

A stage needs to know one thing about a failed call: may it be tried again later
(`retryable`)? The stage turns the error into a `shared.errors.Failure` (`Failure.of`),
and the runner sends a retryable one through the stage's retry topics (the offset of the
record moves on at once) and the others to its dead-letter topic. Every class says which.

    LLMError
    ├── LLMMalformedOutput        not retryable: the model kept answering junk
    ├── LLMRequestRejected        not retryable: the provider refused the request (4xx)
    └── LLMUnavailable            retryable: the provider could not be used in time
        ├── LLMTimeout            retryable: calls kept exceeding the per-call timeout
        └── LLMRateLimited        retryable: the quota did not allow the call in time
"""

from __future__ import annotations

from shared.errors import Failure, VocError


class LLMError(VocError):
    """Base class of every error the LLM layer raises.

    `stage` names the pipeline stage that made the call, `attempts` how many provider
    calls were made before giving up.
    """

    retryable: bool = False

    def __init__(self, message: str, *, stage: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.stage = stage
        self.attempts = attempts


class LLMMalformedOutput(LLMError):
    """The model's answer could not be repaired into the output model, or the caller's
    `validate` rejected it, on every one of the allowed attempts.

    Not retryable: the same input will most likely fail again, so the stage dead-letters
    the message. `raw` holds the last answer (truncated) for the dead-letter record and
    `reason` the last parse or validation error.
    """

    retryable = False

    def __init__(
        self, message: str, *, stage: str = "", attempts: int = 0, raw: str = "", reason: str = ""
    ) -> None:
        super().__init__(message, stage=stage, attempts=attempts)
        self.raw = raw[:2000]
        self.reason = reason

    def failure(self) -> Failure:
        """The failure, with the last parse or validation error in its reason."""
        base = super().failure()
        if not self.reason:
            return base
        return Failure(base.kind, f"{base.reason} ({self.reason})", base.retryable)


class LLMRequestRejected(LLMError):
    """The provider refused the request itself (400, 401, 403, 404, 422 ...).

    Not retryable: a bad key, an unknown model or an oversized prompt will not get better
    by waiting. `status_code` is the HTTP status the provider answered.
    """

    retryable = False

    def __init__(
        self, message: str, *, stage: str = "", attempts: int = 0, status_code: int = 0
    ) -> None:
        super().__init__(message, stage=stage, attempts=attempts)
        self.status_code = status_code


class LLMUnavailable(LLMError):
    """The provider kept failing (5xx, connection errors, 429s) through every attempt.

    Retryable: the review itself is fine, so it goes through the stage's retry topics
    (each tier waits out its delay) before it is dead-lettered.
    """

    retryable = True


class LLMTimeout(LLMUnavailable):
    """Calls kept exceeding the hard per-call timeout, or the call's overall deadline
    passed. Retryable, like every `LLMUnavailable`."""


class LLMRateLimited(LLMUnavailable):
    """The shared quota (or the provider's 429s) did not let the call through before
    its deadline. Retryable; `retry_after` says when trying again makes sense, in
    seconds."""

    def __init__(
        self, message: str, *, stage: str = "", attempts: int = 0, retry_after: float = 0.0
    ) -> None:
        super().__init__(message, stage=stage, attempts=attempts)
        self.retry_after = retry_after
