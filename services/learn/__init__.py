"""The learn stage: `reviews.ingested` in, `reviews.learned` out once a job's model exists."""
