"""A workload's certificates made usable: checked, then turned into the TLS contexts that
inbound listeners and upstream connections handshake with.

Only the ssl module is used, so the sidecar needs no crypto library of its own: the checks are
the ones OpenSSL makes in a real handshake, by running one in memory between the new server
context and a new client context (both presenting the certificate and trusting only `ca`).
That proves, in one step, that the key matches, that the chain leads to the CA, that the
certificate is valid now and usable by both sides (its extended key usage), and it decodes the
leaf for its SPIFFE ID and for GET /certs.

The key lives only in the contexts (OpenSSL's memory). ssl can load a key from a file only, so
it goes through an anonymous in-memory file (memfd) that is closed once read; where there is
no memfd (not Linux) it goes through a private temporary file removed at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from meshdev.common.pem_memory import in_memory
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.tls.peer import SPIFFE, uri_sans

# What an upstream connection offers in ALPN: HTTP/1.1 pools say http/1.1, HTTP/2 pools h2
# (Envoy sets ALPN per upstream codec), tcp_proxy connections nothing.
Alpn = Literal["http/1.1", "h2"] | None
ALPNS: Final[tuple[Alpn, ...]] = ("http/1.1", "h2", None)
# An inbound listener serves both, as Istio's sidecars do; h2 first, as Envoy prefers it.
SERVER_ALPN: Final = ["h2", "http/1.1"]
# Envoy's /certs shows certificates delivered in memory (SDS, inline) with this path.
INLINE_PATH: Final = "<inline>"
_PEM_CERT: Final = "-----BEGIN CERTIFICATE-----"
_PEM_KEY_TAIL: Final = "PRIVATE KEY-----"


class CertsRejected(ValueError):
    """The certificates cannot be used: every reason found."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class CertDetails:
    """One certificate as Envoy's admin /certs describes it (CertificateDetails)."""

    serial_number: str
    # (kind, value): ("uri", "spiffe://..."), ("dns", ...), ("ip_address", ...).
    subject_alt_names: tuple[tuple[str, str], ...]
    valid_from: datetime
    expiration_time: datetime

    @classmethod
    def from_decoded(cls, cert: Mapping[str, Any]) -> CertDetails:
        """From the dict ssl gives for a verified certificate (getpeercert, get_ca_certs)."""
        kinds = {"URI": "uri", "DNS": "dns", "IP Address": "ip_address", "email": "email"}
        sans = tuple(
            (kinds[kind], value) for kind, value in cert.get("subjectAltName", ()) if kind in kinds
        )
        return cls(
            # OpenSSL writes the serial in upper-case hex; Envoy shows it in lower case.
            serial_number=str(cert.get("serialNumber", "")).lower(),
            subject_alt_names=sans,
            valid_from=_cert_time(cert["notBefore"]),
            expiration_time=_cert_time(cert["notAfter"]),
        )

    def to_json(self, now: datetime) -> dict[str, object]:
        left = self.expiration_time - now
        return {
            "path": INLINE_PATH,
            "serial_number": self.serial_number,
            "subject_alt_names": [{kind: value} for kind, value in self.subject_alt_names],
            # A uint64 in Envoy's proto, hence a string in its JSON.
            "days_until_expiration": str(max(left.days, 0)),
            "valid_from": _rfc3339(self.valid_from),
            "expiration_time": _rfc3339(self.expiration_time),
        }


def _cert_time(text: str) -> datetime:
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Material:
    """A checked workload certificate as contexts: one server context, one client context per
    ALPN choice; and what GET /certs shows. Never the key itself."""

    spiffe_id: str
    server: ssl.SSLContext
    clients: Mapping[Alpn, ssl.SSLContext]
    leaf: CertDetails
    ca: tuple[CertDetails, ...]

    @property
    def trust_domain(self) -> str:
        """The SPIFFE trust domain (`cluster.local` of spiffe://cluster.local/ns/...)."""
        return self.spiffe_id[len(SPIFFE) :].split("/", 1)[0]

    def client(self, alpn: Alpn) -> ssl.SSLContext:
        return self.clients[alpn]

    def to_json(self, now: datetime) -> dict[str, object]:
        """One entry of Envoy's /certs `certificates` list."""
        return {
            "ca_cert": [c.to_json(now) for c in self.ca],
            "cert_chain": [self.leaf.to_json(now)],
        }


