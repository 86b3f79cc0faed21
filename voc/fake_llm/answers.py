"""Deterministic answers of the fake LLM, one function per stage.

Every answer is derived from the input alone (no randomness), shaped like the stage's
output model in `shared.prompts`, and checkable by a test:

- learn: dimensions chosen from a multilingual keyword lexicon matched in the sample
  (always 5..15), and a 5W model from a second lexicon;
- translate: `"[" + src + "->" + tgt + "] " + text` per item, src detected when not given;
- insight: one insight per sentence that matches a dimension's keywords; the quote is that
  sentence exactly as it appears in the text; sentiment from a small lexicon and the
  rating; nothing matched -> one "other" insight on the first sentence; empty -> none;
- theme: one theme per cluster named after its most common aspect;
- report: a summary and actions grounded in the aggregates (worst and best dimension).

Fault variants used by the server (`drop_one_item`, `paraphrase_quotes`) live here too.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from voc.fake_llm.gloss import gloss, gloss_term
from voc.fake_llm.lexicons import SPECS
from voc.fake_llm.sentiment import clauses, opinion_marks, passage_score, squash

# --- lexicons -------------------------------------------------------------------------


@dataclass(frozen=True)
class LexDimension:
    """A dimension the fake knows, with keywords in several languages."""

    name: str
    description: str
    keywords: tuple[str, ...]
    aliases: tuple[str, ...] = ()


# fmt: off
LEXICON: tuple[LexDimension, ...] = (
    LexDimension(
        "Battery life",
        "How long the battery lasts and how it charges.",
        ("battery", "batteries", "charge", "charging", "charger", "akku", "batterie",
         "aufladen", "laden", "batería", "bateria", "cargar", "carga", "autonomie",
         "recharge", "バッテリー", "電池", "充電", "电池", "充电", "续航"),
        ("battery", "power"),
    ),
    LexDimension(
        "Price and value",
        "Whether the product is worth what it costs.",
        ("price", "value", "expensive", "cheap", "worth", "cost", "money", "preis", "teuer",
         "günstig", "billig", "geld", "precio", "caro", "barato", "dinero", "prix", "cher",
         "argent", "値段", "価格", "安い", "价格", "便宜", "性价比",
         # offers and bargains are about the price too
         "bargain", "deal", "sale", "schnäppchen", "angebot", "preis-leistung", "oferta",
         "ganga", "chollo", "promo", "promotion", "soldes", "セール", "お得", "コスパ", "打折",
         "划算", "实惠"),
        ("price", "value"),
    ),
    LexDimension(
        "Build quality",
        "Materials, finish and how solidly the product is made.",
        ("quality", "build", "material", "sturdy", "flimsy", "plastic", "qualität",
         "verarbeitung", "calidad", "materiales", "qualité", "matériau", "finition", "品質",
         "质量", "品质", "做工"),
        ("quality", "build"),
    ),
    LexDimension(
        "Delivery and shipping",
        "Shipping speed, delivery and the state the parcel arrived in.",
        ("deliver", "shipping", "shipped", "arrived", "courier", "lieferung", "geliefert",
         "versand", "angekommen", "envío", "envio", "entrega", "llegó", "llego",
         "livraison", "livré", "expédition", "arrivé", "配送", "配達", "届", "物流", "快递",
         "发货", "送货"),
        ("delivery", "shipping"),
    ),
    LexDimension(
        "Size and fit",
        "Whether the size is right and how it fits.",
        ("size", "fit", "fits", "tight", "loose", "größe", "passt", "passform", "talla",
         "tamaño", "ajuste", "taille", "serré", "サイズ", "尺码", "大小", "合身"),
        ("size", "fit"),
    ),
    LexDimension(
        "Customer service",
        "Support, returns, refunds and warranty handling by the seller.",
        ("customer service", "support", "refund", "return", "warranty", "seller",
         "kundenservice", "kundendienst", "rückerstattung", "garantie", "verkäufer",
         "atención al cliente", "servicio", "soporte", "reembolso", "devolución",
         "garantía", "service client", "sav", "remboursement", "vendeur", "サポート",
         "返品", "客服", "售后", "退货", "退款"),
        ("customer service", "service", "support"),
    ),
    LexDimension(
        "Durability",
        "How long the product keeps working without breaking.",
        ("broke", "broken", "lasted", "durable", "stopped working", "kaputt", "haltbar",
         "defekt", "roto", "rompió", "duradero", "dejó de funcionar", "cassé", "durable",
         "solide", "壊れ", "耐久", "坏了", "耐用"),
        ("durability", "reliability"),
    ),
    LexDimension(
        "Ease of use",
        "Set-up, instructions and how easy it is to use day to day.",
        ("easy", "setup", "set up", "intuitive", "instructions", "difficult", "complicated",
         "einfach", "einrichtung", "bedienung", "anleitung", "kompliziert", "fácil", "facil",
         "instalación", "instrucciones", "difícil", "facile", "installation", "notice",
         "compliqué", "使いやすい", "簡単", "設定", "好用", "简单", "安装", "操作"),
        ("ease of use", "usability", "setup"),
    ),
    LexDimension(
        "Sound quality",
        "Audio quality, bass, volume and noise.",
        ("sound", "audio", "bass", "noise", "loud", "volume", "speaker", "klang", "ton",
         "lautstärke", "laut", "sonido", "graves", "volumen", "ruido", "son", "basses",
         "bruit", "音質", "音", "音质", "声音", "噪音"),
        ("sound", "audio"),
    ),
    LexDimension(
        "Design and look",
        "Appearance, colour and style.",
        ("design", "look", "looks", "color", "colour", "style", "beautiful", "pretty",
         "ugly", "aussehen", "farbe", "optik", "diseño", "color", "bonito", "aspecto",
         "couleur", "joli", "デザイン", "色", "外观", "颜色", "设计"),
        ("design", "look", "appearance"),
    ),
    LexDimension(
        "Packaging",
        "The box and how the product was packed.",
        ("packaging", "box", "packed", "wrapped", "verpackung", "karton", "verpackt",
         "embalaje", "caja", "empaque", "emballage", "boîte", "carton", "梱包", "箱", "包装",
         "盒子"),
        ("packaging",),
    ),
    LexDimension(
        "Comfort",
        "How comfortable it is to wear or hold, weight and softness.",
        ("comfortable", "comfort", "soft", "heavy", "weight", "bequem", "komfort", "weich",
         "schwer", "cómodo", "comodo", "comodidad", "suave", "pesado", "confortable",
         "confort", "lourd", "快適", "舒适", "舒服"),
        ("comfort",),
    ),
    LexDimension(
        "Performance",
        "Speed and how well it does its main job.",
        ("fast", "slow", "speed", "performance", "lag", "schnell", "langsam", "leistung",
         "rápido", "rapido", "lento", "rendimiento", "rapide", "lent", "性能", "速度"),
        ("performance", "speed"),
    ),
    LexDimension(
        "Connectivity",
        "Bluetooth, Wi-Fi, pairing and connection stability.",
        ("bluetooth", "wifi", "wi-fi", "connect", "pairing", "signal", "verbindung",
         "verbinden", "koppeln", "conexión", "conectar", "señal", "connexion", "connecter",
         "appairage", "接続", "连接", "蓝牙", "信号"),
        ("connectivity", "connection"),
    ),
)

OTHER = "other"

# Padding order when fewer than 5 dimensions are found in a sample.
DEFAULT_DIMENSIONS = (
    "Build quality",
    "Price and value",
    "Customer service",
    "Delivery and shipping",
    "Ease of use",
)

FIVE_W: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "who": (
        ("parents", ("my son", "my daughter", "kids", "children", "kinder", "sohn", "tochter",
                     "niños", "hijo", "hija", "enfants", "fils", "fille", "子供", "孩子")),
        ("couples", ("my wife", "my husband", "meine frau", "mein mann", "mi esposa",
                     "mi marido", "ma femme", "mon mari")),
        ("students", ("student", "school", "university", "schule", "estudiante", "étudiant")),
        ("professionals", ("work", "office", "arbeit", "büro", "trabajo", "oficina",
                           "travail", "bureau", "仕事", "工作")),
        ("athletes", ("gym", "running", "workout", "sport", "training", "deporte")),
        ("travellers", ("travel", "trip", "flight", "reise", "viaje", "voyage", "旅行")),
        ("gift buyers", ("gift", "present", "geschenk", "regalo", "cadeau", "プレゼント",
                         "礼物")),
    ),
    "what": (
        ("commuting", ("commute", "train", "bus", "pendeln", "metro")),
        ("workouts", ("gym", "running", "workout", "training", "sport")),
        ("work calls", ("call", "meeting", "zoom", "anruf", "llamada", "appel")),
        ("music", ("music", "musik", "música", "musique", "音楽", "音乐")),
        ("everyday use", ("every day", "daily", "täglich", "diario", "tous les jours",
                          "毎日", "每天")),
    ),
    "when": (
        ("daily", ("every day", "daily", "täglich", "diario", "todos los días",
                   "tous les jours", "毎日", "每天")),
        ("mornings", ("morning", "morgens", "mañana", "matin", "朝", "早上")),
        ("evenings", ("evening", "night", "abends", "nachts", "noche", "soir", "nuit", "夜",
                      "晚上")),
        ("weekends", ("weekend", "wochenende", "fin de semana", "week-end")),
        ("holidays", ("christmas", "holiday", "weihnachten", "urlaub", "navidad", "vacaciones",
                      "noël", "vacances")),
    ),
    "where": (
        ("at home", ("home", "house", "zuhause", "hause", "casa", "maison", "家")),
        ("at work", ("office", "work", "büro", "oficina", "bureau", "仕事", "办公室")),
        ("in the car", ("car", "auto", "coche", "voiture", "車", "车")),
        ("at the gym", ("gym", "fitnessstudio", "gimnasio", "salle de sport")),
        ("outdoors", ("outdoor", "outside", "camping", "hiking", "draußen", "wandern",
                      "aire libre", "randonnée")),
        ("while travelling", ("travel", "trip", "flight", "plane", "reise", "viaje",
                              "voyage", "avion")),
    ),
    "why": (
        ("as a gift", ("gift", "present", "geschenk", "regalo", "cadeau", "プレゼント", "礼物")),
        ("to replace an old one", ("replace", "replacement", "old one", "ersatz", "ersetzen",
                                   "reemplazar", "remplacer", "買い替え")),
        ("a good deal", ("deal", "sale", "discount", "angebot", "rabatt", "oferta",
                         "descuento", "promo", "soldes", "セール", "打折")),
        ("recommendation", ("recommended", "recommendation", "empfohlen", "empfehlung",
                            "recomendado", "recommandé", "おすすめ", "推荐")),
        ("reviews", ("reviews", "rating", "bewertungen", "reseñas", "avis")),
    ),
}
FIVE_W_DEFAULTS = {
    "who": "everyday users",
    "what": "everyday use",
    "when": "daily",
    "where": "at home",
    "why": "to replace an old one",
}

# fmt: on

_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
_NON_LATIN_RE = re.compile(r"[\u0400-\u04ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_SENTENCE_RE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")
_WORD_RE = re.compile(r"\w+", re.UNICODE)

Label = tuple[str, str]  # (kind, name): ("dim", "Battery life"), ("who", "parents"), ...

NEUTRAL_BAND = 0.05  # |score| below this is "neutral"
RATING_PRIOR = 0.3  # the lean of a review without a single opinion word, from its stars
MAX_DIMENSIONS_PER_PASSAGE = 3
# Keywords that describe rather than name ("fast shipping" is about delivery, not about
# performance): they give a passage its dimension only when no naming keyword does.
DESCRIBING_KEYWORDS = frozenset(
    {
        "fast",
        "slow",
        "schnell",
        "langsam",
        "rápido",
        "rapido",
        "lento",
        "rapide",
        "lent",
        "cheap",
        "billig",
        "günstig",
        "barato",
        "安い",
        "便宜",
        "expensive",
        "teuer",
        "caro",
        "cher",
        "easy",
        "einfach",
        "fácil",
        "facil",
        "facile",
        "簡単",
        "简单",
        "difficult",
        "loud",
        "laut",
        "soft",
        "weich",
        "suave",
        "heavy",
        "schwer",
        "pesado",
        "lourd",
        "look",
        "looks",
        "beautiful",
        "pretty",
        "bonito",
        "joli",
        "tight",
        "loose",
        "serré",
        "sturdy",
        "flimsy",
        "durable",
        "solide",
        "duradero",
        "haltbar",
        "comfortable",
        "bequem",
        "cómodo",
        "comodo",
        "confortable",
        "快適",
        "舒适",
        "舒服",
        "ugly",
    }
)
OVERALL = "overall impression"  # the aspect of an opinion on no dimension

# fmt: off
# Endings a keyword may take and still be the same word ("charge" -> "charged", "batería"
# -> "baterías", "Akku" -> "Akkus"): keywords match whole words, never a word's prefix.
INFLECTIONS = frozenset(
    {"s", "es", "e", "en", "er", "ers", "n", "ed", "d", "ing", "y", "ies", "a", "as", "o",
     "os", "x", "t", "te", "ten", "st", "ment", "ments"}
)
# German compounds hold their keywords ("Akkulaufzeit", "Klangqualität"); the keyword and
# the rest must both be this long, so short function words never match inside a word.
COMPOUND_MIN = 4
# Words that are a keyword of some language but, in the review's language, a function
# word or another word altogether: Spanish "son" is "they are", English "son" a child,
# German "fast" is "almost" and "lag" is "lay", French "ton" is "your".
NOT_AN_ASPECT: dict[str, frozenset[str]] = {
    "en": frozenset({"son", "sons", "ton", "tons", "lent", "notice", "noticed", "notices",
                     "cher", "sav"}),
    "es": frozenset({"son", "ton", "sav"}),
    "fr": frozenset({"ton", "tons", "sale", "sales"}),
    "de": frozenset({"fast", "lag", "son", "sav"}),
}
# French "son" is the sound after a determiner ("le son", "du son") and "his/her" before
# a noun ("son prix").
SOUND_DETERMINERS = frozenset({"le", "un", "du", "au", "ce", "bon", "quel", "mauvais",
                               "meilleur", "les", "des", "ces", "leur"})
# CJK words that contain a keyword but are not about it ("出色" outstanding holds "色"
# colour, "色々" various, "音楽" music holds "音" sound).
NOT_AN_ASPECT_CJK = ("出色", "特色", "角色", "景色", "色々", "色んな", "色んな", "音楽", "音乐",
                     "発音", "本音", "箱根")
# fmt: on


def _fold(word: str) -> str:
    """A word as keywords are matched: casefolded, without accents (keywords are
    multilingual and customers often leave accents off)."""
    word = word.casefold()
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


@dataclass(frozen=True)
class Hit:
    """A keyword found in a text: its label, the keyword, and where it starts."""

    label: Label
    keyword: str
    pos: int


class KeywordIndex:
    """Find many multilingual keywords in a text in one pass over its words.

    Latin keywords match whole words, with an inflectional ending ("deliver" matches
    "delivered", not "deliverance"); multi-word keywords match word by word, the last
    word with an ending; in German a keyword may open a compound ("Akkulaufzeit"). CJK
    keywords match anywhere (substring), except inside the compounds of
    `NOT_AN_ASPECT_CJK`. Case- and accent-insensitive. Dimension keywords that are a
    function word in the review's language (`NOT_AN_ASPECT`) are skipped.
    """

    def __init__(self, entries: Iterable[tuple[Label, Iterable[str]]]) -> None:
        self._first: dict[str, list[tuple[tuple[str, ...], Label, str]]] = {}
        self._cjk: list[tuple[str, Label]] = []
        for label, words in entries:
            for kw in words:
                kw = kw.casefold()
                if _CJK_RE.search(kw):
                    self._cjk.append((kw, label))
                    continue
                toks = tuple(_fold(t) for t in _WORD_RE.findall(kw))
                if toks:
                    self._first.setdefault(toks[0], []).append((toks, label, kw))

    def find(self, text: str, language: str | None = None) -> list[Hit]:
        """Every keyword occurrence, in text order (one hit per label and position)."""
        lang = language or detect_language(text)
        words = [(m.start(), m.group(), _fold(m.group())) for m in _WORD_RE.finditer(text)]
        hits: list[Hit] = []
        for i, (pos, _, w) in enumerate(words):
            seen: set[Label] = set()
            for stem, exact in _stems(w, lang):
                for toks, label, kw in self._first.get(stem, ()):
                    if label in seen or not _rest_matches(toks, exact, words, i):
                        continue
                    if label[0] == "dim" and not _is_aspect(lang, words, i):
                        continue
                    seen.add(label)
                    hits.append(Hit(label, kw, pos))
        if self._cjk and _CJK_RE.search(text):
            folded = text.casefold() if len(text.casefold()) == len(text) else text
            blocked = _blocked_cjk(folded)
            for kw, label in self._cjk:
                at = folded.find(kw)
                while at >= 0:
                    if label[0] != "dim" or at not in blocked:
                        hits.append(Hit(label, kw, at))
                    at = folded.find(kw, at + len(kw))
        hits.sort(key=lambda h: (h.pos, -len(h.keyword)))  # "音质" before "音"
        return hits


def _stems(word: str, language: str) -> list[tuple[str, bool]]:
    """The keys a word may be found under: itself (exact), the word less an inflectional
    ending, and in German the head of a compound; (key, whether it is the whole word)."""
    out = [(word, True)]
    for k in range(1, 6):
        if len(word) - k >= 2 and word[-k:] in INFLECTIONS:
            out.append((word[:-k], False))
    if language == "de":
        out.extend((word[:k], False) for k in range(COMPOUND_MIN, len(word) - COMPOUND_MIN + 1))
    return out


def _is_aspect(language: str, words: list[tuple[int, str, str]], i: int) -> bool:
    """Whether the i-th word may name an aspect in this language (see NOT_AN_ASPECT)."""
    w = words[i][2]
    if w in NOT_AN_ASPECT.get(language, ()):
        return False
    if language == "fr" and w in ("son", "sons"):
        return i > 0 and words[i - 1][2] in SOUND_DETERMINERS
    if language == "de" and w == "laut" and i + 1 < len(words):
        return not words[i + 1][1][:1].isupper()  # "laut Hersteller": according to
    return True


def _blocked_cjk(text: str) -> set[int]:
    """Positions inside the compounds of NOT_AN_ASPECT_CJK."""
    out: set[int] = set()
    for word in NOT_AN_ASPECT_CJK:
        at = text.find(word)
        while at >= 0:
            out.update(range(at, at + len(word)))
            at = text.find(word, at + 1)
    return out


def _rest_matches(
    toks: tuple[str, ...], first_exact: bool, words: list[tuple[int, str, str]], i: int
) -> bool:
    if len(toks) == 1:
        return True
    if not first_exact or i + len(toks) > len(words):
        return False
    for j, t in enumerate(toks[1:], start=1):
        w = words[i + j][2]
        if not (w == t or (j == len(toks) - 1 and w.startswith(t) and w[len(t) :] in INFLECTIONS)):
            return False
    return True


# fmt: off
_STOP = {
    "the", "and", "how", "with", "that", "this", "from", "what", "whether", "does", "into",
    "about", "their", "they", "for", "its", "der", "die", "das", "und", "les", "des", "los",
    "las", "del", "day", "well", "main", "made", "much", "long", "keeps", "without",
}
# fmt: on


def lexicon_entry(name: str) -> LexDimension | None:
    """The lexicon dimension a (learned) dimension name refers to, if any."""
    key = name.strip().casefold()
    for d in LEXICON:
        if key == d.name.casefold() or key in d.aliases:
            return d
    for d in LEXICON:
        if any(a in key for a in d.aliases if len(a) > 3):
            return d
    return None


def dimension_keywords(name: str, description: str = "") -> tuple[str, ...]:
    """Keywords of a dimension: its lexicon entry's, else the significant words of its
    name and description."""
    entry = lexicon_entry(name)
    if entry is not None:
        return entry.keywords
    return tuple(
        w.casefold()
        for w in _WORD_RE.findall(f"{name} {description}")
        if len(w) >= 4 and w.casefold() not in _STOP
    )


def _base_entries() -> list[tuple[Label, Iterable[str]]]:
    entries: list[tuple[Label, Iterable[str]]] = []
    for w, labels in FIVE_W.items():
        entries.extend(((w, label), words) for label, words in labels)
    return entries


@lru_cache(maxsize=512)
def index_for(dimensions: tuple[tuple[str, str], ...]) -> KeywordIndex:
    """The index of 5W and the given (name, description) dimensions."""
    entries = _base_entries()
    entries.extend((("dim", n), dimension_keywords(n, d)) for n, d in dimensions)
    return KeywordIndex(entries)


@cache
def lexicon_index() -> KeywordIndex:
    """The index of every lexicon dimension and the 5W labels (used by learn)."""
    entries = _base_entries()
    entries.extend((("dim", d.name), d.keywords) for d in LEXICON)
    return KeywordIndex(entries)


# --- helpers -----------------------------------------------------------------------


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text`, each trimmed of surrounding whitespace, so
    `text[a:b]` is always an exact substring."""
    spans = []
    for m in _SENTENCE_RE.finditer(text):
        a, b = m.span()
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b and any(ch.isalnum() for ch in text[a:b]):
            spans.append((a, b))
    return spans


