"""How the fake LLM reads an opinion: lexicon cues and a few rules, in six languages.

`opinion_marks(text, language)` finds the cues of `voc.fake_llm.lexicons` in a text and
returns what each contributes, where it stands, so a caller can add up any passage (a
clause, a sentence) from its own words:

- opinion words count with their weight; an intensifier before one multiplies it
  ("very good", "とても良い"), a softener shrinks it ("a bit loud");
- a negator turns the next opinion within a couple of words of the same clause around
  ("not good", "no me gusta", "ne fonctionne pas", "不好"), in German and Japanese also
  the one just before it ("gefällt mir nicht", "良くない"); a negated complaint becomes
  faint praise ("not bad", "kein Problem"), a negated praise a complaint; a negator that
  turns nothing is a complaint of its own ("doesn't fit", "No se queda fijo", "届かない");
  words that carry their own negation ("pas terrible", "没问题") are never turned again;
- "too" before a plain word is a complaint ("too small", "太小"), before an opinion it
  strengthens it ("trop bien");
- in a sentence with "but", what follows weighs more than what precedes ("looks nice but
  broke after a week");
- emoji count in every language.

Space-separated languages match whole words (a trailing `*` in the lexicon allows any
ending; French elisions "n'", "l'" are words of their own; Spanish and French also match
without accents); Japanese and Chinese match the longest lexicon entry at each character.
There is no table of any review and nothing is learned from labels.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from voc.fake_llm.lexicons import EMOJI, SPECS, LexiconSpec

CJK_LANGUAGES = frozenset({"ja", "zh"})
FOLD_ACCENTS = frozenset({"es", "fr"})  # "tres bien", "decu": accents are often left off
ELIDING = frozenset({"fr"})
_ELIDED = frozenset({"l", "d", "j", "n", "m", "t", "s", "c", "qu", "jusqu", "lorsqu", "puisqu"})

# How far (in words, or characters for CJK) a modifier reaches: words strictly between.
NEGATION_REACH = 2
NEGATION_REACH_CJK = 4
NEGATION_BACK_REACH = 2  # German "gefällt mir nicht"
NEGATION_BACK_REACH_CJK = 4  # Japanese "満足していません"
INTENSIFIER_REACH = 1
INTENSIFIER_REACH_CJK = 2

NEGATED_PRAISE = 0.8  # "not good" is a little less bad than "bad" is bad
NEGATED_PRAISE_FLOOR = 0.6  # ... but "not works" is still a complaint
NEGATED_COMPLAINT = 0.5  # "not bad" is faint praise
LONE_NEGATION = -0.6  # "doesn't fit", "届かない"
LONE_TOO = -1.0  # "too small"
BEFORE_CONTRAST = 0.6
AFTER_CONTRAST = 1.3

_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
# Where a clause ends: a negator or intensifier does not reach across these.
CLAUSE_BREAKS = frozenset(
    ",;:()[]{}\u2026\u2013\u2014\u3001\uff0c\uff1b\uff1a\uff08\uff09\u300c\u300d\u300e\u300f\u3010\u3011\n"
)


@dataclass(frozen=True)
class Cue:
    """What a lexicon entry is: an opinion (signed weight), a negator, an intensifier
    (factor), a contrast word, a "too" word (factor) or a neutral blocker."""

    kind: str  # "op" | "not" | "int" | "but" | "too" | "neu"
    value: float = 0.0
    fixed: bool = False  # a negator never turns it (sentence adverb, or its own negation)
    negates: bool = False  # the entry carries a negation itself ("pas terrible", "没问题")


@dataclass(frozen=True)
class Item:
    """A cue found in a text: its character span and its place in words (or characters)."""

    start: int
    end: int
    at: int  # index of its first word (CJK: its first character)
    span: int  # words (CJK: characters) it covers
    cue: Cue
    clause: int

    def gap_to(self, other: Item) -> int:
        """Words (CJK: characters) strictly between this item and a later one."""
        return other.at - (self.at + self.span)


@dataclass(frozen=True)
class Mark:
    """What one cue contributes to the passage it stands in."""

    pos: int
    value: float


def fold(word: str, language: str) -> str:
    """The form a word is looked up in: casefolded, straight apostrophes, and for
    Spanish and French without accents."""
    word = word.translate(_APOSTROPHES).casefold()
    if language in FOLD_ACCENTS:
        word = "".join(
            ch for ch in unicodedata.normalize("NFD", word) if not unicodedata.combining(ch)
        )
    return word


def words_of(text: str, language: str) -> list[tuple[int, int, str]]:
    """(start, end, folded form) of every word; French elisions split ("n'est" -> "n'",
    "est")."""
    out: list[tuple[int, int, str]] = []
    source = text.translate(_APOSTROPHES)
    for m in _WORD_RE.finditer(source):
        a, b = m.span()
        w = m.group()
        if language in ELIDING and "'" in w:
            head, _, rest = w.partition("'")
            if head.casefold() in _ELIDED and rest:
                cut = a + len(head) + 1
                out.append((a, cut, fold(head + "'", language)))
                a, w = cut, rest
        out.append((a, b, fold(w, language)))
    return out


def _entries(spec: LexiconSpec) -> Iterable[tuple[str, Cue]]:
    """Every (entry, cue) of a spec; weights and factors come from each line's number."""
    for line in spec.words.strip().splitlines():
        weight, *words = line.split()
        for w in words:
            yield w, Cue("op", float(weight))
    for w in spec.negators.split():
        yield w, Cue("not")
    for line in spec.intensifiers.strip().splitlines():
        factor, *words = line.split()
        for w in words:
            yield w, Cue("int", float(factor))
    for w in spec.contrast.split():
        yield w, Cue("but")
    for line in spec.too.strip().splitlines():
        factor, *words = line.split()
        for w in words:
            yield w, Cue("too", float(factor))
    for w in spec.neutral.split():
        yield w, Cue("neu")


