"""A client of the mesh's own, for requests made from outside it as one of its identities.

The dashboard's authorization demo calls a pod's inbound listener as a service of the mesh
would: with a certificate for that service's SPIFFE ID from the mesh's CA, over mutual TLS.
The pod's sidecar then sees that identity and its RBAC filter decides as it would for a call
from the service itself (the certificate is the identity; Istio checks nothing else).
"""

from __future__ import annotations

import ssl

from meshdev.common.pem_memory import in_memory
from meshdev.common.workload_certs import WorkloadCerts


def client_context(certs: WorkloadCerts) -> ssl.SSLContext:
    """A TLS 1.3 client context presenting `certs` and trusting only the mesh's CA.

    No host name check: a workload certificate names a SPIFFE ID, not a DNS name (the
    sidecars check the SAN themselves; here any pod of this CA will do)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=certs.ca)
    key = certs.private_key.get_secret_value()
    with in_memory(certs.cert_chain) as chain_path, in_memory(key) as key_path:
        ctx.load_cert_chain(chain_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
