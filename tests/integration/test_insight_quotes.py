"""Quotes as people read them, through the real stack: API -> ingest -> learn -> translate
-> insight, with Kafka, Postgres, Redis and the fake LLM.

A small mixed-language job is uploaded through the stack's API with the client's own
`review_id`s. Every insight of a translated review quotes the review in its ORIGINAL
language (an exact substring of the stored review at its offsets), has the target-language
translation of that quote beside it (the matching sentence of the stored translation, no
"[fr->en]" prefix), and carries the uploaded review id next to the internal one, in its
`insights` row and in its `insights.extracted` event; a review already in the target
language has no quote translation.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from ingest_kit import collect, db, end_offsets, prefix, scalar, wait_for

from shared.events import InsightsExtracted
from shared.topics import INSIGHTS_EXTRACTED
from voc.fake_llm.answers import split_sentences

pytestmark = pytest.mark.integration

TIMEOUT = 240.0
FRENCH = "Le son saute dès que je traverse une gare bondée. La batterie tient deux jours."
JAPANESE = "セールで安い。音質も良い。"
ENGLISH = "The battery died after two days."


def first_sentence(text: str) -> str:
    a, b = split_sentences(text)[0]
    return text[a:b]


async def test_translated_insights_quote_the_original_with_translation_and_client_id(
    stack: dict[str, str],
) -> None:
    if not stack.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    tag = uuid.uuid4().hex[:10]
    rows = [
        {"review_id": f"fr-{tag}", "text": f"{FRENCH} #{tag}", "language": "fr", "rating": 2},
        {"review_id": f"ja-{tag}", "text": f"{JAPANESE}#{tag}", "language": "ja", "rating": 4},
        {"review_id": f"en-{tag}", "text": f"{ENGLISH} #{tag}", "language": "en", "rating": 1},
    ]
    since = await end_offsets(INSIGHTS_EXTRACTED.full_name(prefix()))
    headers = {"Authorization": f"Bearer {stack['VOC_API_KEY']}"}
    async with httpx.AsyncClient(base_url=stack["VOC_API_URL"], headers=headers) as api:
        resp = await api.post("/v1/jobs", json={"product": "Earbuds", "target_language": "en"})
        assert resp.status_code == 201, resp.text
        job = str(resp.json()["id"])
        resp = await api.post(
            f"/v1/jobs/{job}/reviews",
            content=b"\n".join(orjson.dumps(r) for r in rows),
            headers={"content-type": "application/x-ndjson"},
        )
        assert resp.status_code in (200, 201, 202), resp.text
        assert (await api.post(f"/v1/jobs/{job}/seal")).status_code in (200, 202), resp.text

    async def extracted() -> bool:
        async with db() as conn:
            n = await scalar(conn, "SELECT count(*) FROM review_insights WHERE job_id = %s", job)
        return int(n) == len(rows)

    assert await wait_for(extracted, TIMEOUT, interval=0.5), f"job {job}: insight incomplete"
    async with db() as conn:
        cur = await conn.execute(
            "SELECT i.id, i.review_id, i.external_review_id, i.quote, i.quote_start,"
            " i.quote_end, i.quote_translation, i.dimension, i.sentiment, r.text,"
            " r.external_id, t.text, t.translated"
            " FROM insights i JOIN reviews r ON r.id = i.review_id"
            " JOIN translations t ON t.review_id = i.review_id"
            " WHERE i.job_id = %s ORDER BY i.id",
            (job,),
        )
        found = await cur.fetchall()
    by_client: dict[str, list[tuple[Any, ...]]] = {}
    for row in found:
        by_client.setdefault(str(row[2]), []).append(row)
    assert set(by_client) == {r["review_id"] for r in rows}

    for row in found:
        _, internal, client_id, quote, start, end, quote_tr, _, _, original, ext, tr, was = row
        assert client_id == ext and internal != client_id  # both ids, the client's own too
        assert original[start:end] == quote  # offsets into the review as written
        if was:  # translated: the translation of the quote sits beside it
            assert quote_tr and not quote_tr.startswith("[") and quote_tr != quote
            assert quote_tr in tr, (quote_tr, tr)
            assert not tr.startswith("[")
        else:
            assert quote_tr is None

    french = {r[3]: r for r in by_client[f"fr-{tag}"]}
    sound = french["Le son saute dès que je traverse une gare bondée."]
    assert (sound[7], sound[8]) == ("Sound quality", "negative")
    assert sound[6] == first_sentence(sound[11])  # the aligned sentence of the translation
    japanese = {r[3]: r for r in by_client[f"ja-{tag}"]}
    tr = japanese["音質も良い。"][11]
    assert japanese["音質も良い。"][6] == tr[slice(*split_sentences(tr)[1])]
    assert [r[6] for r in by_client[f"en-{tag}"]] == [None]

    records = await collect(
        since,
        keep=lambda rec: rec.key == job.encode(),
        done=lambda kept: (
            sum(len(InsightsExtracted.model_validate_json(k.value).review_ids) for k in kept)
            >= len(rows)
        ),
        timeout=60,
    )
    events = [InsightsExtracted.model_validate_json(rec.value) for rec in records]
    emitted = {i.id: i for e in events for i in e.insights}
    for row in found:
        ins = emitted[row[0]]
        assert (ins.external_review_id, ins.quote, ins.quote_translation) == (
            row[2],
            row[3],
            row[6],
        )
