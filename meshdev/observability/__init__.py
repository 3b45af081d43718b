"""Observability beyond the terminal that runs beside a mesh: a real Prometheus scraping the
sidecars (prometheus.py)."""
