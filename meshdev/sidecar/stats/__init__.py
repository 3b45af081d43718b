"""The sidecar's stats: the Envoy-named store, the per-listener/route/cluster stat sets fetched
once, the text/JSON/Prometheus formats and the /stats/stream documents.
"""