# fmt: off
_STOPWORDS = {
    "en": frozenset({"the", "and", "is", "it", "this", "very", "not", "but", "with", "was", "i"}),
    "de": frozenset({"der", "die", "das", "und", "ist", "nicht", "sehr", "ich", "mit", "es",
                     "aber"}),
    "es": frozenset({"el", "la", "los", "y", "es", "muy", "no", "pero", "con", "que", "lo"}),
    "fr": frozenset({"le", "la", "les", "et", "est", "très", "pas", "mais", "avec", "je", "ce"}),
}
# fmt: on


def detect_language(text: str) -> str:
    """A tiny language guesser: scripts first (kana before CJK), then stop words of
    en/de/es/fr; "en" when nothing is recognised."""
    if _NON_LATIN_RE.search(text):
        if re.search(r"[\u3040-\u30ff]", text):
            return "ja"
        if re.search(r"[\u3400-\u9fff]", text):
            return "zh"
        if re.search(r"[\uac00-\ud7af]", text):
            return "ko"
        return "ru"
    words = set(_WORD_RE.findall(text.casefold()))
    best, best_score = "en", 0
    for lang, stop in _STOPWORDS.items():
        score = len(words & stop)
        if score > best_score:
            best, best_score = lang, score
    return best


def language_of(given: Any, text: str) -> str:
    """The language a review is read in: the given ISO code if the fake has a lexicon for
    it ("de", "de-AT"), else the detected one."""
    if isinstance(given, str):
        code = given.strip().casefold().replace("_", "-").split("-")[0]
        if code in SPECS:
            return code
    return detect_language(text)


