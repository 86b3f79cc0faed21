"""A fake OpenAI-compatible LLM server for tests and benchmarks.

Deterministic answers derived from the input for every pipeline stage
(`voc.fake_llm.answers`), configurable latency, a server-side rate limit answering 429,
and fault injection (`voc.fake_llm.config`). Run it with `python -m voc.fake_llm` or
`voc fake-llm`; the app itself is `voc.fake_llm.server.FakeLLMApp`.
"""
