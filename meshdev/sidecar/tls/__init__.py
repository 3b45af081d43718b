"""Mutual TLS between sidecars (Envoy's TLS transport socket, as Istio configures it): the
workload certificate's contexts, the inbound TLS handshake (STRICT, or told by the first bytes
under PERMISSIVE), the upstream handshake and its SPIFFE ID check, and the peer's identity
that authorization reads.

Modules, each importing only those before it (and the stats store):

- ``peer``: the verified SPIFFE ID / Istio principal of a transport's peer (None on plaintext);
- ``material``: a ``WorkloadCerts`` checked (ssl alone: an in-memory mutual handshake) and
  turned into a server context and per-ALPN client contexts (TLS 1.3, the mesh's CA the only
  root, certificates required both ways); ``CertsRejected`` lists every reason;
- ``identity``: ``WorkloadIdentity``, the certificate in force (swapped whole by POST /certs),
  readiness, Envoy's /certs answer;
- ``stats``: Envoy's ``listener.<address>_<port>.ssl.*`` and ``cluster.<name>.ssl.*``;
- ``layer``: ``TlsLayer`` / ``TlsTransport``, TLS over an asyncio TCP transport under
  protocols that do not know it is there (the HTTP/1.1 + h2c engine, tcp_proxy, the pools);
- ``inbound``: ``InboundTls``, the accept side of an inbound listener;
- ``upstream``: ``TlsOrigin`` and ``open_connection``, the connect side of a cluster's pools.
"""
