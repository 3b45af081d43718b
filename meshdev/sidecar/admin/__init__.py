"""The sidecar's admin API in Envoy's dialect (/stats, /clusters, /config_dump, ...) plus
meshdev's /stats/stream and POST /config, on the sidecar's own HTTP engine. It reads the data
plane only through the views of views.py.
"""
