"""HTTP filters that act on a routed request before it is forwarded: fault injection, the local
rate limit, and authorization (Envoy's RBAC filter, on inbound listeners).
"""
