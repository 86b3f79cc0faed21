"""The LLM layer: structured-output calls to any OpenAI-compatible endpoint, with a shared
Redis rate limiter, a result cache, retries and metrics.

Stages use `build_llm(settings, redis)` and `await llm.complete(...)`; see
`shared.llm.client`. Prompts and output models of each stage live in `shared.prompts`.
Import from the modules (`shared.llm.client`, `.errors`, `.settings`, ...): this package
imports nothing itself, so importing `shared.llm.errors` does not load the openai SDK
into a stage that never calls an LLM.
"""
