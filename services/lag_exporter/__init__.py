"""The lag exporter: consumer lag of every group on the cluster, as Prometheus metrics (with
kafka-lag-exporter's names) and as per-stage backlog and speed in Redis for the job ETA."""
