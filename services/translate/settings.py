"""Settings of the translate service; shared infrastructure settings come from
`shared.settings.CommonSettings` and the LLM's from `shared.llm.LLMSettings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.translate.core import PackLimits


class TranslateSettings(BaseSettings):
    """How reviews are packed into LLM calls and how much runs at once."""

    model_config = SettingsConfigDict(extra="ignore")

    short_per_call: int = Field(default=30, ge=1, validation_alias="VOC_TRANSLATE_SHORT_PER_CALL")
    long_per_call: int = Field(default=10, ge=1, validation_alias="VOC_TRANSLATE_LONG_PER_CALL")
    short_chars: int = Field(default=200, ge=1, validation_alias="VOC_TRANSLATE_SHORT_CHARS")
    # Bounds one call's prompt (and so its answer) whatever the review lengths.
    max_chars: int = Field(default=24_000, ge=1000, validation_alias="VOC_TRANSLATE_MAX_CHARS")
    # A call that is not full waits this long for reviews of other batches in flight.
    linger_ms: int = Field(default=500, ge=0, validation_alias="VOC_TRANSLATE_LINGER_MS")
    # LLM calls in flight per process, across all batches (the shared limiter paces them).
    concurrency: int = Field(default=32, ge=1, validation_alias="VOC_TRANSLATE_CONCURRENCY")
    # Records are events of up to 50 reviews: several per poll let calls pack across them.
    # Eight, not forty: a batch's reviews are held until their calls return, and 40 x 50
    # reviews in each of six batches took translate to 183 MB RSS while 100k reviews
    # arrived (bench-ingest --with-stages; 152 MB at eight).
    max_records: int = Field(default=8, ge=1, validation_alias="VOC_TRANSLATE_MAX_RECORDS")
    # Batches in flight: their reviews can share calls while one waits for the LLM.
    max_inflight: int = Field(default=6, ge=1, validation_alias="VOC_TRANSLATE_MAX_INFLIGHT")

    def limits(self) -> PackLimits:
        """The packing limits of the core."""
        return PackLimits(
            short_per_call=self.short_per_call,
            long_per_call=self.long_per_call,
            short_chars=self.short_chars,
            max_chars=self.max_chars,
        )
