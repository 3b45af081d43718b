"""The mesh's certificate authority: a self-signed ECDSA P-256 root, made at a mesh's first
`up` and reused by every later one, that issues each workload a short-lived certificate naming
its SPIFFE ID (what istiod's self-signed CA does in a cluster).

The CA lives in `<state folder>/<mesh>/ca/` (0700): `ca-cert.pem` and `ca-key.pem` (0600). The
folder appears whole or not at all: a new CA is written into a private temporary folder and
renamed into place, and a rename onto a folder that already holds a CA fails, so of two `up`s of
one mesh that race, both end up using the CA of the one that renamed first. Only this process
reads the key: nothing here logs or shows it, and it goes into no image, config or config_dump.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from meshdev.common.workload_certs import WorkloadCerts
from meshdev.security.rotation import DEFAULT_CERT_TTL

CA_FOLDER = "ca"
CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"
# istiod's self-signed root lives ten years: a dev mesh should never meet its end.
ROOT_TTL = timedelta(days=3650)
# Certificates start a minute in the past: a container's clock a little behind the host's must
# not see a fresh certificate as not valid yet.
CLOCK_SKEW = timedelta(minutes=1)
SPIFFE = "spiffe://"


class CAError(Exception):
    """The mesh's CA folder cannot be used, worded for the user (what, where, what to do)."""


class MeshCA:
    """A loaded CA: its root certificate and key, held in memory by the control plane."""

    __slots__ = ("_cert", "_key", "cert_pem", "folder")

    def __init__(self, folder: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.folder = folder
        self._cert = cert
        self._key = key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def __repr__(self) -> str:
        # Never the key, whatever prints this object.
        return f"MeshCA({self.subject!r}, {str(self.folder)!r})"

    @property
    def subject(self) -> str:
        return self._cert.subject.rfc4514_string()

    @property
    def expires(self) -> datetime:
        return self._cert.not_valid_after_utc

    def issue(self, spiffe_id: str, ttl: float = DEFAULT_CERT_TTL) -> WorkloadCerts:
        """A workload certificate for `spiffe_id` valid for `ttl` seconds from now (never past
        the CA's own end), with a key of its own: every issue makes a fresh key, so a rotation
        also rotates the key."""
        if not spiffe_id.startswith(SPIFFE) or len(spiffe_id) == len(SPIFFE):
            raise ValueError(f"not a SPIFFE ID: {spiffe_id!r}")
        if not ttl > 0:
            raise ValueError(f"a certificate's ttl must be positive, not {ttl!r}")
        now = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        ca_key_id = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            # An empty subject, as Istio's workload certificates: the identity is the URI SAN
            # alone, which is why that extension is critical (RFC 5280 4.2.1.6).
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(max(now - CLOCK_SKEW, self._cert.not_valid_before_utc))
            .not_valid_after(min(now + timedelta(seconds=ttl), self.expires))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id.value),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        leaf = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return WorkloadCerts(
            ca=self.cert_pem,
            cert_chain=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            private_key=SecretStr(key_pem.decode("ascii")),
        )


def leaf_validity(certs: WorkloadCerts) -> tuple[datetime, datetime]:
    """When the workload certificate of `certs` (the first of its chain) starts and ends."""
    leaf = x509.load_pem_x509_certificate(certs.cert_chain.encode("ascii"))
    return leaf.not_valid_before_utc, leaf.not_valid_after_utc


def load_or_create(mesh_folder: Path, mesh: str) -> MeshCA:
    """The CA of the mesh whose state folder is `mesh_folder`: the one made at its first `up`,
    else a new one. Raises CAError when a CA is there but cannot be used."""
    folder = mesh_folder / CA_FOLDER
    if not folder.exists():
        _create(folder, mesh)
    return load(folder)


def load(folder: Path) -> MeshCA:
    """Read a CA folder; raises CAError, in words, for anything that makes it unusable."""
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    remedy = (
        f"remove {folder} to make a new CA (the next `meshdev up` gives every pod a "
        "certificate of the new one)"
    )
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise CAError(f"the mesh's CA in {folder} cannot be read ({exc}); {remedy}") from None
    if mode & 0o077:
        # As ssh refuses a private key others can read: this key signs every identity.
        raise CAError(
            f"the mesh's CA key {key_path} is readable by others (mode {mode:04o}); "
            f"`chmod 600 {key_path}`, or {remedy}"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except ValueError as exc:
        raise CAError(f"the mesh's CA in {folder} is not readable PEM ({exc}); {remedy}") from None
    problem = _unusable(cert, key)
    if problem:
        raise CAError(f"the mesh's CA in {folder} {problem}; {remedy}")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return MeshCA(folder, cert, key)


def _unusable(cert: x509.Certificate, key: object) -> str | None:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return "has a key that is not ECDSA P-256"
    if cert.public_key() != key.public_key():
        return f"has a key that does not belong to its certificate ({CERT_FILE})"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return "has a certificate that is no CA of meshdev's"
    if not constraints.ca:
        return "has a certificate that is no CA"
    if cert.not_valid_after_utc <= datetime.now(UTC):
        return f"expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _create(folder: Path, mesh: str) -> None:
    """Make a CA in a private temporary folder beside `folder` and rename it into place; if
    another process did so first, keep theirs and drop ours."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkdtemp makes it 0700 whatever the umask; the rename keeps that mode.
    draft = Path(tempfile.mkdtemp(prefix=f".{CA_FOLDER}-", dir=folder.parent))
    try:
        cert, key = _new_root(mesh)
        _write(draft / KEY_FILE, key, 0o600)
        _write(draft / CERT_FILE, cert, 0o644)
        try:
            draft.rename(folder)
        except OSError as exc:
            # Another `up` of this mesh renamed its CA into place first: theirs is the CA.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise CAError(f"cannot create the mesh's CA in {folder}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(draft)


def _new_root(mesh: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshdev"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshdev {mesh} CA"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        # path_length 0: this root signs workload certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its mode (never briefly wider) and synced before the folder's rename
    # publishes it: a crash must not leave a CA folder with an empty key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
