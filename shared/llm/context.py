"""Per-task LLM call context set by the stage runner.

`bypass_cache` is set while a batch that carries the `voc-no-cache` header (a replay
started with `voc replay job --no-cache`, after a prompt or model change) is handled:
the LLM client then skips its result cache for those calls and stores the fresh answers.
It is a context variable, so concurrent batches of one stage do not see each other's flag.
"""

from __future__ import annotations

from contextvars import ContextVar

bypass_cache: ContextVar[bool] = ContextVar("voc_llm_bypass_cache", default=False)
