"""Writes `earbuds_reviews.csv`: the demo's ~300 reviews of one pair of wireless earbuds.

The sentences below were written for this project (nothing is copied from real reviews).
Each review picks a rating, then one to four topics (battery, sound, fit, connectivity,
delivery, price, support) whose sentences agree with the rating, in one of six languages.
Connectivity complaints grow in the second half of the year (a "firmware update"), so the
report has a trend to find. Seeded: running it again writes the same file.

    python -m voc.samples.generate_earbuds
"""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).with_name("earbuds_reviews.csv")
COUNTS = {"en": 120, "de": 40, "fr": 40, "es": 40, "ja": 30, "zh": 30}
TOPICS = ("battery", "sound", "fit", "connectivity", "delivery", "price", "support")

# language -> topic -> (positive sentences, negative sentences)
S: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "en": {
        "battery": (
            [
                "Battery easily gets me through a full workday of calls.",
                "I charge the case maybe once a week and never run out.",
                "Seven hours on a single charge, exactly as advertised.",
                "Ten minutes in the case gives me another hour of music, "
                "which saved me on a long flight.",
            ],
            [
                "The left bud dies about an hour before the right one.",
                "Battery life dropped to barely three hours after two months.",
                "The case drains itself in a drawer even when I don't use it.",
                "With noise cancelling on, I get maybe four hours, "
                "nowhere near the promised eight.",
            ],
        ),
        "sound": (
            [
                "The sound is warm and detailed, with bass that doesn't muddy the vocals.",
                "Noise cancelling makes my train commute feel silent.",
                "Podcasts and audiobooks sound crisp and clear.",
                "For the money the soundstage is surprisingly wide.",
            ],
            [
                "There is a constant hiss whenever nothing is playing.",
                "The bass is boomy and drowns out everything else.",
                "Callers say my voice sounds like I'm in a tunnel.",
                "Noise cancelling barely makes a difference on a bus.",
            ],
        ),
        "fit": (
            [
                "They stay put even when I run with them.",
                "So light that I forget I'm wearing them.",
                "The medium tips sealed perfectly in my ears right out of the box.",
                "I can wear them for hours without any ear fatigue.",
            ],
            [
                "They keep falling out of my ears when I jog.",
                "After an hour my ears start to ache.",
                "None of the three tip sizes gives me a proper seal.",
                "The buds stick out so far that they catch on my hood.",
            ],
        ),
        "connectivity": (
            [
                "Pairing with my phone took five seconds.",
                "Switching between my laptop and phone works seamlessly.",
                "The connection is rock solid even with the phone in my back pocket.",
            ],
            [
                "The right earbud randomly disconnects several times a day.",
                "Since the last firmware update they drop the connection constantly.",
                "Audio stutters whenever I walk through a crowded station.",
                "They refuse to reconnect to my laptop unless I re-pair them from scratch.",
            ],
        ),
        "delivery": (
            [
                "Arrived a day earlier than promised, well packed.",
                "Shipping was fast and the box was in perfect condition.",
                "Ordered on Monday, wearing them on Tuesday.",
            ],
            [
                "Delivery took almost three weeks.",
                "The box arrived crushed and the case was scratched.",
                "The parcel was left in the rain at my door.",
            ],
        ),
        "price": (
            [
                "Great value compared with the big brands.",
                "At this price they are a steal.",
                "I got them on sale and they feel like a premium product.",
            ],
            [
                "Far too expensive for what you get.",
                "Not worth the price, honestly.",
                "Two weeks after I bought them the price dropped by a third.",
            ],
        ),
        "support": (
            [
                "Support replaced my faulty left bud within a week, no questions asked.",
                "The support agent walked me through a reset and it fixed everything.",
                "Customer service answered my email within hours.",
            ],
            [
                "Support never answered my emails.",
                "Customer service kept sending me the same useless reset instructions.",
                "The warranty claim has been pending for a month now.",
            ],
        ),
    },
    "de": {
        "battery": (
            [
                "Der Akku hält locker einen ganzen Arbeitstag durch.",
                "Das Ladecase muss ich nur einmal pro Woche aufladen.",
                "Sieben Stunden Musik mit einer Ladung, genau wie angegeben.",
            ],
            [
                "Der linke Stöpsel ist immer eine Stunde früher leer als der rechte.",
                "Nach zwei Monaten hält der Akku kaum noch drei Stunden.",
                "Das Case entlädt sich in der Schublade von selbst.",
            ],
        ),
        "sound": (
            [
                "Der Klang ist warm und klar, der Bass ist kräftig, aber nicht aufdringlich.",
                "Die Geräuschunterdrückung macht die Bahnfahrt angenehm ruhig.",
                "Für den Preis ist der Sound erstaunlich gut.",
            ],
            [
                "Man hört ständig ein leises Rauschen.",
                "Beim Telefonieren klinge ich laut meinen Kollegen wie in einer Blechdose.",
                "Die Geräuschunterdrückung bringt im Bus fast nichts.",
            ],
        ),
        "fit": (
            [
                "Sie sitzen fest, auch beim Joggen.",
                "Sehr leicht, ich vergesse, dass ich sie trage.",
                "Selbst nach Stunden drückt nichts.",
            ],
            [
                "Beim Laufen fallen sie mir ständig aus den Ohren.",
                "Nach einer Stunde tun mir die Ohren weh.",
                "Keiner der Aufsätze dichtet bei mir richtig ab.",
            ],
        ),
        "connectivity": (
            [
                "Die Kopplung mit dem Handy ging in Sekunden.",
                "Der Wechsel zwischen Laptop und Handy klappt problemlos.",
            ],
            [
                "Der rechte Ohrhörer verliert mehrmals am Tag die Verbindung.",
                "Seit dem letzten Firmware-Update bricht die Verbindung ständig ab.",
                "Am Bahnhof stottert der Ton andauernd.",
            ],
        ),
        "delivery": (
            [
                "Die Lieferung kam einen Tag früher als angekündigt.",
                "Schneller Versand, alles gut verpackt.",
            ],
            [
                "Die Lieferung hat fast drei Wochen gedauert.",
                "Der Karton kam zerdrückt an und das Case war zerkratzt.",
            ],
        ),
        "price": (
            [
                "Preis-Leistung ist hervorragend.",
                "Im Angebot ein echtes Schnäppchen.",
            ],
            [
                "Für das Gebotene viel zu teuer.",
                "Das Geld sind sie leider nicht wert.",
            ],
        ),
        "support": (
            [
                "Der Kundendienst hat meinen defekten Ohrhörer innerhalb einer Woche ersetzt.",
                "Der Support hat schnell und freundlich geantwortet.",
            ],
            [
                "Der Support hat auf keine meiner E-Mails reagiert.",
                "Die Garantieabwicklung zieht sich seit einem Monat hin.",
            ],
        ),
    },
    "fr": {
        "battery": (
            [
                "La batterie tient toute une journée de travail sans problème.",
                "Je recharge le boîtier une fois par semaine seulement.",
                "Sept heures d'écoute avec une seule charge, comme promis.",
            ],
            [
                "L'écouteur gauche se décharge une heure avant le droit.",
                "Après deux mois, la batterie ne tient plus que trois heures.",
                "Le boîtier se vide tout seul dans un tiroir.",
            ],
        ),
        "sound": (
            [
                "Le son est chaleureux et précis, avec des basses bien dosées.",
                "La réduction de bruit rend mes trajets en métro très calmes.",
                "Pour ce prix, la qualité sonore est bluffante.",
            ],
            [
                "Il y a un souffle permanent quand rien ne joue.",
                "Mes interlocuteurs disent que ma voix sonne comme dans un tunnel.",
                "La réduction de bruit ne change presque rien dans le bus.",
            ],
        ),
        "fit": (
            [
                "Ils tiennent bien en place, même pendant la course.",
                "Tellement légers que j'oublie que je les porte.",
                "Je peux les garder des heures sans gêne.",
            ],
            [
                "Ils tombent de mes oreilles dès que je cours.",
                "Au bout d'une heure, j'ai mal aux oreilles.",
                "Aucun des embouts ne s'adapte correctement à mes oreilles.",
            ],
        ),
        "connectivity": (
            [
                "L'appairage avec mon téléphone a pris quelques secondes.",
                "Le passage de l'ordinateur au téléphone se fait sans souci.",
            ],
            [
                "L'écouteur droit se déconnecte plusieurs fois par jour.",
                "Depuis la dernière mise à jour, la connexion coupe sans arrêt.",
                "Le son saute dès que je traverse une gare bondée.",
            ],
        ),
        "delivery": (
            [
                "Livrés un jour plus tôt que prévu, bien emballés.",
                "Expédition rapide, colis en parfait état.",
            ],
            [
                "La livraison a pris presque trois semaines.",
                "Le carton est arrivé écrasé et le boîtier rayé.",
            ],
        ),
        "price": (
            [
                "Excellent rapport qualité-prix.",
                "En promotion, c'est une vraie affaire.",
            ],
            [
                "Beaucoup trop cher pour ce que c'est.",
                "Ils ne valent vraiment pas leur prix.",
            ],
        ),
        "support": (
            [
                "Le service client a remplacé mon écouteur défectueux en une semaine.",
                "Le support m'a répondu rapidement et avec gentillesse.",
            ],
            [
                "Le service client n'a jamais répondu à mes e-mails.",
                "Ma demande de garantie est en attente depuis un mois.",
            ],
        ),
    },
    "es": {
        "battery": (
            [
                "La batería aguanta toda la jornada de trabajo.",
                "Solo cargo el estuche una vez por semana.",
                "Siete horas de música con una sola carga, tal como prometen.",
            ],
            [
                "El auricular izquierdo se descarga una hora antes que el derecho.",
                "A los dos meses la batería apenas dura tres horas.",
                "El estuche se descarga solo en el cajón.",
            ],
        ),
        "sound": (
            [
                "El sonido es cálido y nítido, con graves equilibrados.",
                "La cancelación de ruido hace que el metro parezca silencioso.",
                "Por este precio, el sonido es sorprendente.",
            ],
            [
                "Se oye un zumbido constante cuando no suena nada.",
                "En las llamadas dicen que sueno como dentro de una lata.",
                "La cancelación de ruido apenas se nota en el autobús.",
            ],
        ),
        "fit": (
            [
                "No se mueven ni cuando salgo a correr.",
                "Son tan ligeros que me olvido de que los llevo puestos.",
                "Puedo usarlos horas sin ninguna molestia.",
            ],
            [
                "Se me caen de las orejas cuando corro.",
                "Después de una hora me duelen los oídos.",
                "Ninguna de las almohadillas me ajusta bien.",
            ],
        ),
        "connectivity": (
            [
                "Se emparejaron con mi móvil en segundos.",
                "Cambiar entre el portátil y el móvil funciona perfecto.",
            ],
            [
                "El auricular derecho se desconecta varias veces al día.",
                "Desde la última actualización se corta la conexión constantemente.",
                "El audio se entrecorta en cualquier estación llena de gente.",
            ],
        ),
        "delivery": (
            [
                "Llegaron un día antes de lo previsto y bien embalados.",
                "Envío rápido, todo en perfecto estado.",
            ],
            [
                "El envío tardó casi tres semanas.",
                "La caja llegó aplastada y el estuche rayado.",
            ],
        ),
        "price": (
            [
                "Muy buena relación calidad-precio.",
                "En oferta son una ganga.",
            ],
            [
                "Demasiado caros para lo que ofrecen.",
                "Sinceramente, no valen lo que cuestan.",
            ],
        ),
        "support": (
            [
                "El servicio técnico me cambió el auricular defectuoso en una semana.",
                "Atención al cliente respondió rápido y con amabilidad.",
            ],
            [
                "Atención al cliente nunca contestó mis correos.",
                "La reclamación de garantía lleva un mes sin resolverse.",
            ],
        ),
    },
    "ja": {
        "battery": (
            [
                "バッテリーは一日中仕事で使っても十分持ちます。",
                "ケースの充電は週に一度で足ります。",
                "一回の充電で七時間、表示どおりでした。",
            ],
            [
                "左のイヤホンだけ右より一時間早く電池が切れます。",
                "二か月でバッテリーが三時間ほどしか持たなくなりました。",
                "使っていなくてもケースの電池が勝手に減ります。",
            ],
        ),
        "sound": (
            [
                "音は温かみがあってクリアで、低音もちょうどいいです。",
                "ノイズキャンセリングのおかげで電車の中がとても静かです。",
                "この値段でこの音質は驚きです。",
            ],
            [
                "何も再生していないときにずっとサーッというノイズが聞こえます。",
                "通話では声がこもって聞こえると言われます。",
                "バスの中ではノイズキャンセリングの効果をほとんど感じません。",
            ],
        ),
        "fit": (
            [
                "ランニング中でもまったくずれません。",
                "とても軽くて、着けていることを忘れます。",
            ],
            [
                "走ると耳からすぐに落ちてしまいます。",
                "一時間ほどで耳が痛くなります。",
                "どのイヤーピースもしっかり合いません。",
            ],
        ),
        "connectivity": (
            [
                "スマホとのペアリングは数秒で終わりました。",
                "パソコンとスマホの切り替えがスムーズです。",
            ],
            [
                "右側が一日に何度も接続が切れます。",
                "最新のファームウェア更新以来、接続が頻繁に途切れます。",
                "混雑した駅では音が途切れ途切れになります。",
            ],
        ),
        "delivery": (
            [
                "予定より一日早く届き、梱包も丁寧でした。",
                "発送が早く、箱もきれいな状態でした。",
            ],
            [
                "届くまでに三週間近くかかりました。",
                "箱がつぶれていて、ケースに傷がありました。",
            ],
        ),
        "price": (
            [
                "コスパがとても良いです。",
                "セールで買えたので大満足です。",
            ],
            [
                "この内容にしては高すぎます。",
                "正直、値段に見合っていません。",
            ],
        ),
        "support": (
            [
                "サポートが故障したイヤホンを一週間で交換してくれました。",
                "問い合わせへの返信が早くて丁寧でした。",
            ],
            [
                "サポートにメールしても返事がありません。",
                "保証の申請が一か月たっても進みません。",
            ],
        ),
    },
    "zh": {
        "battery": (
            [
                "电池续航很强，上一整天班都没问题。",
                "充电盒一周只需要充一次电。",
                "充一次电能听七个小时，和宣传的一样。",
            ],
            [
                "左耳总是比右耳早一个小时没电。",
                "用了两个月，电池只能撑三个小时左右。",
                "不用的时候充电盒也会自己掉电。",
            ],
        ),
        "sound": (
            [
                "音质温暖清晰，低音恰到好处。",
                "降噪效果很好，坐地铁时非常安静。",
                "这个价位能有这样的音质，真的很惊喜。",
            ],
            [
                "没有播放的时候一直有沙沙的底噪。",
                "打电话时对方说我的声音很闷。",
                "在公交车上降噪几乎没有效果。",
            ],
        ),
        "fit": (
            [
                "跑步时也戴得很稳，不会掉。",
                "非常轻，戴着几乎感觉不到。",
            ],
            [
                "一跑步就从耳朵里掉出来。",
                "戴一个小时耳朵就开始疼。",
                "三种尺寸的耳塞都不太合适。",
            ],
        ),
        "connectivity": (
            [
                "和手机配对只用了几秒钟。",
                "在电脑和手机之间切换很顺畅。",
            ],
            [
                "右耳一天会断开好几次。",
                "自从上次固件更新以后，经常断连。",
                "在人多的车站声音会断断续续。",
            ],
        ),
        "delivery": (
            [
                "比预计提前一天到货，包装很好。",
                "发货很快，盒子完好无损。",
            ],
            [
                "快递花了将近三个星期才到。",
                "盒子被压坏了，充电盒也有划痕。",
            ],
        ),
        "price": (
            [
                "性价比非常高。",
                "打折的时候买的，很划算。",
            ],
            [
                "这个价格太贵了。",
                "说实话，不值这个价。",
            ],
        ),
        "support": (
            [
                "客服一周内就给我换了有问题的耳机。",
                "客服回复很快，态度也很好。",
            ],
            [
                "给客服发邮件一直没有回复。",
                "保修申请拖了一个月还没处理。",
            ],
        ),
    },
}

