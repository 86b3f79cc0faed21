"""Who wrote a job's analysis: the model behind the insight stage, and whether it is the
bundled fake LLM.

The fake (`voc.fake_llm`) is what `voc up` runs when no provider is configured: a lexicon
reader good enough to try the pipeline on, not a language model. A report it wrote says so
(`analyst: {"model": ..., "fake": true, ...}` in the report document, a banner on its HTML
page, a closing paragraph of `voc demo`), with how to point the stack at a real model.

"Fake" means: the insight stage's base URL is the fake's own (`VOC_FAKE_LLM_URL`, which
`voc up` sets whenever it starts the fake), or its model is the fake's model id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from shared.llm.settings import LLMSettings

FAKE_MODEL = "voc-fake-1"  # the model id the fake serves (voc.fake_llm.config.FakeConfig)
REAL_MODEL_HOWTO = (
    "To analyse with a real model, point the stack at any OpenAI-compatible endpoint "
    "(OpenAI, DashScope, vLLM, Ollama) and start it again: VOC_LLM_BASE_URL=<endpoint, e.g. "
    "https://api.openai.com/v1> with VOC_LLM_API_KEY=<key> and VOC_LLM_MODEL=<model>."
)
FAKE_NOTE = (
    "This analysis was written by the bundled fake LLM, a deterministic keyword-and-lexicon "
    "reader for trying vocstream out, not a language model: its sentiment, aspects and "
    "translations are rough."
)


def describe_analyst(
    llm: LLMSettings | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`{"model", "fake"}` of the insight stage's LLM, plus `note` and `real_model` when
    it is the fake."""
    cfg = (llm or LLMSettings()).for_stage("insight")
    env = os.environ if environ is None else environ
    fake_url = (env.get("VOC_FAKE_LLM_URL") or "").strip().rstrip("/")
    base = cfg.base_url.strip().rstrip("/")
    fake = cfg.model == FAKE_MODEL or bool(
        fake_url and (base == fake_url or base.startswith(fake_url + "/"))
    )
    out: dict[str, Any] = {"model": cfg.model, "fake": fake}
    if fake:
        out["note"] = FAKE_NOTE
        out["real_model"] = REAL_MODEL_HOWTO
    return out


@cache
def _this_process() -> dict[str, Any]:
    return describe_analyst()


def current_analyst() -> dict[str, Any]:
    """`describe_analyst()` of this process's settings (read once: they do not change)."""
    return dict(_this_process())
