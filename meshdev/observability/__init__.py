"""Observability beyond the terminal that runs beside a mesh: a real Prometheus scraping the
sidecars (prometheus.py), and the session's history of every sidecar's spans, served to
`meshdev traces` and other processes' dashboards (trace_history.py)."""