def sentiment_label(score: float) -> str:
    """ "positive", "negative" or "neutral" for a score in [-1, 1]."""
    if score >= NEUTRAL_BAND:
        return "positive"
    if score <= -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def review_prior(rating: int | None) -> float:
    """The weak lean a star rating gives the review as a whole (never one sentence)."""
    if rating is None or rating == 3:
        return 0.0
    return RATING_PRIOR if rating > 3 else -RATING_PRIOR


# --- stages ------------------------------------------------------------------------


def answer_learn(inp: dict[str, Any]) -> dict[str, Any]:
    """5..15 dimensions matched in the sample, and a 5W model."""
    texts = [str(r.get("text") or "") for r in inp.get("sample") or [] if isinstance(r, dict)]
    counts: Counter[str] = Counter()
    five: dict[str, list[str]] = {w: [] for w in FIVE_W}
    index = lexicon_index()
    for t in texts:
        hits = index.find(t)
        counts.update({h.label[1] for h in hits if h.label[0] == "dim"})
        for h in hits:
            kind, label = h.label
            if kind in five and label not in five[kind]:
                five[kind].append(label)
    chosen = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:15]
    for name in DEFAULT_DIMENSIONS:
        if len(chosen) >= 5:
            break
        if name not in chosen:
            chosen.append(name)
    by_name = {d.name: d for d in LEXICON}
    dims = [
        {
            "name": n,
            "description": by_name[n].description,
            "keywords": list(by_name[n].keywords[:8]),
        }
        for n in chosen
    ]
    for w in five:
        five[w] = five[w][:6] or [FIVE_W_DEFAULTS[w]]
    return {"dimensions": dims, "five_w": five}


