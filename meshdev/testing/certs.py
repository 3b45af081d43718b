"""Certificates for tests and benchmarks: a throwaway CA that issues workload certificates in
the shape the mesh's CA gives (ECDSA P-256, an empty subject, one critical SPIFFE URI SAN,
serverAuth + clientAuth), and the bent ones hostile-input tests need (expired, from another
CA, a wrong SPIFFE ID, a key of another certificate, behind an intermediate).

Production never imports this (import-linter): the sidecar checks certificates with the ssl
module alone; `cryptography` is needed only to make them.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from meshdev.common.workload_certs import WorkloadCerts, spiffe_id

# A test's certificates start a little in the past, so a clock read a moment later agrees.
SKEW = timedelta(minutes=5)
DAY = timedelta(days=1)


def spiffe(service: str, mesh: str = "test") -> str:
    """The SPIFFE ID the mesh gives `service`'s workloads (spiffe://cluster.local/ns/...)."""
    return spiffe_id(mesh, service)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@dataclass(frozen=True)
class TestCA:
    """A CA (a root, or an intermediate when `parents` is not empty) that issues workload
    certificates as `WorkloadCerts` naming its root as the trust anchor."""

    __test__ = False  # not a pytest test class, whatever its name says

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    # The issuers above this CA, nearest first (empty for a root).
    parents: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create(cls, name: str = "meshdev test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshdev tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def root(self) -> x509.Certificate:
        return self.parents[-1] if self.parents else self.cert

    @property
    def pem(self) -> str:
        """The trust anchor (the root) as PEM: what `WorkloadCerts.ca` carries."""
        return _pem(self.root)

    def intermediate(self, name: str = "meshdev test intermediate") -> TestCA:
        """A CA signed by this one: its certificates' chains carry it after the leaf."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            self._builder(key, now - SKEW, now + 20 * DAY)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return TestCA(cert, key, (self.cert, *self.parents))

    def issue(
        self,
        uri: str | None,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        extended_key_usage: tuple[x509.ObjectIdentifier, ...] = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    ) -> WorkloadCerts:
        """A workload certificate naming `uri` (None: no SAN at all), with a fresh key; valid
        from a few minutes ago for a day unless told otherwise."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            self._builder(key, not_before or now - SKEW, not_after or now + DAY)
            .subject_name(x509.Name([]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
        )
        if uri is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True
            )
        leaf = builder.sign(self.key, hashes.SHA256())
        # The leaf, then every intermediate up to (not including) the root.
        issuers = (self.cert, *self.parents[:-1]) if self.parents else ()
        chain = "".join(_pem(c) for c in (leaf, *issuers))
        return WorkloadCerts(ca=self.pem, cert_chain=chain, private_key=SecretStr(key_pem(key)))

    def _builder(
        self, key: ec.EllipticCurvePrivateKey, not_before: datetime, not_after: datetime
    ) -> x509.CertificateBuilder:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )


def expired(ca: TestCA, uri: str) -> WorkloadCerts:
    """A certificate of `ca` for `uri` that ended an hour ago."""
    now = datetime.now(UTC)
    return ca.issue(uri, not_before=now - 2 * DAY, not_after=now - timedelta(hours=1))


def with_key_of(certs: WorkloadCerts, other: WorkloadCerts) -> WorkloadCerts:
    """`certs` carrying `other`'s private key, which matches none of its certificates."""
    return WorkloadCerts(ca=certs.ca, cert_chain=certs.cert_chain, private_key=other.private_key)


def tls_context(
    certs: WorkloadCerts | None,
    *,
    server_side: bool = False,
    trust: str | None = None,
    alpn: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """A plain ssl context for a test's own TLS client (or server): presenting `certs` (None:
    no certificate at all), trusting `trust` (default: `certs.ca`), hostnames unchecked as in
    the mesh. The key passes through a private temporary file: test data, not a workload's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    anchor = trust if trust is not None else (certs.ca if certs is not None else None)
    if anchor is not None:
        ctx.load_verify_locations(cadata=anchor)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if certs is not None:
        with tempfile.TemporaryDirectory(prefix="meshdev-test-certs-") as folder:
            chain, key = os.path.join(folder, "chain.pem"), os.path.join(folder, "key.pem")
            with open(chain, "w", encoding="ascii") as f:
                f.write(certs.cert_chain)
            with open(key, "w", encoding="ascii") as f:
                f.write(certs.private_key.get_secret_value())
            ctx.load_cert_chain(chain, key)
    return ctx
