"""The fake LLM's translator: a word-for-word gloss through a small six-language glossary.

A real model translates; the fake only has to be deterministic, readable and honest about
what it is, so `gloss(text, source, target)` replaces the glossary's words of the source
language by their target-language equivalent and keeps everything else (names, numbers,
words it does not know) as written. Sentences stay where they were - the n-th sentence of
the gloss renders the n-th sentence of the text - and CJK sentence punctuation becomes
Latin punctuation when the target is written with spaces. No prefix, no tag: what comes
back is a (rough) translation, nothing else.

`gloss_term(term, source, target)` names one aspect keyword in the target language
("Akku" -> "battery"), for insight aspects written in the report's language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from voc.fake_llm.sentiment import CJK_LANGUAGES, words_of

LANGUAGES = ("en", "de", "es", "fr", "ja", "zh")

# One concept per line (a line ending in ";" goes on on the next): the six languages in
# LANGUAGES order, separated by ";", each with its forms separated by "|" (the first is
# the one written in a translation).
# fmt: off
GLOSSARY = """
battery|batteries ; Akku|Akkus|Batterie|Batterien ; batería|bateria|baterías ;
    batterie|batteries ; バッテリー|電池 ; 电池
charging|charge|charger|recharge ; Aufladen|laden|Ladegerät|Ladung ; carga|cargar|cargador ;
    charge|recharge|chargeur|recharger ; 充電 ; 充电
battery life|autonomy ; Akkulaufzeit|Laufzeit ; autonomía|duración de la batería ;
    autonomie ; 電池持ち|バッテリー持ち ; 续航
price|prices ; Preis|Preise ; precio|precios ; prix ; 価格|値段 ; 价格|价钱
value ; Wert ; valor ; valeur ; 価値 ; 价值
value for money ; Preis-Leistung|Preis-Leistungs-Verhältnis ;
    calidad precio|relación calidad precio ; rapport qualité prix|qualité prix ;
    コスパ ; 性价比
expensive ; teuer ; caro|cara|caros ; cher|chère|chers ; 高い ; 贵
cheap ; billig|günstig ; barato|barata|baratos ; bon marché ; 安い ; 便宜
money ; Geld ; dinero ; argent ; お金 ; 钱
bargain ; Schnäppchen ; ganga|chollo ; bonne affaire ; お買い得 ; 划算
on sale|offer|deal ; Angebot|im Angebot ; oferta|en oferta ;
    promo|promotion|en promo ; セール|セールで ; 打折|促销
quality ; Qualität ; calidad ; qualité ; 品質 ; 质量|品质
material ; Material ; material|materiales ; matériau|matériaux|matière ; 素材|材質 ; 材料|材质
plastic ; Plastik|Kunststoff ; plástico ; plastique ; プラスチック ; 塑料
build|finish|workmanship ; Verarbeitung ; acabado|acabados ; finition|finitions ; 作り ; 做工
delivery ; Lieferung|Lieferzeit ; entrega ; livraison ; 配達|配送 ; 送货|快递
shipping ; Versand ; envío|envio ; expédition|envoi ; 発送 ; 发货
logistics ; Logistik ; logística ; logistique ; 物流 ; 物流
arrived ; angekommen|geliefert|kam ; llegó|llego|llegaron ;
    arrivé|arrivée|arrivés|reçu ; 届いた|届き|届きました ; 到了|收到
size ; Größe ; talla|tamaño ; taille ; サイズ|大きさ ; 尺码|大小|尺寸
fit ; Passform|Sitz ; ajuste ; tenue ; フィット|フィット感 ; 合身
fits ; passt|sitzt ; queda|ajusta ; va|taille ; 合う ; 合适
tight ; eng ; apretado|apretada ; serré|serrée ; きつい ; 紧
customer service ; Kundenservice|Kundendienst|Service ;
    atención al cliente|servicio|servicio técnico ; service client|SAV|service après-vente ;
    サポート|対応 ; 客服|售后
