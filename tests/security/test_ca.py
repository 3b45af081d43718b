"""The mesh's CA: its root and files, reuse across `up`s, the race of two `up`s, and the
workload certificates it issues, checked with `cryptography`'s own path validation and in a
real TLS handshake on loopback."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshdev.common.workload_certs import WorkloadCerts, spiffe_id
from meshdev.security import ca as mesh_ca
from meshdev.security.ca import CAError, MeshCA, leaf_validity, load, load_or_create

BACKEND = spiffe_id("demo", "backend")
FRONTEND = spiffe_id("demo", "frontend")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "demo"


@pytest.fixture
def authority(state: Path) -> MeshCA:
    return load_or_create(state, "demo")


@pytest.fixture
def no_umask() -> Iterator[None]:
    # The widest umask: whatever mode the files get is then the one meshdev asked for.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _verify(certs: WorkloadCerts, root_pem: str) -> x509.verification.VerifiedClient:
    store = Store([_cert(root_pem)])
    verifier = PolicyBuilder().store(store).build_client_verifier()
    return verifier.verify(_cert(certs.cert_chain), [])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the root ---------------------------------------------------------------------------------


def test_a_new_mesh_gets_a_self_signed_p256_root_named_for_it(authority: MeshCA) -> None:
    root = _cert(authority.cert_pem)
    root.verify_directly_issued_by(root)
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meshdev demo CA"
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.value.key_cert_sign
    assert not usage.value.digital_signature


def test_the_ca_files_are_owner_only_whatever_the_umask(state: Path, no_umask: None) -> None:
    load_or_create(state, "demo")
    folder = state / mesh_ca.CA_FOLDER
    assert _mode(folder) == 0o700
    assert _mode(folder / mesh_ca.KEY_FILE) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [mesh_ca.CERT_FILE, mesh_ca.KEY_FILE]


def test_a_later_up_reuses_the_ca_and_its_certificates_still_verify(
    state: Path, authority: MeshCA
) -> None:
    issued = authority.issue(BACKEND, 3600)
    again = load_or_create(state, "demo")
    assert again.cert_pem == authority.cert_pem
    assert _verify(issued, again.cert_pem).subjects == [x509.UniformResourceIdentifier(BACKEND)]
    assert _verify(again.issue(FRONTEND, 3600), authority.cert_pem).subjects is not None


def test_two_ups_racing_end_with_one_ca(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both have seen no CA and made a root before either renames its draft into place.
    both_made_one = threading.Barrier(2, timeout=10)
    make_root = mesh_ca._new_root

    def racing_root(mesh: str) -> tuple[bytes, bytes]:
        made = make_root(mesh)
        both_made_one.wait()
        return made

    monkeypatch.setattr(mesh_ca, "_new_root", racing_root)
    loaded: list[MeshCA] = []
    errors: list[BaseException] = []

    def up() -> None:
        try:
            loaded.append(load_or_create(state, "demo"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(loaded) == 2
    assert loaded[0].cert_pem == loaded[1].cert_pem
    # The losing draft (with its key) is gone: one CA folder, nothing else.
    assert [p.name for p in state.iterdir()] == [mesh_ca.CA_FOLDER]
    assert load(state / mesh_ca.CA_FOLDER).cert_pem == loaded[0].cert_pem


def test_a_ca_made_after_another_won_the_rename_is_dropped(state: Path, authority: MeshCA) -> None:
    mesh_ca._create(state / mesh_ca.CA_FOLDER, "demo")
    assert load_or_create(state, "demo").cert_pem == authority.cert_pem
    assert [p.name for p in state.iterdir()] == [mesh_ca.CA_FOLDER]


def test_a_key_others_can_read_is_refused_in_words(state: Path, authority: MeshCA) -> None:
    key = state / mesh_ca.CA_FOLDER / mesh_ca.KEY_FILE
    key.chmod(0o644)
    with pytest.raises(CAError, match=r"readable by others \(mode 0644\); `chmod 600 "):
        load_or_create(state, "demo")


def test_a_ca_folder_missing_its_key_is_refused_not_replaced(
    state: Path, authority: MeshCA
) -> None:
    folder = state / mesh_ca.CA_FOLDER
    (folder / mesh_ca.KEY_FILE).unlink()
    with pytest.raises(CAError, match=rf"cannot be read .*; remove {folder} to make a new CA"):
        load_or_create(state, "demo")
    # Replacing it silently would split the mesh between two roots.
    assert _cert((folder / mesh_ca.CERT_FILE).read_text()) == _cert(authority.cert_pem)


def test_a_key_of_another_ca_is_refused(state: Path, tmp_path: Path, authority: MeshCA) -> None:
    other = load_or_create(tmp_path / "other", "other")
    theirs = (other.folder / mesh_ca.KEY_FILE).read_bytes()
    (state / mesh_ca.CA_FOLDER / mesh_ca.KEY_FILE).write_bytes(theirs)
    with pytest.raises(CAError, match="a key that does not belong to its certificate"):
        load_or_create(state, "demo")


def test_the_ca_never_shows_its_key(authority: MeshCA) -> None:
    issued = authority.issue(BACKEND, 60)
    for text in (repr(authority), str(authority), repr(issued), str(issued)):
        assert "PRIVATE KEY" not in text
    assert "PRIVATE KEY" not in issued.model_dump_json()
    assert "BEGIN PRIVATE KEY" in issued.private_key.get_secret_value()


# -- workload certificates --------------------------------------------------------------------


def test_a_workload_certificate_chains_to_the_ca_and_names_only_its_spiffe_id(
    authority: MeshCA,
) -> None:
    issued = authority.issue(BACKEND, 3600)
    assert issued.ca == authority.cert_pem
    verified = _verify(issued, authority.cert_pem)
    assert verified.subjects == [x509.UniformResourceIdentifier(BACKEND)]
    leaf = _cert(issued.cert_chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty: the SAN is the identity
    assert list(san.value) == [x509.UniformResourceIdentifier(BACKEND)]
    assert len(leaf.subject) == 0


def test_a_workload_certificate_is_p256_for_both_ends_of_a_connection(
    authority: MeshCA,
) -> None:
    issued = authority.issue(BACKEND, 3600)
    leaf = _cert(issued.cert_chain)
    key = serialization.load_pem_private_key(
        issued.private_key.get_secret_value().encode(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf.public_key()
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_workload_certificate_lives_ttl_from_now_and_starts_a_minute_early(
    authority: MeshCA,
) -> None:
    # Certificate times have whole seconds: the bounds allow for the truncation.
    before = datetime.now(UTC).replace(microsecond=0)
    issued = authority.issue(BACKEND, 2 * 3600)
    after = datetime.now(UTC)
    starts, ends = leaf_validity(issued)
    assert before - timedelta(minutes=1) <= starts <= after - timedelta(minutes=1)
    assert before + timedelta(hours=2) <= ends <= after + timedelta(hours=2)


def test_a_workload_certificate_never_outlives_the_ca(authority: MeshCA) -> None:
    issued = authority.issue(BACKEND, 100 * 365 * 24 * 3600.0)
    assert leaf_validity(issued)[1] == authority.expires


def test_every_issue_has_a_fresh_key_and_serial(authority: MeshCA) -> None:
    first, second = authority.issue(BACKEND, 60), authority.issue(BACKEND, 60)
    assert first.private_key.get_secret_value() != second.private_key.get_secret_value()
    a, b = _cert(first.cert_chain), _cert(second.cert_chain)
    assert a.serial_number != b.serial_number
    assert a.public_key() != b.public_key()


def test_a_certificate_of_another_ca_does_not_verify(authority: MeshCA, tmp_path: Path) -> None:
    stranger = load_or_create(tmp_path / "other", "demo")
    # Same mesh name, same subject: only the key tells them apart.
    assert stranger.subject == authority.subject
    with pytest.raises(VerificationError):
        _verify(stranger.issue(BACKEND, 60), authority.cert_pem)


def test_an_issue_needs_a_spiffe_id_and_a_positive_ttl(authority: MeshCA) -> None:
    with pytest.raises(ValueError, match=r"not a SPIFFE ID: 'cluster\.local/ns/demo/sa/x'"):
        authority.issue("cluster.local/ns/demo/sa/x", 60)
    with pytest.raises(ValueError, match="ttl must be positive"):
        authority.issue(BACKEND, 0)


async def test_two_workload_certificates_make_a_mutual_tls_handshake(
    authority: MeshCA, tmp_path: Path
) -> None:
    """What the sidecars do with them: Python's ssl accepts the empty subject and the critical
    URI SAN, and each side sees the other's SPIFFE ID."""

    def context(purpose: ssl.Purpose, certs: WorkloadCerts, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(purpose, cadata=certs.ca)
        ctx.check_hostname = False  # SPIFFE IDs are checked by URI SAN, not host name
        ctx.verify_mode = ssl.CERT_REQUIRED
        chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        chain.write_text(certs.cert_chain)
        key.write_text(certs.private_key.get_secret_value())
        ctx.load_cert_chain(chain, key)
        return ctx

    server_ctx = context(ssl.Purpose.CLIENT_AUTH, authority.issue(BACKEND, 60), "backend")
    client_ctx = context(ssl.Purpose.SERVER_AUTH, authority.issue(FRONTEND, 60), "frontend")
    seen: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(writer.get_extra_info("peercert"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        assert await reader.read() == b"ok"
        server_cert = writer.get_extra_info("peercert")
        writer.close()
        client_cert = await asyncio.wait_for(seen, 10)
    assert ("URI", BACKEND) in server_cert["subjectAltName"]
    assert isinstance(client_cert, dict)
    assert ("URI", FRONTEND) in client_cert["subjectAltName"]
