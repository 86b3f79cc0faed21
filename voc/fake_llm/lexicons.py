"""The fake LLM's sentiment lexicons: how customers say what they feel, in six languages.

Hand-written from general knowledge of how reviews are worded in English, German, Spanish,
French, Japanese and Chinese (no table of any review, nothing learned from labels). Each
language has:

- `words`: lines `<weight> word word ...`, the weight signed (+ pleased, - complaint) and
  roughly 0.3 (faint: "ok", "cheap") to 3 (strong: "perfect", "garbage"); `_` stands for a
  space inside a phrase ("stopped_working"), a trailing `*` matches any ending
  ("disappoint*"). Complaint cues that are not opinion words ("skips", "drops_out",
  "returned", "kein Stern", "返品") are words like any other.
- `negators`: words that turn the next opinion within a few words around ("not good",
  "no funciona", "ne ... pas", "不好"), or after it where the language puts them there
  (German "funktioniert nicht", Japanese "良くない"). A negator that turns nothing is a
  complaint of its own ("doesn't fit", "No se queda fijo", "届かない").
- `intensifiers`: lines `<factor> word ...` multiplying the next opinion ("very", "sehr",
  "とても"; factors below 1 soften: "a bit", "un peu").
- `contrast`: "but" words; what follows them weighs more than what precedes them.
- `too`: "too" words: they strengthen a following opinion ("trop bien") and are a
  complaint before anything else ("too small", "demasiado grandes", "太小").
- `fixed`: opinion words a negator never turns (sentence adverbs like "leider").
- `neutral`: words that contain a cue but are none (CJK compounds such as "不过", "少ない"),
  so the longest match takes them and the cue inside is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LexiconSpec:
    """The raw cue lists of one language (see the module docstring for the format)."""

    words: str
    negators: str
    intensifiers: str = ""
    contrast: str = ""
    too: str = ""
    fixed: str = ""
    neutral: str = ""
    negate_after: bool = False  # negators may follow the word they turn (de, ja)


# fmt: off
EN = LexiconSpec(
    words="""
    +3 excellent perfect perfectly amazing amazingly awesome fantastic outstanding superb
    +3 wonderful flawless incredible exceptional phenomenal brilliant terrific fabulous
    +3 love loved loves loving best_ever favorite favourite thrilled delighted impeccable
    +3 five_stars 5_stars highly_recommend would_buy_again will_buy_again must_have
    +3 top_notch game_changer lifesaver life_saver exceeded_my_expectations
    +2.5 recommend recommended recommending lovely gorgeous adorable delicious beautiful
    +2.5 beautifully works_perfectly worked_perfectly works_great worked_great
    +2.5 couldn't_be_happier could_not_be_happier can't_go_wrong cannot_go_wrong
    +2 great happy pleased glad satisfied impressed impressive enjoy enjoyed enjoying enjoys
    +2 well_made high_quality sturdy durable reliable fun tasty yummy stylish elegant
    +2 no_complaints no_problems no_issues buy_again exceeded exceeds happier stunning
    +2 excellently wow worth_every_penny worth_it cozy comfy satisfying best
    +1.5 good nice comfortable pretty cute useful helpful handy convenient bargain
    +1.5 works_well worked_well working_well holds_up effective easy_to_use perfect_fit
    +1.5 as_described as_advertised as_pictured exactly_what likes liked like_it like_them
    +1.5 i_like we_like really_like smooth secure sleek thank thanks funny interesting
    +1.5 intriguing sweet as_expected undamaged well_packed fluffy
    +2 exciting entertaining fascinating well_done can't_get_enough cannot_get_enough
    +1 solid easy fine worth affordable inexpensive cool accurate crisp clear fresh gentle
    +1 efficient promptly quick fast quickly sharp strong warm snug lightweight quiet
    +1 well_worth pleasant decent arrived_on_time on_time protect* nicely properly
    +1.5 fit_well fits_well fits_perfectly nothing_to_complain
    +0.5 works worked ok okay reasonable adequate soft bright compact fits better
    +0.5 value deal
    -3 terrible horrible awful worst garbage trash junk useless waste scam fraud
    -3 disgusting pathetic rubbish crap crappy worthless unusable never_again
    -3 do_not_buy don't_buy dont_buy waste_of_money rip_off ripoff one_star 1_star
    -3 zero_stars 0_stars no_stars fell_apart falls_apart falling_apart stopped_working
    -3 quit_working stops_working stopped_functioning dead_on_arrival piece_of_junk
    -2.5 disappoint* hate hated hates defective nightmare unacceptable counterfeit
    -2.5 avoid broken broke not_worth poorly unhappy refund* returned returning
    -2.5 return_it return_them send_it_back sent_it_back sent_them_back came_apart
    -2.5 never_arrived never_received never_came doa dud lousy shoddy sucks sucked
    -2 poor bad break breaks cheaply flimsy faulty malfunction* damaged misleading fake
    -2 frustrat* regret* upset dangerous ridiculous uncomfortable unreliable rude
    -2 unhelpful fails failed failure fail drops_out dropped_out cuts_out cut_out
    -2 cutting_out keeps_dropping disconnects disconnected disconnecting glitchy
    -2 stinks stink moldy overpriced subpar inferior mediocre yuck gross nasty ugly
    -2 wrong_item wrong_size doesn't_work does_not_work didn't_work did_not_work
    -2 won't_work stopped dies died dead leaks leaked leaking leaky ripped torn tore
    -2 cracked shattered rusted rusty itchy painful expired stale
    -1.5 problem problems issue issues annoying annoyed sadly unfortunately mess
    -1.5 skips skipped skipping glitch glitches laggy buggy missing scratched dirty
    -1.5 tasteless hurts hurt crooked wobbly unstable inaccurate lied lying lies
    -1.5 confusing smells smelled smelly noisy weak lacks lacking lack stuck messy blurry
    -1.5 crackles crackling gone_out tangled run_small run_large ran_small
    -2 drives_me_insane flop
    -1 difficult hard_to impossible complicated fragile mistake wrong late slow
    -1 disconnect thin loose barely meh bland bitter burnt rust leak crack
    -1 scratches stain stains stained fading faded peeling peeled ignored
    -1 smaller_than bigger_than larger_than runs_small runs_large complain* complaint
    -1.5 could_be_better
    -0.8 expensive pricey cheap smell odd weird strange
    -0.5 hard tiny
    """,
    negators="""
    not no never nothing none nobody neither nor cannot without hardly
    isn't wasn't aren't weren't don't doesn't didn't won't wouldn't can't couldn't
    shouldn't haven't hasn't hadn't ain't isnt wasnt arent dont doesnt didnt wont
    wouldnt cant couldnt havent hasnt
    """,
    intensifiers="""
    1.4 very really so super totally absolutely completely truly extremely incredibly
    1.4 highly exceptionally seriously definitely utterly thoroughly
    1.2 quite especially particularly most much extra pretty_much
    0.7 fairly somewhat slightly a_bit a_little kind_of sort_of little mostly almost
    """,
    contrast="but however except",
    too="1.2 too",
    fixed="unfortunately sadly",
)

DE = LexiconSpec(
    words="""
    +3 ausgezeichnet hervorragend perfekt perfekte perfekten perfekter perfektes exzellent
    +3 fantastisch genial großartig spitze traumhaft wunderbar wunderschön
    +3 begeistert begeisternd einwandfrei tadellos bestens kaufempfehlung weiterempfehlen
    +3 empfehlenswert fünf_sterne 5_sterne volle_punktzahl uneingeschränkt_empfehlen
    +3 hält_was_es_verspricht jederzeit_wieder top_produkt absolut_top
    +2.5 empfehle empfehlen empfehlung toll tolle tollen toller tolles klasse super
    +2.5 liebe lieben liebt überzeugt überzeugend top lecker gerne_wieder immer_wieder
    +2 gut gute guter gutes guten zufrieden glücklich froh freude gefällt gefallen
    +2 prima problemlos hochwertig hochwertige hochwertigen hochwertiger ideal optimal
    +2 stabil stabile robust robuste zuverlässig lohnt schön schöne schönen
    +2 schöner schönes besten beste bester bestes praktisch praktische bequem bequeme
    +2 angenehm angenehme hübsch süß niedlich edel stylisch danke dankeschön
    +1.5 nützlich hilfreich wirksam solide besser gelungen wieder_kaufen passt_perfekt
    +2 schnäppchen
    +1.5 schick sinnvoll sinnvolle schmackhaft spannend spannende nett wie_beschrieben
    +2 genau_wie_beschrieben
    +1 unbeschädigt aromatisch strahlt gerechtfertigt
    +1.5 preiswert günstig günstige sauber ordentlich schnelle schnell zügig pünktlich
    +1 hilft geholfen funktioniert funktionierte funktionieren passend gerne wert weich
    +0.5 klar leicht brauchbar okay ok in_ordnung
    +0.5 passt preis-leistung preis-leistungs-verhältnis
    -3 schrecklich furchtbar katastrophal katastrophe grauenhaft grauenvoll miserabel
    -3 müll schrott unbrauchbar betrug abzocke finger_weg nie_wieder frechheit
    -3 kein_stern null_sterne ein_stern einen_stern 1_stern rausgeschmissenes_geld
    -3 geldverschwendung unverschämt
    -2.5 enttäuscht enttäuschend enttäuschung mies nutzlos mangelhaft kaputt defekt
    -2.5 defekte defekten zurückgeschickt zurückgesendet zurückgesandt zurückgeben
    -2.5 zurück_geschickt ging_zurück geht_zurück unzufrieden verschwendung gefälscht
    -2.5 fälschung minderwertig minderwertige überteuert ärgerlich wütend
    -2 schlecht schlechte schlechter schlechten schlechtes beschädigt zerbrochen
    -2 abgebrochen gebrochen gerissen retoure reklamation reklamiert fehlerhaft
    -2 irreführend ausgefallen versagt undicht unbequem stinkt gestank verrostet
    -2 plagiat misslungen ärger ärgern geärgert schlimm flop wackelkontakt nur_bedingt
    -2.5 betrieb_eingestellt
    -1.5 loch löcher abgesplittert unglaubwürdig mangel störend unmöglich anstrengend
    -1.5 unzureichend
    -1 abzug rutscht hartnäckig zurück
    -1.5 billig billige billigen
    -1.5 leider schade problem probleme problematisch falsch falsche falschen fehlt
    -1.5 fehlen fehlten fehlende instabil wackelig wacklig unangenehm umständlich nervig
    -1.5 nervt zerkratzt verschmutzt dreckig schmutzig ausgelaufen mittelmäßig
    -1.5 verspätet verspätung geht_nicht hält_nicht schwach schwache
    -1 fehler schwierig kompliziert langsam spät kratzer rost tropft ungenau naja
    -1 na_ja geht_so erstattung durchschnittlich dünn vorsicht
    -1 zu_klein zu_groß zu_kurz zu_lang zu_eng zu_weit zu_teuer zu_dünn
    -1 zu_dick zu_schwer zu_laut zu_leise zu_schwach zu_hart zu_weich zu_breit
    -1 zu_schmal zu_hoch zu_niedrig zu_wenig zu_spät zu_langsam zu_heiß zu_kalt
    -1 zu_locker zu_fest zu_steif zu_stark zu_viel zu_klobig zu_billig zu_scharf
    -1 fällt_klein_aus fällt_groß_aus löst_sich lösen_sich abgelöst
    -0.8 teuer riecht
    """,
    negators="nicht nichts nie niemals kein keine keinen keiner keinem keines ohne weder kaum",
    intensifiers="""
    1.4 sehr total echt wirklich absolut extrem äußerst völlig vollkommen
    1.4 komplett richtig überaus
    1.2 besonders ziemlich so voll mega
    0.7 etwas bisschen ein_wenig eher relativ einigermaßen halbwegs
    """,
    contrast="aber jedoch allerdings trotzdem dennoch sondern",
    fixed="leider schade",
    negate_after=True,
)

ES = LexiconSpec(
    words="""
    +3 excelente excelentes perfecto perfecta perfectos perfectas perfectamente genial
    +3 geniales maravilloso maravillosa fantástico fantástica espectacular increíble
    +3 estupendo estupenda encanta encantado encantada encantó magnífico magnífica
    +3 lo_recomiendo 100%_recomendable totalmente_recomendable una_pasada de_lujo
    +3 cinco_estrellas 5_estrellas muy_recomendable
    +2.5 recomiendo recomendable recomendado recomendada un_lujo precioso preciosa
    +2.5 delicioso deliciosa vale_la_pena merece_la_pena cumple_su_función
    +2 bueno buena buenos buenas buen contento contenta contentos contentas satisfecho
    +2 satisfecha satisfechos feliz gusta gustan gustado gustó encantan ideal bonito
    +2 bonita bonitos bonitas lindo linda cómodo cómoda cómodos cómodas sin_problemas
    +2 resistente resistentes robusto duradero agradable práctico práctica prácticos
    +2 funciona_bien funciona_perfectamente cumple cumplidor gracias
    +1.5 útil útiles mejor correcto correcta correctamente buen_precio rico rica
    +1.5 rápido rápida rápidos rápidamente como_se_describe tal_como_se_describe
    +1.5 conforme fácil sólido sólida económico económica alivia supera compensa
    +2 sencillísimo a_la_perfección perfección repito repetiré ganga chollo
    +1 sencillo sencilla exactos exacto intacta intacto coincide repetir
    +1 bien funciona funcionan aceptable decente barato barata baratos suave merece
    +1 calidad_precio relación_calidad_precio
    +0.3 ok vale
    -3 horrible horribles pésimo pésima pésimos pésimas malísimo malísima terrible
    -3 basura estafa porquería mierda chapuza timo una_estrella 1_estrella cero_estrellas
    -3 dejó_de_funcionar deja_de_funcionar ha_dejado_de_funcionar no_funciona
    -3 no_lo_recomiendo nunca_llegó no_llegó no_sirve inservible desastre
    -2.5 decepción decepcionado decepcionada decepcionante decepcionados defectuoso
    -2.5 defectuosa inútil fatal roto rota rotos rotas rompió se_rompió estropeado
    -2.5 estropeó devolver devuelto devolví lo_devolví para_devolver engaño engañoso
    -2.5 deja_mucho_que_desear peor
    -2 malo mala malos malas se_rompe rompe incómodo incómoda incómodos endeble
    -2 reembolso fallo falla fallos fallan lamentablemente desgraciadamente
    -2 por_desgracia una_pena es_una_pena lástima carísimo apesta peligroso
    -1.5 mal problema problemas devolución flojo floja flojos mediocre falso falsa
    -1.5 sucio sucia rayado rayada molesto molesta incorrecto incorrecta equivocado
    -1.5 equivocada retraso ni_fu_ni_fa regular frágil frágiles
    -1 difícil complicado complicada caro caros error errores tarde
    -1 manchas mancha justito triste olor huele rayas ojalá
    -2 cabreada cabreado baja_calidad esperaba_otra_cosa
    -1.5 falta queja pega imposible deteriora se_cae desconecta*
    """,
    negators="no nunca jamás nada ni tampoco sin ningún ninguna ninguno nadie apenas poco",
    intensifiers="""
    1.4 muy super realmente totalmente completamente increíblemente tan
    1.4 muchísimo sumamente extremadamente
    1.2 mucho bastante
    0.7 un_poco algo un_tanto ligeramente
    """,
    contrast="pero sin_embargo no_obstante",
    too="1.2 demasiado demasiada demasiados demasiadas",
    fixed="lamentablemente desgraciadamente",
)

FR = LexiconSpec(
    words="""
    +3 excellent excellente excellents parfait parfaite parfaits parfaites parfaitement
    +3 génial géniale géniaux magnifique magnifiques superbe superbes merveilleux
    +3 merveilleuse formidable fantastique ador* j'adore ravi ravie ravis
    +3 ravies je_recommande à_recommander au_top nickel impeccable impeccables
    +3 rien_à_dire rien_à_redire cinq_étoiles 5_étoiles
    +2.5 recommande recommandée recommander top super incroyable bluffant
    +2.5 délicieux délicieuse bravo génialissime
    +2 bon bonne bons bonnes content contente contents contentes satisfait satisfaite
    +2 satisfaits heureux heureuse beau belle beaux belles joli jolie jolis jolies
    +2 pratique pratiques agréable agréables confortable confortables efficace
    +2 efficaces solide solides robuste idéal idéale conforme conformes sans_problème
    +2 aucun_problème fonctionne_bien fonctionne_parfaitement marche_bien sympa
    +2 mignon mignonne fait_le_job fait_l'affaire réussi réussie plaisir bon_rapport
    +1.5 meilleur meilleure utile utiles satisfaisant rapide rapides rapidement
    +1.5 pas_cher pas_chère merci doux douce stylé stylée stylés stylées sympathique
    +1.5 esthétique bien_fini silencieux conseille
    +2 bonne_affaire
    +1 léger légère légers légères gentil gentille
    +1 bien facile facilement fonctionne fonctionnent correct correcte correctement
    +1 pas_mal ok rapport_qualité_prix qualité_prix marche
    -3 nul nulle nuls horrible horribles affreux affreuse catastrophique catastrophe
    -3 arnaque escroquerie à_fuir à_éviter daube merde inadmissible inutilisable
    -3 une_étoile 1_étoile zéro_étoile une_seule_étoile lamentable minable honteux
    -2.5 déçu déçue déçus déçues décevant décevante décevants déception inacceptable
    -2.5 cassé cassée cassés cassées défectueux défectueuse pire inutile fuir éviter
    -2.5 remboursement remboursé rembourser renvoyé renvoyée retourné retournée
    -2.5 insatisfait insatisfaite pas_terrible
    -2 mauvais mauvaise mauvaises abîmé abîmée abîmés endommagé endommagée défaut
    -2 défauts dommage malheureusement hélas regrette inconfortable désagréable
    -2 médiocre galère pue colère énervé fâché
    -1.5 problème problèmes mal retour bof fragile fragiles sale sales taché tachée
    -1.5 rayé rayée rayures manque manquant manquante manquants faux fausse
    -1.5 terrible saute sautent sautes coupures se_coupe se_coupent décroche
    -1 difficile compliqué compliquée lent lente lents en_retard retard moyen moyenne
    -1 cher chère chers odeur taches
    -3 pourriture
    -2.5 déconseille hs hors_service non_recommandé non_recommandée
    -1.5 tant_pis salissant
    """,
    negators="ne n' pas jamais rien aucun aucune sans ni guère peu non",
    intensifiers="""
    1.4 très vraiment tellement extrêmement hyper totalement complètement vachement
    1.4 super_bien franchement
    1.2 particulièrement assez_bien bien_trop vraiment_très
    0.9 assez plutôt
    0.7 un_peu légèrement un_tantinet
    """,
    contrast="mais cependant toutefois néanmoins pourtant par_contre",
    too="1.3 trop",
    fixed="malheureusement hélas dommage",
)

JA = LexiconSpec(
    words="""
    +3 最高 大満足 素晴らしい 素晴らしかった すばらしい 完璧 感動 大好き 絶品 手放せない
    +3 言うことない 言うことなし 申し分ない 申し分なし 文句なし 文句ない 買ってよかった
    +3 買って良かった 星5 星五つ 満点 大正解
    +2.5 満足 気に入 おすすめ オススメ お勧め お薦め 素敵 すてき ステキ 優秀 抜群 期待以上
    +2.5 感謝 ありがとう 大活躍 重宝 愛用 リピート 嬉しい うれしい 美味しい すごい 凄い
    +2.5 おいしい 美味しかった 快適 高品質 上質 正解 良すぎ 見事 ありがたい ありがたかった
    +2.5 参考になりました 勉強になりました 面白い 面白かった 面白く おもしろい 楽しかった
    +2 良い 良かった 良く 良し 良好 よい よかった 良いです いい 便利 使いやすい 綺麗
    +2 きれい キレイ 可愛い かわいい カワイイ 丁寧 丈夫 安心 楽しい 楽しめ 好き 好評
    +2 助かり 助かる 助かっ ぴったり ピッタリ 問題なく 問題なし 問題ない 問題ありません
    +2 お得 役立 役に立 飽きない 欠かせない 気にならない 気になりません 心地よい
    +2 気持ちいい 気持ち良い しっかり 頑丈 十分 充分 悪くない 楽しく 楽しみ 嬉しかった 美味しく
    +2 おしゃれ オシャレ お洒落 魅力的 優れ 可愛く 効果的 価格以上 お買い得
    +1.5 やすい 使え 早い 速い 早く届 すぐ届 手頃 お手頃 コスパ 静か 優しい 明るい 満足度
    +1.5 スタイリッシュ 高級感 魅力 すっきり 復活 活躍 待ち遠しい 参考になる
    +1 安い 大丈夫 まあまあ 軽い 柔らか 普通に使え 問題もなく 間違いない 間違いなく 価値
    +1 はっきり 大切に 効果
    -3 最悪 最低 詐欺 ゴミ 二度と 酷い ひどい 使い物にならない 不良品 初期不良
    -3 欠陥 星1 星ひとつ 星一つ 金の無駄 お金の無駄 騙 偽物 ニセモノ 買わない 買いません 不十分
    -3 残念 ハズレ はずれ やめた方が よした方が
    -2.5 がっかり ガッカリ 期待外れ 期待はずれ 不良 壊れ こわれ 故障 不具合 返品
    -2.5 返金 後悔 無駄 損 粗悪 安っぽい 不満 動かなくな 使えなくな
    -2 悪い 悪く 悪かった 汚い 汚れ 不便 イマイチ いまいち 駄目 ダメ だめ 無理 臭い
    -2 割れ 破れ 剥がれ はがれ 錆 サビ 欠け 折れ 漏れ 届かない 届かず 不快 困 怒 嘘
    -2 届いていない 届きません 劣化 失敗 難点 欠点 合わな 合いません すぐ切れ 雑 死んで
    -1.5 疑問 しようがない しょうがなく 暗い ゆるく ゆるい きつい キツイ 死亡
    -1 てしまい てしまう てしまった でしまった てしまいました ちゃった ちゃいました
    -1 して欲しい してほしい て欲しい てほしい 欲しかった
    -1.5 外れ
    -1.5 微妙 痛い 痛く うるさい 遅い 遅れ 違う 違いました 間違 足りない 不足 弱い
    -1.5 難しい 面倒 不安 心配 傷 キズ 返送 にくい づらい 辛い 残念ながら 仕方ない 問題
    -1.5 しょうがない 疲れ 崩れ 滑る 重い 取れて
    -1 ほつれ 色落ち シミ 汚く ズレ ずれ 交換 硬い
    -0.5 薄い 普通
    """,
    negators="ない ないです なかった なかっ ません ませんでした なく 無い 無く",
    intensifiers="""
    1.5 とても すごく 凄く 非常に 本当に 本当 ほんとに ほんと 大変 めちゃくちゃ
    1.5 めちゃ 超 全く 全然 最も 一番 かなり 大いに
    1.2 特に 結構 なかなか 割と
    0.6 少し ちょっと やや 若干 多少
    """,
    contrast="が、 ですが ますが けど けれど けれども しかし でも ただ、 ただし ものの 一方",
    too="1.3 すぎ 過ぎ",
    fixed="残念ながら",
    neutral="""
    少ない 少なく 少なかった 危なく だけでなく ではなく じゃなく 間もなく 色々 いろいろ 色んな
    関係なく 仕方なく しかない 以外 気になる 期待して 良ければ 良いか いいか いつでも どこでも
    何でも なんでも 誰でも 不明 雑誌 雑貨 ダメ元 方がいい 方が良い
    """,
    negate_after=True,
)

ZH = LexiconSpec(
    words="""
    +3 完美 超赞 太棒 极好 惊艳 爱不释手 物超所值 超值 五星 非常满意 强烈推荐 满分 一流
    +3 好评 很满意 特别好 非常好 赞赞 惊喜 精彩 没毛病 无可挑剔
    +2.5 满意 喜欢 推荐 棒 赞 优秀 漂亮 好看 好用 好吃 值得 划算 实惠 给力 靠谱 精美
    +2.5 精致 喜爱 感动 经典 好书 受益 开心 高兴 不错 不愧 挺好 很好 蛮好 性价比高
    +2 好 舒服 舒适 方便 清晰 放心 感谢 谢谢 可爱 结实 耐用 正品 有用 有帮助 实用
    +2 流畅 及时 干净 信赖 适合 合适 有趣 好玩 生动 通俗易懂 易懂 回购 细腻 轻便 迅速
    +2 很快 快速 没问题 没有问题 问题不大 完好 稳定 清楚 必备 启发 深刻
    +1.5 便宜 值 快 正好 刚好 柔软 全面 详细 满足 好处 优点 喜 美观 大方 新鲜 好闻 很香 轻松
    +1.5 难忘 难得 认真 丰富 合情合理 好写 还算可以
    +2 有意思 欲罢不能 大有裨益 裨益 好听 好喝
    +1 正常
    +1 还行 还可以 可以用 凑合能用 不贵 强 厚实 亮 支持 安全 轻薄
    -3 垃圾 差评 太差 极差 最差 骗 假货 恶心 坑 失望 后悔 无语 烂 糟糕 气人 浪费 上当
    -3 骗人 欺骗 盗版 千万别买 别买 不值 一星 态度恶劣 不推荐 不建议 完全不
    -2.5 差 坏 坏了 破 退货 退款 退了 难用 难看 难吃 难受 麻烦 可惜 遗憾 郁闷 生气 不满
    -2.5 失灵 故障 瑕疵 假 残次 次品 鸡肋 没用 不能用 无聊 乏味 枯燥 废话 错别字
    -2 问题 慢 贵 划痕 脏 裂 断 漏 掉色 褪色 异味 臭 刺鼻 破损 缺页 少了 错 粗糙
    -2 勉强 误导 敷衍 糊弄 吵 变形 不行 不好 模糊 拼凑 投诉 不如 不足 不便 缺点 毛病
    -1.5 一般 凑合 无法 难 偏小 偏大 掉 松 紧 薄 粗 等了 小气 缺 发霉 过期 旧 二手
    -1 轻微 有待 哎 唉 发麻
    -2 离谱 抄书 硬伤 东拼西凑 暴力 降价
    -1.5 质疑
    """,
    negators="""
    不 没 没有 无 未 别 并不 毫不 从不 不是 不够 没什么 不怎么 一点也不 一点都不 并没有 不太 勿
    """,
    intensifiers="""
    1.5 很 非常 特别 十分 超 超级 真 真的 挺 蛮 相当 极其 极 最 巨 贼 真心 实在 绝对
    1.2 更 比较
    0.6 稍微 稍 略 一点
    """,
    contrast="但是 但 可是 不过 然而 却",
    too="1.5 太\n0.6 有点 有些 有一点",
    neutral="""
    不仅 不但 不同 不少 不管 不断 不论 不然 不久 不用 不得不 不知道 不一样 不一定
    不停 不客气 不好意思 不在 没想到 好像 好几 好多 只好 好不容易 最好 美国 美元 快递
    快乐 差不多 一般来说 太阳 太太 无论 无需 不必 好奇 难道 难怪 香港 没关系 差价 还好
    值班 快要 快点 爱好 好友 好久 尽快 出差 差点 突破 没错 错过 假期 放假 暑假 寒假 判断
    宝贵 慢慢 赶紧 要紧 薄荷 依旧 晚上 积累 无线 无限 无糖 未来 区别 别人 别的 分别 级别
    类别 告别 超过 超市 价值 香水
    """,
)
# fmt: on

SPECS: dict[str, LexiconSpec] = {"en": EN, "de": DE, "es": ES, "fr": FR, "ja": JA, "zh": ZH}

# Emoji say the same thing in every language.
EMOJI: dict[str, float] = {
    **dict.fromkeys("👍😍❤♥😊😀😁😃😄🥰💯👌💕💖😘🤩✨🎉", 1.5),
    **dict.fromkeys("🙂☺⭐😉", 0.8),
    **dict.fromkeys("👎😡😠🤬💩😤😞😢😭😒", -1.5),
    **dict.fromkeys("🙁☹😕😩😫", -1.0),
}