support ; Support ; soporte ; assistance ; サポート窓口 ; 技术支持
refund ; Rückerstattung|Erstattung ; reembolso ; remboursement ; 返金 ; 退款
return ; Rücksendung|Retoure ; devolución ; retour ; 返品 ; 退货
warranty ; Garantie ; garantía ; garantie ; 保証 ; 保修
seller ; Verkäufer|Händler ; vendedor ; vendeur ; 販売者|出品者 ; 卖家|商家
durability ; Haltbarkeit ; durabilidad ; durabilité|solidité ; 耐久性 ; 耐用性
broken|broke ; kaputt|defekt ; roto|rota|rotos|rompió ; cassé|cassée|cassés ; 壊れ|壊れた ; 坏了|坏
stopped working ; funktioniert nicht mehr ; dejó de funcionar|deja de funcionar ;
    ne fonctionne plus|ne marche plus ; 動かなくなった ; 不工作了
durable ; haltbar|langlebig ; duradero|resistente ; durable|solide ; 丈夫 ; 耐用|结实
easy ; einfach|leicht ; fácil|facil ; facile ; 簡単 ; 简单
easy to use ; einfach zu bedienen|Bedienung ; fácil de usar ; facile à utiliser ; 使いやすい ; 好用
setup ; Einrichtung|Installation ; instalación ; installation ; 設定 ; 安装
instructions ; Anleitung|Bedienungsanleitung ; instrucciones ;
    notice|mode d'emploi ; 説明書 ; 说明书
difficult ; schwierig|kompliziert ; difícil|complicado ; difficile|compliqué ; 難しい ; 难|复杂
sound ; Klang|Ton|Sound ; sonido ; son ; 音|音質 ; 声音|音质
audio ; Audio ; audio ; audio ; オーディオ ; 音频
bass ; Bass ; graves|bajos ; basses ; 低音 ; 低音
noise ; Rauschen|Geräusch|Lärm ; ruido ; bruit ; 雑音|ノイズ ; 噪音
volume ; Lautstärke ; volumen ; volume ; 音量 ; 音量
loud ; laut ; fuerte|alto ; fort ; うるさい ; 响
speaker ; Lautsprecher ; altavoz ; haut-parleur|enceinte ; スピーカー ; 扬声器|音箱
design ; Design|Aussehen|Optik ; diseño ; design ; デザイン ; 设计|外观
color ; Farbe ; color ; couleur ; 色 ; 颜色
look|looks ; Aussehen ; aspecto ; look|aspect ; 見た目 ; 外观
beautiful|pretty ; schön|wunderschön|hübsch ; bonito|bonita|precioso|preciosa ;
    beau|belle|joli|jolie ; 綺麗|きれい ; 漂亮|好看
packaging ; Verpackung ; embalaje|empaque ; emballage ; 梱包|包装 ; 包装
box ; Karton|Schachtel ; caja ; boîte|carton ; 箱 ; 盒子|箱子
comfort ; Komfort|Tragekomfort ; comodidad ; confort ; 快適さ|着け心地 ; 舒适度
comfortable ; bequem ; cómodo|cómoda|cómodos ; confortable|confortables ; 快適 ; 舒服|舒适
soft ; weich ; suave ; doux|douce ; 柔らかい ; 柔软|软
heavy ; schwer ; pesado|pesada ; lourd|lourde ; 重い ; 重
weight ; Gewicht ; peso ; poids ; 重さ ; 重量
performance ; Leistung ; rendimiento ; performance|performances ; 性能 ; 性能
speed ; Geschwindigkeit ; velocidad ; vitesse ; 速度|スピード ; 速度
fast|quick ; schnell ; rápido|rápida|rapido ; rapide|rapides ; 早い|速い ; 快|很快
slow ; langsam ; lento|lenta ; lent|lente ; 遅い ; 慢
connection ; Verbindung ; conexión ; connexion ; 接続 ; 连接
signal ; Signal ; señal ; signal ; 信号|電波 ; 信号
good ; gut|gute|guter|gutes|guten ; bueno|buena|buen|buenos|buenas ;
    bon|bonne|bons|bonnes ; 良い|いい|良かった ; 好|不错