def answer_translate(inp: dict[str, Any]) -> dict[str, Any]:
    """A word-for-word gloss of every item into the target language, in order (see
    `voc.fake_llm.gloss`); the source language is detected when not given."""
    tgt = str(inp.get("target_language") or "en")
    items = []
    for it in inp.get("items") or []:
        if not isinstance(it, dict):
            continue
        text = str(it.get("text") or "")
        src = it.get("source_language") or detect_language(text)
        items.append(
            {"id": str(it.get("id")), "translation": gloss(text, src, tgt), "source_language": src}
        )
    return {"items": items}


@dataclass(frozen=True)
class Passage:
    """A quotable run of clauses of one sentence, with the dimensions it speaks of."""

    start: int
    end: int
    dims: tuple[Hit, ...]  # the first hit of each dimension, in learned order
    hits: tuple[Hit, ...]  # every hit inside (5W too)


def answer_insight(inp: dict[str, Any]) -> dict[str, Any]:
    """Insights read from the original text (see the module docstring): one per dimension
    a passage speaks of, or one "other" insight for an opinion on no dimension; every
    quote an exact substring of `text`, with its gloss in the target language when the
    review was translated."""
    text = str(inp.get("text") or "")
    spans = split_sentences(text)
    if not spans:
        return {"insights": []}
    lang = language_of(inp.get("language"), text)
    target = inp.get("target_language") if isinstance(inp.get("target_language"), str) else None
    translation = inp.get("translation") if isinstance(inp.get("translation"), str) else None
    rating = inp.get("rating")
    rating = rating if isinstance(rating, int) and not isinstance(rating, bool) else None
    dims = tuple(
        (str(d.get("name")), str(d.get("description") or ""))
        for d in inp.get("dimensions") or []
        if isinstance(d, dict) and d.get("name")
    )
    order = {name: i for i, (name, _) in enumerate(dims)}
    hits = index_for(dims).find(text, lang)
    aligned = split_sentences(translation) if translation else []
    insights = []
    for k, (a, b) in enumerate(spans):
        marks = opinion_marks(text[a:b], lang)
        for p in _passages(text, a, b, [h for h in hits if a <= h.pos < b], order, lang):
            raw = passage_score(marks, p.start - a, p.end - a)
            quote = text[p.start : p.end]
            quote_tr = _quote_translation(
                quote,
                (p.start, p.end) == (a, b),
                translation,
                aligned,
                k,
                len(spans),
                lang,
                target,
            )
            base = {"quote": quote, "quote_translation": quote_tr, **_five_w(p.hits)}
            if p.dims:
                for h in p.dims[:MAX_DIMENSIONS_PER_PASSAGE]:
                    aspect = gloss_term(h.keyword, lang, target)
                    insights.append(_insight(h.label[1], aspect, squash(raw), base))
            elif raw:
                aspect = gloss_term(OVERALL, "en", target)
                insights.append(_insight(OTHER, aspect, squash(raw), base))
    if not insights:  # no opinion word at all: the stars are all there is to go by
        a, b = spans[0]
        quote = text[a:b]
        quote_tr = _quote_translation(
            quote, True, translation, aligned, 0, len(spans), lang, target
        )
        base = {"quote": quote, "quote_translation": quote_tr, **_five_w(hits)}
        insights.append(
            _insight(OTHER, gloss_term(OVERALL, "en", target), review_prior(rating), base)
        )
    return {"insights": insights}