OPENERS = {
    "en": [
        "Bought these for my daily commute.",
        "I've had these for about three months now.",
        "Second pair of wireless earbuds I've owned.",
        "Got them as a birthday present.",
        "I mainly use them at the gym and for video calls.",
        "Replaced my old wired headphones with these.",
    ],
    "de": [
        "Ich nutze sie täglich auf dem Weg zur Arbeit.",
        "Ich habe sie jetzt seit etwa drei Monaten.",
        "Als Geschenk bekommen.",
    ],
    "fr": [
        "Je les utilise tous les jours pour aller au travail.",
        "Je les ai depuis environ trois mois.",
        "Reçus en cadeau pour mon anniversaire.",
    ],
    "es": [
        "Los uso todos los días para ir al trabajo.",
        "Los tengo desde hace unos tres meses.",
        "Me los regalaron por mi cumpleaños.",
    ],
    "ja": ["通勤用に購入しました。", "使い始めて三か月ほどです。", "プレゼントでもらいました。"],
    "zh": ["买来通勤用的。", "已经用了大概三个月。", "朋友送的生日礼物。"],
}
CLOSERS = {
    "pos": {
        "en": ["Would buy again.", "Highly recommended.", "Very happy overall."],
        "de": ["Klare Kaufempfehlung.", "Insgesamt sehr zufrieden."],
        "fr": ["Je recommande.", "Très satisfait dans l'ensemble."],
        "es": ["Los recomiendo.", "Muy contento en general."],
        "ja": ["おすすめです。", "全体的に満足しています。"],
        "zh": ["推荐购买。", "总体很满意。"],
    },
    "neg": {
        "en": ["Returning them.", "Can't recommend these.", "Disappointed."],
        "de": ["Ich schicke sie zurück.", "Leider keine Empfehlung."],
        "fr": ["Je les renvoie.", "Je ne les recommande pas."],
        "es": ["Los voy a devolver.", "No los recomiendo."],
        "ja": ["返品するつもりです。", "おすすめできません。"],
        "zh": ["准备退货了。", "不推荐。"],
    },
    "mixed": {
        "en": ["Good, not great.", "Okay for the price."],
        "de": ["Ganz okay.", "Mittelmaß."],
        "fr": ["Correct, sans plus.", "Bien, mais peut mieux faire."],
        "es": ["Están bien, sin más.", "Aceptables."],
        "ja": ["まあまあです。", "値段なりです。"],
        "zh": ["一般般吧。", "还行。"],
    },
}
SEP = {"ja": "", "zh": ""}  # no spaces between sentences in Japanese and Chinese


