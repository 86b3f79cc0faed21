"""The translate core: language detection, skipping, call packing and answer matching."""

from __future__ import annotations

import pytest

from services.translate.core import (
    PackLimits,
    ToTranslate,
    Translated,
    check_single,
    detect_language,
    match_answer,
    normalise_language,
    pack,
    plan_reviews,
    translated_event,
    translation_row,
)
from services.translate.core.langdetect import review_language, same_language
from shared.events import Review, ReviewsLearned
from shared.prompts.translate import TranslatedItem, TranslateOutput

# -- language detection -------------------------------------------------------------------

SENTENCES = {
    "en": [
        "The battery lasts two days and the screen is really bright.",
        "It broke after a week, I would not buy this again.",
        "Great value for the price, works as described.",
        "Shipping was slow but the seller was very helpful.",
    ],
    "de": [
        "Der Akku hält zwei Tage und das Display ist sehr hell.",
        "Nach einer Woche war es kaputt, leider nicht zu empfehlen.",
        "Schnelle Lieferung, alles wie beschrieben.",
        "Ich bin mit dem Kauf sehr zufrieden, gute Qualität.",
    ],
    "es": [
        "La batería dura dos días y la pantalla es muy brillante.",
        "Se rompió después de una semana, no lo volvería a comprar.",
        "Muy buena calidad por el precio, lo recomiendo.",
        "El envío tardó mucho pero el vendedor fue amable.",
    ],
    "fr": [
        "La batterie tient deux jours et l'écran est très lumineux.",
        "Il s'est cassé au bout d'une semaine, je ne le rachèterai pas.",
        "Livraison rapide, conforme à la description.",
        "Très bon rapport qualité prix, je recommande.",
    ],
    "it": [
        "La batteria dura due giorni e lo schermo è molto luminoso.",
        "Si è rotto dopo una settimana, non lo ricomprerei.",
        "Ottimo prodotto, consegna veloce e prezzo giusto.",
        "Non funziona più, sono molto deluso dalla qualità.",
    ],
    "pt": [
        "A bateria dura dois dias e a tela é muito brilhante.",
        "Quebrou depois de uma semana, não compraria de novo.",
        "Produto de ótima qualidade, chegou antes do prazo.",
        "Não gostei, o material é muito fraco.",
    ],
    "nl": [
        "De batterij gaat twee dagen mee en het scherm is erg helder.",
        "Na een week was het kapot, ik zou het niet opnieuw kopen.",
        "Snel geleverd en het werkt prima, echt een aanrader.",
        "Het product is mooi maar de kwaliteit valt tegen.",
    ],
    "ja": [
        "バッテリーは二日持ち、画面もとても明るいです。",
        "一週間で壊れました。もう買いません。",
        "値段の割に品質が良くて満足しています。",
    ],
    "zh": [
        "电池能用两天，屏幕也很亮。",
        "用了一个星期就坏了，不会再买。",
        "物流很快，质量不错，性价比高。",
    ],
    "ko": [
        "배터리가 이틀 가고 화면도 아주 밝아요.",
        "일주일 만에 고장 났어요. 다시는 안 사요.",
    ],
    "ru": [
        "Батарея держит два дня, экран очень яркий.",
        "Сломался через неделю, больше не куплю.",
    ],
    "uk": ["Батарея тримає два дні, екран дуже яскравий і якість чудова."],
    "el": ["Η μπαταρία κρατάει δύο μέρες και η οθόνη είναι πολύ φωτεινή."],
    "ar": ["البطارية تدوم يومين والشاشة مشرقة جدا."],
}


@pytest.mark.parametrize(
    ("lang", "text"), [(lang, t) for lang, texts in SENTENCES.items() for t in texts]
)
def test_detects_the_language_of_short_review_sentences(lang: str, text: str) -> None:
    assert detect_language(text) == lang


def test_japanese_with_latin_product_names_is_still_japanese() -> None:
    assert detect_language("iPhone 15 Pro用のケースですが、サイズがぴったりでした。") == "ja"


def test_kanji_only_text_without_kana_reads_as_chinese() -> None:
    assert detect_language("质量很好，非常满意。") == "zh"


@pytest.mark.parametrize("text", ["", "12345 !!!", "👍👍👍", "ok", "Mamma mia", "la la la"])
def test_no_clear_evidence_gives_none(text: str) -> None:
    assert detect_language(text) is None


