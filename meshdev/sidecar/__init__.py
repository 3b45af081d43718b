"""The data plane: one `meshdev sidecar` per pod (and one ingress gateway), an HTTP/1.1 proxy
with Envoy's semantics. Its rooms follow Envoy's source tree: http/ (the server engine),
upstream/ (the client, connection budgets and the cluster policies: balancer, breaker, outlier),
router/ (match tables, retries, deadlines), filters/ (fault, rate limit), proxy/ (the request
pipeline), stats/ and admin/. main.py runs one sidecar; dataplane.py holds the live state that
requests run on; compiled.py / compiler.py turn a pushed config into what a request reads.
It imports nothing of the control plane, the dashboard, Docker or aiohttp (contracts in
pyproject.toml).
"""
