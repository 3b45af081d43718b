"""Pure aggregation (no I/O: a contract keeps it so): many sidecars' intervals -> one `MeshView`
per tick, per route, cluster and host, with latency quantiles, history and events.
"""