def _quote_translation(
    quote: str,
    whole_sentence: bool,
    translation: str | None,
    aligned: list[tuple[int, int]],
    k: int,
    n_sentences: int,
    lang: str,
    target: str | None,
) -> str | None:
    """The quote in the target language: the k-th sentence of the translation when the
    sentences line up (the gloss of a clause if it lies in that sentence, else the whole
    sentence), the quote's own gloss when they do not; None for an untranslated review."""
    if translation is None:
        return None
    glossed = gloss(quote, lang, target or lang)
    if len(aligned) != n_sentences:
        return glossed
    sentence = translation[aligned[k][0] : aligned[k][1]]
    if not whole_sentence and glossed in sentence:
        return glossed
    return sentence


def _passages(
    text: str, a: int, b: int, hits: list[Hit], order: dict[str, int], lang: str
) -> list[Passage]:
    """The passages of the sentence `text[a:b]`: its clauses, a new passage starting at
    each clause that brings a dimension the current passage does not have (clauses
    without one join the passage they stand in), each trimmed to a clean quote."""
    groups: list[tuple[int, int, list[Hit]]] = []
    for ca, cb in clauses(text[a:b], lang):
        ca, cb = a + ca, a + cb
        inside = [h for h in hits if ca <= h.pos < cb]
        clause_dims = {h.label[1] for h in inside if h.label[0] == "dim"}
        if groups:
            have = {h.label[1] for h in groups[-1][2] if h.label[0] == "dim"}
            if not clause_dims or not have or clause_dims <= have:
                groups[-1] = (groups[-1][0], cb, groups[-1][2] + inside)
                continue
        groups.append((ca, cb, inside))
    out = []
    for ga, gb, inside in groups:
        while ga < gb and (text[ga].isspace() or text[ga] in _QUOTE_TRIM):
            ga += 1
        while gb > ga and (text[gb - 1].isspace() or text[gb - 1] in _QUOTE_TRIM):
            gb -= 1
        if not any(ch.isalnum() for ch in text[ga:gb]):
            continue
        naming: dict[str, Hit] = {}
        describing: dict[str, Hit] = {}
        for h in inside:
            if h.label[0] == "dim":
                kind = describing if h.keyword in DESCRIBING_KEYWORDS else naming
                kind.setdefault(h.label[1], h)
        chosen = naming or describing
        ranked = tuple(sorted(chosen.values(), key=lambda h: (order[h.label[1]], h.pos)))
        out.append(Passage(ga, gb, ranked, tuple(inside)))
    return out