def load_material(certs: WorkloadCerts, spiffe_id: str | None) -> Material:
    """Check `certs` for the workload `spiffe_id` and build its contexts; raises CertsRejected
    with every reason found (the checks that need a usable certificate come after the ones
    that make it usable)."""
    reasons: list[str] = []
    if spiffe_id is None:
        raise CertsRejected(
            [
                "the config names no spiffe_id: this sidecar's mesh uses no TLS, so it takes no "
                "certificate"
            ]
        )
    if _PEM_CERT not in certs.ca:
        reasons.append("ca: no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if _PEM_CERT not in certs.cert_chain:
        reasons.append("cert_chain: no PEM certificate (-----BEGIN CERTIFICATE-----)")
    key = certs.private_key.get_secret_value()
    if _PEM_KEY_TAIL not in key:
        reasons.append("private_key: not a PEM private key")
    if reasons:
        raise CertsRejected(reasons)
    try:
        server = _context(certs, key, server_side=True)
        clients = {alpn: _context(certs, key, server_side=False, alpn=alpn) for alpn in ALPNS}
    except CertsRejected:
        raise
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertsRejected([f"the certificates cannot be loaded: {exc}"]) from None
    leaf = _self_handshake(server, clients["http/1.1"])
    spiffe_ids = [uri for uri in uri_sans(leaf) if uri.startswith(SPIFFE)]
    if spiffe_ids != [spiffe_id]:
        named = ", ".join(spiffe_ids) or "no SPIFFE ID"
        reasons.append(
            f"cert_chain: the certificate names {named}, but this sidecar is {spiffe_id} "
            "(its one URI SAN must be the workload's SPIFFE ID)"
        )
    if reasons:
        raise CertsRejected(reasons)
    return Material(
        spiffe_id=spiffe_id,
        server=server,
        clients=clients,
        leaf=CertDetails.from_decoded(leaf),
        ca=tuple(CertDetails.from_decoded(c) for c in server.get_ca_certs()),
    )


def _context(
    certs: WorkloadCerts, key: str, *, server_side: bool, alpn: Alpn = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Identities are SPIFFE URI SANs, checked by us after the handshake, not hostnames.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=certs.ca)
    except ssl.SSLError as exc:
        raise CertsRejected([f"ca: not PEM certificates ({exc})"]) from None
    if not ctx.get_ca_certs():
        raise CertsRejected(["ca: no CA certificate in it (basicConstraints CA:TRUE)"])
    with in_memory(certs.cert_chain) as chain_path, in_memory(key) as key_path:
        try:
            ctx.load_cert_chain(chain_path, key_path)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise CertsRejected(
                    ["private_key: does not match the certificate (the first of cert_chain)"]
                ) from None
            raise CertsRejected([f"cert_chain or private_key cannot be loaded ({exc})"]) from None
    if server_side:
        ctx.set_alpn_protocols(SERVER_ALPN)
        # One ticket per full handshake is enough to resume the next connection.
        ctx.num_tickets = 1
    elif alpn is not None:
        ctx.set_alpn_protocols([alpn])
    return ctx


def _self_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> dict[str, Any]:
    """A TLS handshake in memory between the two contexts, each verifying the other; returns
    the certificate as the client verified it (decoded). CertsRejected says why one refused."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    sides = (
        (client.wrap_bio(c_in, c_out, server_side=False), c_out, s_in),
        (server.wrap_bio(s_in, s_out, server_side=True), s_out, c_in),
    )
    done = [False, False]
    # A TLS 1.3 handshake takes three flights; a few more rounds cost nothing.
    for _ in range(6):
        for i, (obj, out, peer_in) in enumerate(sides):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError as exc:
                    raise CertsRejected(
                        [f"cert_chain does not verify against ca: {exc.verify_message}"]
                    ) from None
                except ssl.SSLError as exc:
                    raise CertsRejected(
                        [f"a TLS handshake with these certificates fails: {exc}"]
                    ) from None
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done):
            break
    else:
        raise CertsRejected(["a TLS handshake with these certificates does not complete"])
    cert = sides[0][0].getpeercert()
    if not cert:
        raise CertsRejected(["a TLS handshake with these certificates shows no certificate"])
    return dict(cert)