class Lexicon:
    """The cues of one language, indexed for matching (see the module docstring)."""

    def __init__(self, language: str, spec: LexiconSpec) -> None:
        self.language = language
        self.cjk = language in CJK_LANGUAGES
        self.negate_after = spec.negate_after
        fixed = {fold(w.replace("_", " "), language) for w in spec.fixed.split()}
        negators = [fold(w, language) for w in spec.negators.split()]
        self.phrases: dict[tuple[str, ...], Cue] = {}
        self.stems: dict[tuple[str, ...], Cue] = {}  # entries ending in "*": last word a stem
        self.chars: dict[str, Cue] = {}
        for raw, cue in _entries(spec):
            key = raw.replace("_", " ")
            if cue.kind == "op":
                own_negation = (
                    any(n in key for n in negators)
                    if self.cjk
                    else any(t in negators for t in self._tokens(key.rstrip("*")))
                )
                cue = Cue(
                    "op",
                    cue.value,
                    fixed=own_negation or fold(key, language) in fixed,
                    negates=own_negation,
                )
            if self.cjk:
                self._add(self.chars, key, cue, raw)
            elif key.endswith("*"):
                self._add(self.stems, self._tokens(key[:-1]), cue, raw)
            else:
                self._add(self.phrases, self._tokens(key), cue, raw)
        self.longest = max((len(k) for k in self.chars), default=1)
        self.longest_phrase = max((len(k) for k in (*self.phrases, *self.stems)), default=1)
        self.first_words = {k[0] for k in self.phrases} | {k[0] for k in self.stems if len(k) > 1}
        self.single_stems = sorted({k[0] for k in self.stems if len(k) == 1}, key=len)

    def _tokens(self, phrase: str) -> tuple[str, ...]:
        return tuple(w for _, _, w in words_of(phrase, self.language))

    @staticmethod
    def _add(table: dict[Any, Cue], key: object, cue: Cue, raw: str) -> None:
        """Add an entry; one listed twice is a mistake in the lexicon."""
        if key in table:
            raise ValueError(f"lexicon entry {raw!r} is listed twice")
        table[key] = cue

    def items(self, text: str) -> list[Item]:
        """Every cue of the text, left to right, longest match first, none overlapping."""
        clause_of = _clause_index(text)
        return self._cjk_items(text, clause_of) if self.cjk else self._word_items(text, clause_of)

    def _word_items(self, text: str, clause_of: list[int]) -> list[Item]:
        words = words_of(text, self.language)
        forms = [w for _, _, w in words]
        items: list[Item] = []
        i = 0
        while i < len(words):
            found: tuple[int, Cue] | None = None
            if forms[i] in self.first_words or any(map(forms[i].startswith, self.single_stems)):
                found = self._match_at(forms, i)
            if found is None:
                i += 1
                continue
            n, cue = found
            a, b = words[i][0], words[i + n - 1][1]
            items.append(Item(a, b, i, n, cue, clause_of[a]))
            i += n
        return _split_clauses_at_contrast(items)

    def _match_at(self, forms: list[str], i: int) -> tuple[int, Cue] | None:
        """The longest entry starting at word `i`: (words it covers, its cue)."""
        for n in range(min(self.longest_phrase, len(forms) - i), 0, -1):
            window = tuple(forms[i : i + n])
            cue = self.phrases.get(window)
            if cue is not None:
                return n, cue
            last = window[-1]
            for k in range(len(last), 0, -1):  # the longest stem of the last word first
                cue = self.stems.get((*window[:-1], last[:k]))
                if cue is not None:
                    return n, cue
        return None

    def _cjk_items(self, text: str, clause_of: list[int]) -> list[Item]:
        folded = text.casefold()
        if len(folded) != len(text):
            folded = text
        items: list[Item] = []
        p = 0
        while p < len(text):
            for n in range(min(self.longest, len(text) - p), 0, -1):
                cue = self.chars.get(folded[p : p + n])
                if cue is not None:
                    items.append(Item(p, p + n, p, n, cue, clause_of[p]))
                    p += n
                    break
            else:
                p += 1
        return _split_clauses_at_contrast(items)


