"""The translate stage: `reviews.learned` in, `reviews.translated` out."""