_QUOTE_TRIM = frozenset(",;:\u3001\uff0c\uff1b\uff1a-\u2013\u2014")


def _five_w(hits: Iterable[Hit]) -> dict[str, str | None]:
    """The first 5W label of each kind among the hits."""
    out: dict[str, str | None] = dict.fromkeys(("who", "what", "when", "where", "why"))
    for h in hits:
        if h.label[0] in out and out[h.label[0]] is None:
            out[h.label[0]] = h.label[1]
    return out


def _insight(dimension: str, aspect: str, score: float, base: dict[str, Any]) -> dict[str, Any]:
    label = sentiment_label(score)
    return {
        "dimension": dimension,
        "aspect": aspect,
        "sentiment": label,
        "score": score if label != "neutral" else 0.0,
        **base,
    }


def answer_theme(inp: dict[str, Any]) -> dict[str, Any]:
    """One theme per cluster: its most common aspect and the tone of its quotes
    ("Sound - praise", "Battery - complaints"), described from its size and a quote."""
    default_dimension = str(inp.get("dimension") or "General")
    themes = []
    for c in inp.get("clusters") or []:
        if not isinstance(c, dict):
            continue
        dimension = str(c.get("dimension") or default_dimension)
        aspects = [str(a) for a in c.get("aspects") or [] if a]
        quotes = [str(q) for q in c.get("quotes") or [] if q]
        # a lexicon keyword in any language is named by its concept ("価格" -> "price"),
        # as a model writing in the target language would
        top = Counter(_concept_word(a) for a in aspects).most_common(1)
        aspect = top[0][0] if top else "general feedback"
        size = c.get("size") if isinstance(c.get("size"), int) else len(aspects)
        tone = _tone(quotes)
        desc = f"{size} mentions of {aspect} ({dimension}), {tone}."
        if quotes:
            desc += f' For example: "{quotes[0][:100]}"'
        name = f"{aspect[:1].upper()}{aspect[1:]} - {tone}"
        themes.append({"key": str(c.get("key")), "name": name[:120], "description": desc})
    return {"themes": themes}