def _clause_index(text: str) -> list[int]:
    """For every character, how many clause breaks precede it."""
    out = []
    n = 0
    for ch in text:
        out.append(n)
        if ch in CLAUSE_BREAKS:
            n += 1
    out.append(n)
    return out


def _split_clauses_at_contrast(items: list[Item]) -> list[Item]:
    """A contrast word starts a new clause: renumber clauses so it does."""
    out: list[Item] = []
    extra = 0
    for it in items:
        if it.cue.kind == "but":
            extra += 1
        out.append(Item(it.start, it.end, it.at, it.span, it.cue, it.clause * 1000 + extra))
    return out


@cache
def lexicon(language: str) -> Lexicon:
    """The lexicon of a language (English for one the fake does not know)."""
    lang = language if language in SPECS else "en"
    return Lexicon(lang, SPECS[lang])


def opinion_marks(text: str, language: str) -> list[Mark]:
    """What every cue of `text` contributes, at its position (see the module docstring).

    Contrast weighting is applied per sentence-like unit the caller passes: call it on a
    sentence to weigh "but" within that sentence.
    """
    lex = lexicon(language)
    items = lex.items(text)
    reach = NEGATION_REACH_CJK if lex.cjk else NEGATION_REACH
    back_reach = NEGATION_BACK_REACH_CJK if lex.cjk else NEGATION_BACK_REACH
    int_reach = INTENSIFIER_REACH_CJK if lex.cjk else INTENSIFIER_REACH
    value = {i: it.cue.value for i, it in enumerate(items) if it.cue.kind == "op"}
    marks: list[Mark] = []

    def same_clause(a: int, b: int) -> bool:
        return items[a].clause == items[b].clause

    # Intensifiers and "too" act on the opinion right after them (Japanese "すぎ" after).
    for i, it in enumerate(items):
        kind = it.cue.kind
        if kind == "int":
            j = i + 1
            if j in value and same_clause(i, j) and it.gap_to(items[j]) <= int_reach:
                value[j] *= it.cue.value
        elif kind == "too":
            after = lex.language == "ja"  # "小さすぎ": the word comes first
            j = i - 1 if after else i + 1
            if 0 <= j < len(items) and j in value and items[j].clause == it.clause:
                first, second = (items[j], it) if after else (it, items[j])
                if first.gap_to(second) <= (0 if after else 1):
                    value[j] *= it.cue.value
                    continue
            if after or _followed_in_clause(text, it):
                marks.append(Mark(it.start, LONE_TOO))

    # Negators: consecutive ones of a clause are one negation ("ne ... pas").
    negated: set[int] = set()
    i = 0
    while i < len(items):
        if items[i].cue.kind != "not":
            i += 1
            continue
        group = [i]  # this negator and the ones completing it ("ne" ... "pas")
        for k in range(i + 1, len(items)):
            if not same_clause(i, k) or items[group[-1]].gap_to(items[k]) > reach + 1:
                break
            if items[k].cue.kind == "not":
                group.append(k)
            elif items[k].cue.kind != "op":
                break
        first, last = items[group[0]], items[group[-1]]
        target: int | None = None
        absorbed = False
        for j in range(group[0] + 1, len(items)):
            if j > group[-1] and (not same_clause(group[0], j) or last.gap_to(items[j]) > reach):
                break
            cue = items[j].cue
            if cue.kind != "op":
                continue
            if cue.negates:
                absorbed = True  # "n'est pas terrible": the phrase holds the negation
                break
            if cue.fixed or j in negated:
                continue
            target = j
            break
        if target is None and not absorbed and lex.negate_after:
            for j in range(group[0] - 1, -1, -1):
                if not same_clause(j, group[0]) or items[j].gap_to(first) > back_reach:
                    break
                cue = items[j].cue
                if cue.kind == "op" and not cue.fixed and j not in negated:
                    target = j
                    break
        if target is not None:
            v = value[target]
            value[target] = (
                -max(NEGATED_PRAISE * v, NEGATED_PRAISE_FLOOR) if v > 0 else -NEGATED_COMPLAINT * v
            )
            negated.add(target)
        elif not absorbed:
            marks.append(Mark(first.start, LONE_NEGATION))
        i = group[-1] + 1

    # "but": what follows the last contrast word weighs more than what precedes it.
    buts = [it.start for it in items if it.cue.kind == "but"]
    pivot = buts[-1] if buts else None
    has_before = pivot is not None and any(items[j].start < pivot for j in value)
    has_after = pivot is not None and any(items[j].start > pivot for j in value)
    for j, v in value.items():
        w = 1.0
        if pivot is not None and has_before and has_after:
            w = BEFORE_CONTRAST if items[j].start < pivot else AFTER_CONTRAST
        marks.append(Mark(items[j].start, v * w))
    marks.extend(Mark(p, EMOJI[ch]) for p, ch in enumerate(text) if ch in EMOJI)
    marks.sort(key=lambda m: m.pos)
    return marks


