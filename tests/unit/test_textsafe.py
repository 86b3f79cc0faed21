"""The sanitiser of LLM free text (`shared.textsafe`); tests/unit/test_report_narrative.py
checks the report core applies it."""

from __future__ import annotations

from typing import Any

import pytest

from shared.textsafe import (
    LINK_REMOVED,
    MAX_ACTIONS,
    MAX_SUMMARY_CHARS,
    QUOTE_REMOVED,
    Grounding,
    cap,
    clean_text,
    ground_quotes,
    safe_narrative,
    texts_under,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("See https://evil.example/x?y=1 now", f"See {LINK_REMOVED} now"),
        ("glued:https://evil.example", f"glued:{LINK_REMOVED}"),
        ("visit www.evil.example today", f"visit {LINK_REMOVED} today"),
        ("[click here](javascript:alert(document.cookie)) please", "click here please"),
        ("![logo](http://evil.example/p.png) and [ref][1]", "logo and ref"),
        ("java script:alert(1)", LINK_REMOVED),
        ("JAVASCRIPT:alert(1)", LINK_REMOVED),
        ("data:text/html;base64,PHNjcmlwdD4=", LINK_REMOVED),
        ("Key data: 40% of reviews", "Key data: 40% of reviews"),
        ("mailto:ceo@evil.example", LINK_REMOVED),
        ("<a href='http://x'>bold</a> <b>claim</b>", "bold claim"),
        ("see <https://evil.example> now", "see now"),
        ("<script>alert(1)</script>fine<style>p{}</style>", "fine"),
        ("&lt;img src=x onerror=alert(1)&gt;ok", "ok"),
        ("before<!-- hidden instruction -->after", "before after"),
        (
            "# Heading\n> quoted\n- item one\n* item two\n---\nend",
            "Heading quoted item one item two end",
        ),
        ("**strong** __also__ *em* _em_ ~~gone~~ `code`", "strong also em em gone code"),
        ("```python\nprint(1)\n```", "print(1)"),
        (
            "battery_life and snake_case stay, 5 * 4 too",
            "battery_life and snake_case stay, 5 * 4 too",
        ),
        # Trojan-source bidi controls, zero-width and tag characters are invisible: gone.
        ("safe\u202etxt.exe\u202c and\u2066 isolate\u2069", "safetxt.exe and isolate"),
        ("zero\u200bwidth\ufeff\u200e\u200f", "zerowidth"),
        ("tags\U000e0049\U000e0047\U000e004e\U000e004f\U000e0052\U000e0045", "tags"),
        ("ctrl\x00\x07\x1b[31mred\x9b", "ctrl[31mred"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ("emoji 👩\u200d💻 keep ZWJ, و\u200cنیم", "emoji 👩\u200d💻 keep ZWJ, و\u200cنیم"),
        ("  lots \t of\n\n space  ", "lots of space"),
        ("cafe\u0301", "café"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw, 500) == clean


def test_overlong_text_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = " ".join(["word"] * 1000)
    out = clean_text(text, 100)
    assert len(out) <= 100 and out.endswith("word…")
    assert cap("x" * 300, 50) == "x" * 49 + "…"
    assert clean_text(None, 10) == ""


def test_quotes_survive_only_if_they_are_the_jobs_own_words() -> None:
    grounding = Grounding(["Battery dies fast, sadly.", "they fit well", "Akku’s Laufzeit"])
    text = (
        'Users say "battery dies fast" and “they fit well”, «they fit» too; '
        '„Battery ... sadly“ is fine, "Akku\'s Laufzeit" as well, but '
        '"buy from evil.example instead" and 「最高」 were never written.'
    )
    assert ground_quotes(text, grounding) == (
        'Users say "battery dies fast" and “they fit well”, «they fit» too; '
        '„Battery ... sadly“ is fine, "Akku\'s Laufzeit" as well, but '
        f"{QUOTE_REMOVED} and {QUOTE_REMOVED} were never written."
    )
    # Fragments must come from one text; a bare ellipsis is not a quote of anything.
    assert ground_quotes('"battery ... they fit"', grounding) == QUOTE_REMOVED
    assert ground_quotes('"..."', grounding) == QUOTE_REMOVED


def test_texts_under_collects_the_jobs_words() -> None:
    doc: dict[str, Any] = {
        "pain_points": [{"aspect": "battery", "quotes": [{"quote": "dies fast", "score": -1}]}],
        "top_themes": [{"name": "Battery life", "dimension": "battery"}],
        "summary": "not grounding material",
    }
    assert sorted(texts_under(doc)) == ["Battery life", "battery", "battery", "dies fast"]


def test_safe_narrative_cleans_every_field_and_bounds_the_list() -> None:
    actions = [
        {
            "title": "**Fix** the [battery](http://evil.example)",
            "detail": "Tell users to visit https://evil.example/refund",
            "priority": "urgent!!",
            "evidence": '"the battery is a fire hazard, sue them" said a customer',
            "extra": "<script>dropped</script>",
        },
        {"title": "<b></b>", "detail": "no title left", "priority": "low", "evidence": ""},
        *({"title": f"a{i}", "detail": "", "priority": "low", "evidence": ""} for i in range(20)),
    ]
    summary, out = safe_narrative("x" * 5000, actions, ["dies fast"])
    assert len(summary) <= MAX_SUMMARY_CHARS
    assert out[0] == {
        "title": "Fix the battery",
        "detail": f"Tell users to visit {LINK_REMOVED}",
        "priority": "medium",
        "evidence": f"{QUOTE_REMOVED} said a customer",
    }
    assert len(out) == MAX_ACTIONS - 1  # the eight taken, one without a title dropped
    assert all(a["title"] for a in out)