well ; gut ; bien ; bien ; よく ; 好好
very ; sehr ; muy ; très ; とても ; 很|非常
bad ; schlecht|schlechte|schlechter ; malo|mala|malos ; mauvais|mauvaise ; 悪い ; 差|不好
great ; toll|super|klasse ; genial|estupendo|estupenda ; génial|géniale|super ; 最高 ; 棒|很棒
excellent ; ausgezeichnet|hervorragend ; excelente ; excellent|excellente ; 素晴らしい ; 优秀|极好
perfect ; perfekt ; perfecto|perfecta ; parfait|parfaite ; 完璧 ; 完美
disappointed ; enttäuscht ; decepcionado|decepcionada ; déçu|déçue ; がっかり ; 失望
unfortunately ; leider ; lamentablemente|desgraciadamente ; malheureusement ; 残念ながら ; 可惜
satisfied|happy ; zufrieden ; satisfecho|satisfecha|contento|contenta ;
    satisfait|satisfaite|content|contente ; 満足 ; 满意
recommend ; empfehle|empfehlen ; recomiendo|recomendable ; recommande ; おすすめ ; 推荐
love ; liebe ; encanta ; adore ; 大好き ; 喜欢
problem ; Problem ; problema ; problème ; 問題 ; 问题
product ; Produkt|Artikel ; producto|artículo ; produit|article ; 商品|製品 ; 产品|商品
book ; Buch ; libro ; livre ; 本 ; 书
but ; aber ; pero ; mais ; しかし|でも|けど ; 但是|不过
and ; und ; y ; et ; と ; 和
after ; nach ; después de|tras ; après ; 後 ; 后
day ; Tag ; día ; jour ; 日 ; 天
days ; Tage|Tagen ; días ; jours ; 日 ; 天
week ; Woche ; semana ; semaine ; 週間 ; 周
weeks ; Wochen ; semanas ; semaines ; 週間 ; 周
month|months ; Monat|Monate|Monaten ; mes|meses ; mois ; ヶ月|か月 ; 个月
hours ; Stunden ; horas ; heures ; 時間 ; 小时
music ; Musik ; música ; musique ; 音楽 ; 音乐
earbuds|headphones ; Kopfhörer ; auriculares ; écouteurs ; イヤホン ; 耳机
ears ; Ohren ; oídos|orejas ; oreilles ; 耳 ; 耳朵
case ; Hülle|Etui ; funda|estuche ; étui|boîtier ; ケース ; 充电盒
skips ; springt ; salta ; saute ; 飛ぶ ; 跳
station ; Bahnhof ; estación ; gare ; 駅 ; 车站
crowded ; überfüllt|voll ; lleno|abarrotado ; bondée|bondé ; 混雑した ; 拥挤
train ; Zug ; tren ; train ; 電車 ; 火车|地铁
the ; der|die|das|den|dem ; el|la|los|las ; le|la|les|l' ; - ; -
a|an ; ein|eine|einen|einem ; un|una ; un|une ; - ; -
is ; ist ; es|está ; est ; - ; -
was ; war ; era|fue|estaba ; était ; - ; -
with ; mit ; con ; avec ; - ; -
for ; für ; para|por ; pour ; - ; -
it ; es ; lo ; il|elle|ça ; - ; -
this ; dies|diese|dieser|dieses ; este|esta|esto ; ce|cette|cet ; - ; -
I ; ich ; yo ; je|j' ; - ; -
as soon as ; sobald ; en cuanto ; dès que ; - ; -
overall impression ; Gesamteindruck ; impresión general ;
    impression générale ; 全体の印象 ; 总体印象