def _followed_in_clause(text: str, item: Item) -> bool:
    """Whether a word follows `item` before its clause or sentence ends ("too small", not
    "me too")."""
    for ch in text[item.end :]:
        if ch in CLAUSE_BREAKS or ch in ".!?\u3002\uff01\uff1f":
            return False
        if ch.isalnum():
            return True
    return False


def squash(raw: float) -> float:
    """A passage's summed marks as a score in (-1, 1): one plain word ~ +-0.6, several or a
    strong one approach +-1."""
    return round(raw / (raw * raw + 4.0) ** 0.5, 2)


def passage_score(marks: Iterable[Mark], start: int, end: int) -> float:
    """The summed marks of the passage `[start, end)`."""
    return sum(m.value for m in marks if start <= m.pos < end)


def clauses(text: str, language: str) -> list[tuple[int, int]]:
    """Spans of the clauses of a sentence: split after a clause break (comma, semicolon,
    "、", ...) and before a contrast word ("but", "pero", "但是"); every span non-empty
    and together they cover `text`."""
    cuts = {0, len(text)}
    for i, ch in enumerate(text):
        if ch in CLAUSE_BREAKS:
            cuts.add(i + 1)
    cuts.update(it.start for it in lexicon(language).items(text) if it.cue.kind == "but")
    points = sorted(cuts)
    return [(a, b) for a, b in itertools.pairwise(points) if a < b]
