"""The exception hierarchy of the pipeline runtime; each class says what the runner does."""

from __future__ import annotations


class VocError(Exception):
    """Base of every vocstream error."""


class PoisonRecord(VocError):
    """A record that can never be processed (undecodable, schema-invalid): dead-lettered."""


class ReviewFailed(VocError):
    """One review of a batch failed for good; the stage dead-letters that review alone."""

    def __init__(self, review_id: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.review_id = review_id
        self.error_type = error_type


class TransientInfraError(VocError):
    """Postgres, Redis or Kafka is briefly unavailable: the batch is retried, not committed."""