"""
# fmt: on

_CJK_TO_LATIN = {
    "\u3002": ". ",
    "\uff0e": ". ",
    "\u3001": ", ",
    "\uff0c": ", ",
    "\uff01": "! ",
    "\uff1f": "? ",
    "\uff1a": ": ",
    "\uff1b": "; ",
    "\uff08": " (",
    "\uff09": ") ",
}
_SPACES_RE = re.compile(r"[ \t]{2,}")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"[ \t]+([.,!?:;)])")


FormKey = tuple[str, ...] | str  # folded words, or a CJK string


def form_key(form: str, language: str) -> FormKey:
    """How a form is looked up: its folded words, or (CJK) the casefolded string."""
    if language in CJK_LANGUAGES:
        return form.casefold()
    return tuple(w for _, _, w in words_of(form, language))


@dataclass(frozen=True)
class Glossary:
    """Forms of every concept, per language: form -> concept, concept -> written form."""

    rows: tuple[tuple[tuple[str, ...], ...], ...]  # concept -> language -> forms
    tables: dict[str, dict[FormKey, int]]  # language -> form key -> concept

    def forms(self, language: str) -> dict[FormKey, int]:
        """Form key -> concept index, for one source language."""
        return self.tables[language]

    def written(self, concept: int, language: str) -> str:
        """The form a translation into `language` writes for a concept ("" for none)."""
        forms = self.rows[concept][LANGUAGES.index(language)]
        return forms[0] if forms else ""


@cache
def glossary() -> Glossary:
    """The parsed GLOSSARY."""
    rows = []
    for line in re.sub(r";\s*\n\s*", "; ", GLOSSARY.strip()).splitlines():
        cells = [c.strip() for c in line.split(";")]
        if len(cells) != len(LANGUAGES):
            raise ValueError(f"glossary line needs {len(LANGUAGES)} languages: {line!r}")
        # "-": the language has no word for it (articles in Japanese and Chinese)
        rows.append(
            tuple(() if c == "-" else tuple(f.strip() for f in c.split("|")) for c in cells)
        )
    tables: dict[str, dict[FormKey, int]] = {}
    for col, language in enumerate(LANGUAGES):
        table = tables[language] = {}
        for concept, row in enumerate(rows):
            for form in row[col]:
                table.setdefault(form_key(form, language), concept)
    return Glossary(tuple(rows), tables)


def _spans(text: str, language: str) -> list[tuple[int, int, int]]:
    """(start, end, concept) of every glossary form of `language` in `text`, longest first."""
    table = glossary().forms(language)
    out: list[tuple[int, int, int]] = []
    if language in CJK_LANGUAGES:
        longest = max((len(k) for k in table), default=1)
        p = 0
        while p < len(text):
            for n in range(min(longest, len(text) - p), 0, -1):
                concept = table.get(text[p : p + n])
                if concept is not None:
                    out.append((p, p + n, concept))
                    p += n
                    break
            else:
                p += 1
        return out
    words = words_of(text, language)
    i = 0
    while i < len(words):
        for n in range(min(4, len(words) - i), 0, -1):
            concept = table.get(tuple(w for _, _, w in words[i : i + n]))
            if concept is not None:
                out.append((words[i][0], words[i + n - 1][1], concept))
                i += n
                break
        else:
            i += 1
    return out


def gloss(text: str, source: str, target: str) -> str:
    """`text` glossed word for word from `source` into `target` (see the module docstring);
    unchanged when the languages are the same or either is unknown to the glossary."""
    if source == target or source not in LANGUAGES or target not in LANGUAGES:
        return text
    g = glossary()
    latin_target = target not in CJK_LANGUAGES
    pad = " " if latin_target and source in CJK_LANGUAGES else ""
    parts: list[str] = []
    last = 0
    for a, b, concept in _spans(text, source):
        parts.append(text[last:a])
        word = g.written(concept, target)
        if latin_target and text[a:b][:1].isupper() and _starts_sentence(text, a):
            word = word[:1].upper() + word[1:]
        parts.append(f"{pad}{word}{pad}")
        last = b
    parts.append(text[last:])
    out = "".join(parts)
    if latin_target and source in CJK_LANGUAGES:
        out = "".join(_CJK_TO_LATIN.get(ch, ch) for ch in out)
        out = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", out)
    # Words with no equivalent (articles into Japanese) leave their spaces behind.
    out = _SPACES_RE.sub(" ", out)
    return "\n".join(line.strip() for line in out.split("\n"))


def _starts_sentence(text: str, at: int) -> bool:
    """Whether the word at `at` opens a sentence (German nouns are capitalised anywhere:
    only a sentence's first word keeps its capital in a Latin-script gloss)."""
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?\u3002\uff01\uff1f\n"


def gloss_term(term: str, source: str | None, target: str | None) -> str:
    """An aspect keyword in the target language: its glossary concept's written form, the
    term itself when the glossary does not know it (or the target is unknown)."""
    if target not in LANGUAGES:
        return term
    g = glossary()
    langs = [source] if source in LANGUAGES else []
    langs += [lang for lang in LANGUAGES if lang not in langs]
    for lang in langs:  # keywords are multilingual: look in every column
        concept = g.forms(lang).get(form_key(term, lang))
        if concept is not None:
            return g.written(concept, target)
    return term
