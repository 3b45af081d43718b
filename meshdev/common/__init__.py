"""What several packages share, below everything else (a contract keeps it importing nothing
of meshdev): the latency histogram, the event-loop runner, full-jitter backoff, Envoy's default
limits and policy names, Envoy's stat-name tags, the breaker view both sides of the admin API
speak, and the per-sidecar config that the control plane renders and a sidecar serves.
"""
