"""The API gateway: jobs, review uploads to Kafka, status with per-stage progress."""
