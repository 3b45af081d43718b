"""Envoy's tcp_proxy: listeners that relay a connection's bytes to a cluster instead of parsing
HTTP (source/common/tcp_proxy in Envoy's tree). server.py accepts and drains; session.py is one
relayed connection. The cluster policies are upstream/'s, shared with HTTP: the connection
budget (`max_connections`), balancer, outlier detector and cluster state.
"""
