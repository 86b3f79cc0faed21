"""Review uploads: incremental parsing, chunking and streaming to `reviews.submitted`."""