def test_curly_apostrophes_count_like_straight_ones() -> None:
    assert detect_language("Didn’t work, don’t buy it") == "en"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("en", "en"),
        ("EN-us", "en"),
        ("pt_BR", "pt"),
        ("zh-Hant-TW", "zh"),
        ("und", None),
        ("", None),
        (None, None),
        ("  de ", "de"),
        ("English", None),
        ("e", None),
        ("12", None),
    ],
)
def test_normalise_language_keeps_the_primary_subtag(tag: str | None, expected: str | None) -> None:
    assert normalise_language(tag) == expected


def test_same_language_compares_primary_subtags() -> None:
    assert same_language("en-GB", "en")
    assert not same_language("en", "de")
    assert not same_language(None, None)


def test_a_given_language_is_trusted_over_detection() -> None:
    assert review_language("de", "This is clearly English text.") == "de"
    assert review_language(None, "This is clearly English text.") == "en"
    assert review_language("und", "This is clearly English text.") == "en"


# -- planning -----------------------------------------------------------------------------


def _review(i: int, text: str, language: str | None = None, rating: int | None = 4) -> Review:
    return Review(id=f"r{i:03d}", text=text, language=language, rating=rating)


def test_reviews_in_the_target_language_skip_the_llm_unchanged() -> None:
    reviews = [
        _review(1, "The sound is great and the battery lasts all day."),
        _review(2, "Der Klang ist super, aber der Akku hält nicht lange."),
        _review(3, "Whatever the text says", language="en-US"),
        _review(4, "???"),
    ]
    skipped, todo = plan_reviews(reviews, "en")
    assert [(t.review_id, t.text, t.source_language, t.translated) for t in skipped] == [
        ("r001", reviews[0].text, "en", False),
        ("r003", reviews[2].text, "en", False),
    ]
    assert [(t.review_id, t.source_language) for t in todo] == [("r002", "de"), ("r004", None)]


def test_target_language_tags_are_compared_by_primary_subtag() -> None:
    skipped, todo = plan_reviews([_review(1, "Le produit est très bien.", "fr-CA")], "fr-FR")
    assert len(skipped) == 1 and not todo


# -- packing ------------------------------------------------------------------------------


def _items(n: int, length: int, start: int = 0) -> list[ToTranslate]:
    return [ToTranslate(f"i{start + k:04d}", "x" * length, "de") for k in range(n)]


def test_short_reviews_pack_thirty_per_call() -> None:
    calls = pack(_items(95, 80), PackLimits())
    assert [len(c) for c in calls] == [30, 30, 30, 5]


def test_long_reviews_pack_ten_per_call() -> None:
    calls = pack(_items(25, 600), PackLimits())
    assert [len(c) for c in calls] == [10, 10, 5]


def test_the_short_long_boundary_is_200_characters() -> None:
    limits = PackLimits()
    assert limits.cost("x" * 199) * 30 == limits.capacity
    assert limits.cost("x" * 200) * 10 == limits.capacity


def test_mixed_lengths_share_a_call_by_cost() -> None:
    # 15 short (half a call) + 5 long (half a call) fill exactly one call.
    items = _items(15, 50) + _items(5, 500, start=100) + _items(1, 50, start=200)
    calls = pack(items, PackLimits())
    assert [len(c) for c in calls] == [20, 1]


def test_packing_keeps_input_order_and_every_item_once() -> None:
    items = _items(40, 50) + _items(12, 900, start=100)
    calls = pack(items, PackLimits())
    assert [i for c in calls for i in c] == items


def test_character_budget_caps_a_call_of_very_long_reviews() -> None:
    calls = pack(_items(10, 5000), PackLimits(max_chars=12_000))
    assert [len(c) for c in calls] == [2, 2, 2, 2, 2]


def test_one_oversized_review_still_gets_a_call() -> None:
    assert [len(c) for c in pack(_items(2, 50_000), PackLimits())] == [1, 1]


def test_nothing_to_pack_makes_no_call() -> None:
    assert pack([], PackLimits()) == []


# -- matching -----------------------------------------------------------------------------


def _answer(*items: tuple[str, str, str]) -> list[TranslatedItem]:
    return [TranslatedItem(id=i, translation=t, source_language=s) for i, t, s in items]


CALL = [
    ToTranslate("a", "Sehr gut", "de"),
    ToTranslate("b", "Muy bien", "es"),
    ToTranslate("c", "Très bien", "fr"),
]


