"""`python -m voc.fake_llm`: run the fake LLM server."""

from __future__ import annotations

import sys

from voc.fake_llm.cli import main

if __name__ == "__main__":
    sys.exit(main())
