"""The ingest stage: validate, normalise, deduplicate and store submitted reviews, emit them on."""
