"""The insight stage: per review, the LLM extracts dimension/aspect/sentiment/quote/5W."""
