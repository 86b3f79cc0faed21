"""A small, dependency-free language detector for review texts.

Two signals, cheapest first:

1. **Script.** Letters are counted per Unicode script. Kana means Japanese, Hangul Korean,
   Han without kana Chinese, Cyrillic Russian (Ukrainian with its own letters), and Greek,
   Arabic, Hebrew, Thai and Devanagari name their usual language. CJK characters carry
   about a word each, so they weigh more than a Latin letter: a Japanese review quoting
   "iPhone 12 Pro" is still Japanese.
2. **Stopwords** for Latin-script text: each word found in a language's list of frequent
   function words scores for that language, shared words (``de``, ``la``, ``in``) split
   their point between the languages that share them, and a few letters only one
   language uses (``ß``, ``ñ``, ``ã``) add a little.

The answer is an ISO 639-1 code, or None when the text gives no clear winner (too short,
only numbers or emoji, a tie): the caller then lets the LLM say what the language is.
Only what the pipeline needs is covered; anything fancier belongs to the LLM.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

UNDETERMINED = frozenset({"und", "mul", "zxx", "mis", ""})

# Latin-script stopword lists: frequent function words and review staples, lower case.
_STOPWORDS: dict[str, str] = {
    "en": """the and is it this that was for with not but very have has had my you i of to
        in on are they be as at so would its it's one all just were after really does did
        didn don doesn isn wasn won t s no will if when what there than about which only
        also from out up can well love works because do an or me we our your them their
        been these those any get got much more too even could should great good quality
        bought item use used product arrived without within everything""",
    "de": """der die das und ist nicht ein eine einen einem einer ich es mit sehr auf für
        den dem zu sich auch aber war wir sie bei nach noch wie nur hat habe schon kann
        gut leider von im mir mich wird werden gekauft diese dieser dieses dass oder kein
        keine keinen als man etwas mal am aus um vom zum zur wurde sind hatte alles immer
        ganz gibt wieder doch jetzt nichts viel nein ob bin ihr uns einfach wenn weil
        funktioniert qualität preis artikel lieferung schnelle gute tolles passt zurück""",
    "es": """el la los las de que y en un una es no por para con se lo muy pero me mi al
        del le su como más ya bien todo está esta este son hay fue ha he porque cuando
        nada sin tiene bastante también bueno buena puede solo sólo hace así desde hasta
        sobre otro otra poco nos eso esto a calidad precio producto llegó funciona mucho
        estoy era tan les ni tengo un mejor gusta gustado fácil todavía envío después
        antes todos nunca siempre aunque mismo""",
    "fr": """le la les de des du et est un une en pas que qui pour dans ce cette il elle
        je ne sur avec au aux mais très plus ou son sa ses bien tout été était fait ai
        suis sont nous vous on même trop peu rien comme aussi produit qualité bon bonne
        déçu déçue car donc sans ça cela c j qu n d l m avoir rapport prix j'ai c'est
        n'est qu'il acheté reçu fonctionne encore après à non mes nos vos livraison
        commande attentes conforme recommande""",
    "it": """il lo la gli le di e è che un una per con non in del della dei delle al alla
        sono ma molto mi si ho ha anche come più questo questa prodotto se tutto bene
        solo ancora dopo perché quando poi già cui nel nella stato essere fatto sia da
        ed buon buono ottimo niente qualità prezzo ne l un' po dell all sul sulla hanno
        tutti funziona consiglio arrivato a""",
    "pt": """o a os as de do da dos das e é um uma que não em no na nos nas para com por
        muito mas se eu meu minha ele ela foi tem está são ao à pelo pela isso este esta
        bem mais já também produto qualidade ótimo bom boa chegou pois sem até nada
        quando ainda só você depois então estou muito recomendo funciona preço""",
    "nl": """de het een en is van ik niet dat die in op te met voor zijn maar ook als er
        dan nog wel naar bij om heb heeft was werd geen zeer erg goed mijn je dit deze
        kan wat al of zo uit echt prima veel hij zij we wij na tot door over omdat moet
        product kwaliteit gekocht werkt binnen snel mooi""",
}

# Letters (nearly) only one Latin-script language of the set uses: a weak extra signal.
_LETTER_HINTS: dict[str, tuple[str, ...]] = {
    "ß": ("de",),
    "ä": ("de",),
    "ö": ("de",),
    "ü": ("de",),
    "ñ": ("es",),
    "¿": ("es",),
    "¡": ("es",),
    "ã": ("pt",),
    "õ": ("pt",),
    "ç": ("fr", "pt"),
    "ê": ("fr", "pt"),
    "ô": ("fr", "pt"),
    "è": ("fr", "it"),
    "ù": ("fr", "it"),
    "œ": ("fr",),
    "û": ("fr",),
    "î": ("fr",),
    "ì": ("it",),
    "ò": ("it",),
    "ĳ": ("nl",),
}
_HINT_WEIGHT = 0.5
_HINT_CAP = 3.0

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _word_weights(lists: dict[str, str]) -> dict[str, dict[str, float]]:
    """word -> {language: weight}, a word shared by n languages weighing 1/n in each."""
    owners: dict[str, list[str]] = {}
    for lang, words in lists.items():
        for w in set(words.split()):
            owners.setdefault(w, []).append(lang)
    return {w: {lang: 1.0 / len(langs) for lang in langs} for w, langs in owners.items()}


_WEIGHTS = _word_weights(_STOPWORDS)
LATIN_LANGUAGES: tuple[str, ...] = tuple(_STOPWORDS)


def normalise_language(tag: str | None) -> str | None:
    """The lower-cased primary subtag of a BCP 47 tag (`en-US` -> `en`), None if unknown."""
    if tag is None:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    # ISO 639 codes only (2-3 ASCII letters): a model answering "English" says nothing usable.
    if primary in UNDETERMINED or not (2 <= len(primary) <= 3 and primary.isascii()):
        return None
    return primary if primary.isalpha() else None


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two language tags name the same language (by primary subtag)."""
    na, nb = normalise_language(a), normalise_language(b)
    return na is not None and na == nb


