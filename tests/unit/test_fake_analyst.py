"""The bundled fake analyst reads the text: cues in six languages, rating withheld.

Every review here is answered with `"rating": None`, so what it gets right it got from the
words: negation and complaint cues, intensifiers, "too", "but", whole-word keywords and
no aspect from a function word; the rating only leans a review with no opinion at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from voc.fake_llm.answers import LEXICON, answer_insight

DIMS = [{"name": d.name, "description": d.description} for d in LEXICON]


def insights(
    text: str, language: str, rating: int | None = None, **extra: Any
) -> list[dict[str, Any]]:
    inp = {"review_id": "r", "text": text, "language": language, "rating": rating}
    return answer_insight({**inp, "dimensions": DIMS, **extra})["insights"]


def mean_score(text: str, language: str) -> float:
    found = insights(text, language)
    return sum(i["score"] for i in found) / len(found) if found else 0.0


NEGATIVE = [
    ("It skips and drops out all the time.", "en"),
    ("Stopped working after a week.", "en"),
    ("Not good at all.", "en"),
    ("Doesn't fit.", "en"),
    ("Way too small.", "en"),
    ("Kein guter Kauf.", "de"),
    ("Funktioniert leider nicht.", "de"),
    ("Es gefällt mir nicht.", "de"),
    ("No funciona.", "es"),
    ("No me gusta nada.", "es"),
    ("Dejó de funcionar a los dos días.", "es"),
    ("Son demasiado grandes.", "es"),
    ("Le son saute dès que je traverse une gare bondée", "fr"),
    ("Ne fonctionne pas.", "fr"),
    ("Ce n'est pas terrible.", "fr"),
    ("Je ne suis pas satisfait.", "fr"),
    ("良くない。", "ja"),
    ("すぐに壊れて使えない。", "ja"),
    ("サイズが小さすぎる。", "ja"),
    ("音が出ない。", "ja"),
    ("不好用。", "zh"),
    ("质量不太好。", "zh"),
    ("太小了。", "zh"),
]
POSITIVE = [
    ("Not bad at all, I like it.", "en"),
    ("Very comfortable and the sound is excellent.", "en"),
    ("Kein Problem mit dem Akku.", "de"),
    ("Sehr zufrieden, klare Kaufempfehlung!", "de"),
    ("En oferta son una ganga.", "es"),
    ("Muy cómodos y el sonido es genial.", "es"),
    ("Pas mal du tout, je recommande.", "fr"),
    ("Aucun problème, très bon produit.", "fr"),
    ("問題なく使えています。", "ja"),
    ("とても満足しています。", "ja"),
    ("没问题，很满意。", "zh"),
    ("音质出色，非常喜欢。", "zh"),
]


@pytest.mark.parametrize(("text", "language"), NEGATIVE)
def test_complaints_read_negative_from_the_words_alone(text: str, language: str) -> None:
    assert mean_score(text, language) < 0, insights(text, language)


@pytest.mark.parametrize(("text", "language"), POSITIVE)
def test_praise_reads_positive_from_the_words_alone(text: str, language: str) -> None:
    assert mean_score(text, language) > 0, insights(text, language)


def test_the_sound_that_drops_out_is_a_negative_sound_insight() -> None:
    (ins,) = insights("Le son saute dès que je traverse une gare bondée", "fr")
    assert (ins["dimension"], ins["sentiment"]) == ("Sound quality", "negative")


@pytest.mark.parametrize(
    ("text", "language", "not_dimension"),
    [
        ("En oferta son una ganga.", "es", "Sound quality"),  # "son": they are
        ("Son prix est correct.", "fr", "Sound quality"),  # "son": its
        ("My son loves them.", "en", "Sound quality"),  # a child
        ("Das Produkt ist fast perfekt.", "de", "Performance"),  # "fast": almost
        ("Laut Hersteller hält er zehn Stunden.", "de", "Sound quality"),  # according to
        ("The sonic toothbrush is great.", "en", "Sound quality"),  # whole words only
        ("表现出色，非常满意。", "zh", "Design and look"),  # 出色 holds 色 (colour)
    ],
)
def test_no_aspect_from_a_function_word_or_part_of_a_word(
    text: str, language: str, not_dimension: str
) -> None:
    assert not_dimension not in {i["dimension"] for i in insights(text, language)}


def test_keywords_still_match_their_inflections_and_german_compounds() -> None:
    dims = {i["dimension"] for i in insights("The batteries charged fast.", "en")}
    assert "Battery life" in dims
    dims = {i["dimension"] for i in insights("Die Akkulaufzeit ist super.", "de")}
    assert "Battery life" in dims
    dims = {i["dimension"] for i in insights("En oferta son una ganga.", "es")}
    assert "Price and value" in dims


def test_intensifiers_strengthen_and_softeners_soften() -> None:
    assert mean_score("Very good.", "en") > mean_score("Good.", "en") > 0
    assert mean_score("Sehr gut.", "de") > mean_score("Gut.", "de") > 0
    assert mean_score("とても良い。", "ja") > mean_score("良い。", "ja") > 0
    assert mean_score("Bad.", "en") < mean_score("A bit bad.", "en") < 0
    assert mean_score("Cher.", "fr") < mean_score("Un peu cher.", "fr") < 0


def test_each_sentence_and_clause_is_read_from_its_own_words() -> None:
    found = insights("The battery is great. The strap broke after a week.", "en")
    by_dim = {i["dimension"]: i["sentiment"] for i in found}
    assert by_dim["Battery life"] == "positive" and by_dim["Durability"] == "negative"
    found = insights("Great sound, but the battery dies after an hour.", "en")
    by_dim = {i["dimension"]: (i["sentiment"], i["quote"]) for i in found}
    assert by_dim["Sound quality"] == ("positive", "Great sound")
    assert by_dim["Battery life"] == ("negative", "but the battery dies after an hour.")


def test_the_rating_is_only_a_weak_prior_for_a_review_without_opinion_words() -> None:
    text = "The battery died after two days."
    for rating in (1, 5, None):
        (ins,) = insights(text, "en", rating)
        assert ins["sentiment"] == "negative"  # the stars never overrule the words
    neutral = "I bought it for my trip."
    assert [i["sentiment"] for i in insights(neutral, "en", None)] == ["neutral"]
    (five,) = insights(neutral, "en", 5)
    (one,) = insights(neutral, "en", 1)
    assert five["sentiment"] == "positive" and one["sentiment"] == "negative"
    assert 0 < five["score"] <= 0.3 and -0.3 <= one["score"] < 0


def test_quotes_are_the_original_with_the_aligned_translation_beside_them() -> None:
    text = "セールで安い。音質も良い。"
    translation = "On sale and cheap. The sound is good too."
    found = insights(text, "ja", translation=translation, target_language="en")
    by_dim = {i["dimension"]: i for i in found}
    sound = by_dim["Sound quality"]
    assert sound["quote"] == "音質も良い。" and sound["quote"] in text
    assert sound["quote_translation"] == "The sound is good too."
    assert sound["aspect"] == "sound"  # named in the target language
    for ins in found:
        assert not ins["quote"].startswith("[") and not ins["quote_translation"].startswith("[")


def test_no_quote_translation_for_a_review_in_the_target_language() -> None:
    found = insights("The sound is good.", "en", target_language="en")
    assert [i["quote_translation"] for i in found] == [None]
