"""The pure core of the translate stage: language detection, call packing, answer matching."""

from services.translate.core.batching import (
    OpenPack,
    PackLimits,
    ToTranslate,
    Translated,
    check_single,
    match_answer,
    pack,
    plan_reviews,
    translated_event,
    translation_row,
)
from services.translate.core.langdetect import detect_language, normalise_language

__all__ = [
    "OpenPack",
    "PackLimits",
    "ToTranslate",
    "Translated",
    "check_single",
    "detect_language",
    "match_answer",
    "normalise_language",
    "pack",
    "plan_reviews",
    "translated_event",
    "translation_row",
]
