"""Names of the per-replica metrics serve/ reports and autoscale/ reads.

serve/'s deployments return a dict with these keys from Ray Serve's custom-metrics hook
(`record_autoscaling_stats`); autoscale/'s Ray adapter reads them from the autoscaling context.
One module so the producer and the consumer cannot drift apart.
"""

QUEUE_LEN = "queue_len"  # requests waiting in the replica's batching queue
ONGOING = "ongoing"  # requests accepted and not yet answered (queued + in the model)
ARRIVAL_RATE_RPS = "arrival_rate_rps"  # requests/s over the replica's recent window
LATENCY_P50_MS = "latency_p50_ms"
LATENCY_P95_MS = "latency_p95_ms"
LATENCY_P99_MS = "latency_p99_ms"
BATCH_SIZE_MEAN = "batch_size_mean"

ALL = (QUEUE_LEN, ONGOING, ARRIVAL_RATE_RPS, LATENCY_P50_MS, LATENCY_P95_MS, LATENCY_P99_MS, BATCH_SIZE_MEAN)