def _concept_word(aspect: str) -> str:
    """The lexicon concept's own word for an aspect that is one of its keywords."""
    key = aspect.casefold()
    for d in LEXICON:
        if key in d.keywords:
            return d.aliases[0] if d.aliases else d.name.casefold()
    return key


def _tone(quotes: list[str]) -> str:
    """How a theme's quotes sound, from the sentiment lexicon."""
    pos = neg = 0
    for q in quotes:
        hits = lexicon_index().find(q)
        pos += sum(1 for h in hits if h.label[0] == "pos")
        neg += sum(1 for h in hits if h.label[0] == "neg")
    if pos and neg:
        return "mixed views"
    if pos:
        return "praise"
    if neg:
        return "complaints"
    return "mentions"


_NAME_KEYS = ("dimension", "name", "label", "key")
_SCORE_KEYS = (
    "avg_score",
    "score",
    "mean_score",
    "average_score",
    "sentiment_score",
    "avg_sentiment",
    "net_sentiment",
    "mean",
)


def _score_of(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for k in _SCORE_KEYS:
            if isinstance(value.get(k), int | float) and not isinstance(value.get(k), bool):
                return float(value[k])
        pos, neg = value.get("positive"), value.get("negative")
        if isinstance(pos, int | float) and isinstance(neg, int | float):
            total = value.get("count") or value.get("total") or (pos + neg) or 1
            return (float(pos) - float(neg)) / float(total)
    return None


def dimension_scores(aggregates: dict[str, Any]) -> list[tuple[str, float]]:
    """(name, score) per dimension found in the aggregates, lowest score first."""
    for key in ("sentiment_by_dimension", "dimensions", "by_dimension", "dimension_sentiment"):
        value = aggregates.get(key)
        pairs: list[tuple[str, float]] = []
        if isinstance(value, dict):
            for name, v in value.items():
                s = _score_of(v)
                if s is not None:
                    pairs.append((str(name), s))
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, dict):
                    continue
                name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
                s = _score_of(item)
                if name is not None and s is not None:
                    pairs.append((name, s))
        if pairs:
            return sorted(pairs, key=lambda p: (p[1], p[0]))
    return []