def _rating(rng: random.Random) -> int:
    return rng.choices([5, 4, 3, 2, 1], weights=[34, 24, 12, 12, 18])[0]


def _polarity(rating: int, topic: str, late: bool, rng: random.Random) -> bool:
    """True for a positive sentence on `topic` given the rating (late: after the update)."""
    p_pos = {5: 0.95, 4: 0.8, 3: 0.5, 2: 0.2, 1: 0.05}[rating]
    if topic == "connectivity" and late:
        p_pos *= 0.4
    return rng.random() < p_pos


def _review(lang: str, rating: int, day: date, long: bool, rng: random.Random) -> str:
    late = day >= date(2024, 7, 1)
    weights = [3, 3, 2, 4 if late else 2, 1, 2, 1]
    n_topics = rng.randint(3, 4) if long else rng.randint(1, 2)
    topics: list[str] = []
    while len(topics) < n_topics:
        t = rng.choices(TOPICS, weights=weights)[0]
        if t not in topics:
            topics.append(t)
    sentences = []
    if long:
        sentences.append(rng.choice(OPENERS[lang]))
    for t in topics:
        pos, neg = S[lang][t]
        sentences.append(rng.choice(pos if _polarity(rating, t, late, rng) else neg))
    if long or rng.random() < 0.3:
        mood = "pos" if rating >= 4 else "neg" if rating <= 2 else "mixed"
        sentences.append(rng.choice(CLOSERS[mood][lang]))
    return SEP.get(lang, " ").join(sentences)


def generate(seed: int = 20241) -> list[dict[str, str]]:
    """The sample rows, deterministic for a seed, each text unique."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    start = date(2024, 1, 1)
    for lang, count in COUNTS.items():
        made = 0
        while made < count:
            rating = _rating(rng)
            day = start + timedelta(days=rng.randrange(366))
            text = _review(lang, rating, day, long=rng.random() < 0.35, rng=rng)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            rows.append(
                {
                    "language": lang,
                    "rating": str(rating),
                    "created_at": f"{day.isoformat()}T{rng.randrange(24):02d}:"
                    f"{rng.randrange(60):02d}:00Z",
                    "text": text,
                }
            )
    rng.shuffle(rows)
    for i, row in enumerate(rows, 1):
        row["review_id"] = f"eb-{i:04d}"
    return rows


def main() -> None:
    """Write the CSV next to this module."""
    rows = generate()
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["review_id", "language", "rating", "created_at", "text"]
        )
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