def _script_of(ch: str) -> str | None:
    cp = ord(ch)
    if cp < 0x250:
        return "latin" if ch.isalpha() else None
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
        return "kana"
    if (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x2FA1F
    ):
        return "han"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return "hangul"
    if 0x0400 <= cp <= 0x052F:
        return "cyrillic"
    if 0x0370 <= cp <= 0x03FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    if 0x0600 <= cp <= 0x06FF or 0x0750 <= cp <= 0x077F:
        return "arabic"
    if 0x0590 <= cp <= 0x05FF:
        return "hebrew"
    if 0x0E00 <= cp <= 0x0E7F:
        return "thai"
    if 0x0900 <= cp <= 0x097F:
        return "devanagari"
    if 0x1E00 <= cp <= 0x1EFF:
        return "latin"
    return None


# A CJK character carries roughly a word; a Latin letter a fraction of one.
_SCRIPT_WEIGHT = {"kana": 3.0, "han": 3.0, "hangul": 3.0}
_SIMPLE_SCRIPTS = {
    "greek": "el",
    "arabic": "ar",
    "hebrew": "he",
    "thai": "th",
    "devanagari": "hi",
}
_UKRAINIAN_LETTERS = frozenset("іїєґІЇЄҐ")


def script_counts(text: str) -> Counter[str]:
    """Letters of `text` counted per script (digits, punctuation and emoji ignored)."""
    counts: Counter[str] = Counter()
    for ch in text:
        script = _script_of(ch)
        if script is not None:
            counts[script] += 1
    return counts


def latin_scores(text: str) -> dict[str, float]:
    """Stopword and letter-hint scores of a Latin-script text per candidate language."""
    scores: dict[str, float] = dict.fromkeys(LATIN_LANGUAGES, 0.0)
    lowered = text.lower().replace("\u2019", "'")
    for word in _WORD.findall(lowered):
        for w in _split_elision(word):
            for lang, weight in _WEIGHTS.get(w, {}).items():
                scores[lang] += weight
    hints: dict[str, float] = {}
    for ch in lowered:
        for lang in _LETTER_HINTS.get(ch, ()):
            hints[lang] = hints.get(lang, 0.0) + _HINT_WEIGHT
    for lang, bonus in hints.items():
        scores[lang] += min(bonus, _HINT_CAP)
    return scores


def _split_elision(word: str) -> Iterable[str]:
    """`j'ai` scores as itself and as `j` + `ai`; `didn't` as `didn` + `t`."""
    if "'" not in word:
        return (word,)
    head, tail = word.split("'", 1)
    return (word, head, tail)


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of `text`'s language, or None when it cannot be told."""
    counts = script_counts(text)
    if not counts:
        return None
    weighted = {s: n * _SCRIPT_WEIGHT.get(s, 1.0) for s, n in counts.items()}
    script = max(weighted, key=lambda s: weighted[s])
    if script in ("kana", "han"):
        kana, han = counts.get("kana", 0), counts.get("han", 0)
        # Japanese writes grammar in kana; Chinese never does (a stray katakana loan
        # word in a long Chinese text is not enough).
        return "ja" if kana >= 2 or (kana and kana * 20 >= han) else "zh"
    if script == "hangul":
        return "ko"
    if script == "cyrillic":
        return "uk" if any(ch in _UKRAINIAN_LETTERS for ch in text) else "ru"
    if script in _SIMPLE_SCRIPTS:
        return _SIMPLE_SCRIPTS[script]
    return _best_latin(latin_scores(text))


def _best_latin(scores: dict[str, float]) -> str | None:
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    # At least one full word's worth of evidence, and a clear winner.
    if top < 1.0 or top - second < 0.5:
        return None
    return best


def review_language(given: str | None, text: str) -> str | None:
    """A review's language: the row's own tag when it has one, else detected from text."""
    return normalise_language(given) or detect_language(text)