def answer_report(inp: dict[str, Any]) -> dict[str, Any]:
    """A summary naming the worst and best dimension, and actions with evidence."""
    product = str(inp.get("product") or "the product")
    agg = inp.get("aggregates") if isinstance(inp.get("aggregates"), dict) else {}
    assert isinstance(agg, dict)
    scores = dimension_scores(agg)
    total = next(
        (
            agg[k]
            for k in ("total_reviews", "reviews", "review_count", "n_reviews")
            if isinstance(agg.get(k), int)
        ),
        None,
    )
    intro = f"Across {total} reviews of {product}" if total else f"For {product}"
    if not scores:
        return {
            "summary": f"{intro}, no per-dimension sentiment was available; the aggregates "
            f"cover: {', '.join(sorted(agg)) or 'nothing'}.",
            "recommended_actions": [
                {
                    "title": "Review the most frequent complaints",
                    "detail": "Read the pain points and their quotes and assign owners.",
                    "priority": "medium",
                    "evidence": "No dimension scores were provided in the aggregates.",
                }
            ],
        }
    worst_name, worst = scores[0]
    best_name, best = scores[-1]
    summary = (
        f"{intro}, customers are most critical of {worst_name} (average sentiment "
        f"{worst:+.2f}) and most positive about {best_name} ({best:+.2f})."
    )
    actions = [
        {
            "title": f"Fix {worst_name}",
            "detail": f"{worst_name} has the lowest sentiment of all dimensions; address "
            "its main complaints first.",
            "priority": "high",
            "evidence": f"{worst_name}: average sentiment {worst:+.2f}",
        }
    ]
    if len(scores) > 2:
        name2, s2 = scores[1]
        actions.append(
            {
                "title": f"Improve {name2}",
                "detail": f"{name2} is the second weakest dimension.",
                "priority": "medium",
                "evidence": f"{name2}: average sentiment {s2:+.2f}",
            }
        )
    actions.append(
        {
            "title": f"Keep {best_name} strong",
            "detail": f"Customers value {best_name}; protect it and use it in marketing.",
            "priority": "low",
            "evidence": f"{best_name}: average sentiment {best:+.2f}",
        }
    )
    return {"summary": summary, "recommended_actions": actions}


ANSWERS = {
    "learn": answer_learn,
    "translate": answer_translate,
    "insight": answer_insight,
    "theme": answer_theme,
    "report": answer_report,
}


def guess_stage(inp: dict[str, Any]) -> str | None:
    """The stage an input belongs to, from its keys (when no X-Voc-Stage was sent)."""
    if "sample" in inp:
        return "learn"
    if "items" in inp:
        return "translate"
    if "review_id" in inp:
        return "insight"
    if "clusters" in inp:
        return "theme"
    if "aggregates" in inp:
        return "report"
    return None


def answer(stage: str, inp: dict[str, Any]) -> dict[str, Any]:
    """The answer of `stage` to `inp` (KeyError for an unknown stage)."""
    return ANSWERS[stage](inp)


# --- fault variants ---------------------------------------------------------------


def drop_one_item(out: dict[str, Any], seed: int) -> dict[str, Any]:
    """Translate fault: the answer misses one item of the batch."""
    items = list(out.get("items") or [])
    if items:
        items.pop(seed % len(items))
    return {**out, "items": items}


def paraphrase_quotes(out: dict[str, Any], text: str) -> dict[str, Any]:
    """Insight fault: quotes that are not substrings of the review text."""
    insights = []
    for ins in out.get("insights") or []:
        quote = "In other words: " + str(ins.get("quote", "")).upper()
        while quote in text:
            quote += "!"
        insights.append({**ins, "quote": quote})
    if not insights:
        insights.append(
            {
                "dimension": "other",
                "aspect": "general",
                "sentiment": "neutral",
                "score": 0.0,
                "quote": "In other words: nothing.",
            }
        )
    return {**out, "insights": insights}