def test_translations_are_matched_by_id_not_position() -> None:
    answer = _answer(
        ("c", "Very good (fr)", "fr"), ("a", "Very good (de)", "de"), ("b", "Very good (es)", "es")
    )
    done, missing = match_answer(CALL, answer, "en")
    assert missing == []
    assert [(t.review_id, t.text, t.source_language, t.translated) for t in done] == [
        ("a", "Very good (de)", "de", True),
        ("b", "Very good (es)", "es", True),
        ("c", "Very good (fr)", "fr", True),
    ]


def test_missing_empty_and_unknown_items_are_reported_missing() -> None:
    answer = _answer(("a", "Very good", "de"), ("b", "   ", "es"), ("zzz", "invented", "en"))
    done, missing = match_answer(CALL, answer, "en")
    assert [t.review_id for t in done] == ["a"]
    assert [i.review_id for i in missing] == ["b", "c"]


def test_an_id_answered_twice_differently_is_not_trusted() -> None:
    answer = _answer(
        ("a", "Very good", "de"),
        ("a", "Quite bad", "de"),
        ("b", "Fine", "es"),
        ("b", "Fine", "es"),
        ("c", "Ok", "fr"),
    )
    done, missing = match_answer(CALL, answer, "en")
    assert [t.review_id for t in done] == ["b", "c"]
    assert [i.review_id for i in missing] == ["a"]


def test_our_language_wins_over_the_models() -> None:
    done, _ = match_answer([ToTranslate("a", "Sehr gut", "de")], _answer(("a", "Good", "nl")), "en")
    assert done[0].source_language == "de"


def test_undetected_language_takes_the_models_answer() -> None:
    done, _ = match_answer([ToTranslate("a", "Bof", None)], _answer(("a", "Meh", "fr-FR")), "en")
    assert (done[0].source_language, done[0].text, done[0].translated) == ("fr", "Meh", True)


def test_model_saying_it_is_already_target_language_keeps_the_original() -> None:
    done, _ = match_answer([ToTranslate("a", "Meh!!", None)], _answer(("a", "Meh.", "en")), "en")
    assert (done[0].text, done[0].translated, done[0].source_language) == ("Meh!!", False, "en")


def test_unknown_language_everywhere_is_und() -> None:
    done, _ = match_answer([ToTranslate("a", "???", None)], _answer(("a", "???", "und")), "en")
    assert done[0].source_language == "und"


def test_check_single_rejects_an_answer_without_the_item() -> None:
    check = check_single("a")
    check(TranslateOutput(items=_answer(("a", "Good", "de"))))
    for bad in ([], [("b", "Good", "de")], [("a", "", "de")], [("a", "x", "de"), ("a", "y", "de")]):
        with pytest.raises(ValueError):
            check(TranslateOutput(items=_answer(*bad)))


# -- output -------------------------------------------------------------------------------


def test_translated_event_mirrors_its_input_without_failed_reviews() -> None:
    event = ReviewsLearned(
        job_id="job-1",
        target_language="en",
        reviews=[
            _review(1, "Sehr gut", rating=5),
            _review(2, "Kaputt", rating=1),
            _review(3, "Good", rating=4),
        ],
    )
    done = {
        "r001": Translated("r001", "Very good", "de", True),
        "r003": Translated("r003", "Good", "en", False),
    }
    out = translated_event(event, done)
    assert out is not None
    assert out.job_id == "job-1" and out.target_language == "en"
    assert [(r.id, r.text, r.translated, r.rating) for r in out.reviews] == [
        ("r001", "Very good", True, 5),
        ("r003", "Good", False, 4),
    ]
    assert translated_event(event, {}) is None


def test_translation_row_has_every_column() -> None:
    row = translation_row("job-1", "en", Translated("r1", "Good", "de", True))
    assert row == {
        "review_id": "r1",
        "job_id": "job-1",
        "source_language": "de",
        "target_language": "en",
        "text": "Good",
        "translated": True,
    }


def test_nul_characters_never_reach_postgres() -> None:
    call = [ToTranslate("a", "Sehr gut", "de"), ToTranslate("b", "Gut", "de")]
    done, missing = match_answer(
        call, _answer(("a", "Very\x00 good", "de"), ("b", "\x00", "de")), "en"
    )
    assert [t.text for t in done] == ["Very good"]
    assert [i.review_id for i in missing] == ["b"]
