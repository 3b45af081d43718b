"""A workload certificate is checked before any handshake uses it: every way it can be unusable
is refused with its reason, and what GET /certs shows comes from the certificate itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import SecretStr

from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.tls.identity import NO_CERT_YET, WorkloadIdentity
from meshdev.sidecar.tls.material import CertsRejected, load_material
from meshdev.testing.certs import TestCA, expired, spiffe, with_key_of
from tests.sidecar.helpers import Upstream
from tests.sidecar.tls.meshtls import CALLEE, callee_config, caller_config

ME = spiffe("me")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


def reasons(certs: WorkloadCerts, spiffe_id: str | None = ME) -> list[str]:
    with pytest.raises(CertsRejected) as caught:
        load_material(certs, spiffe_id)
    return caught.value.reasons


def test_a_good_certificate_gives_contexts_and_envoys_details(ca: TestCA) -> None:
    certs = ca.issue(ME)
    material = load_material(certs, ME)
    assert material.spiffe_id == ME
    assert material.trust_domain == "cluster.local"
    assert material.leaf.subject_alt_names == (("uri", ME),)
    shown: dict[str, Any] = material.to_json(datetime.now(UTC))
    (entry,) = shown["cert_chain"]
    assert entry["subject_alt_names"] == [{"uri": ME}]
    assert entry["path"] == "<inline>"
    # Issued for a day: Envoy counts whole days left, as a string (a uint64 in its JSON).
    assert entry["days_until_expiration"] == "0"
    assert entry["expiration_time"].endswith("Z")
    (root,) = shown["ca_cert"]
    assert int(root["serial_number"], 16) == ca.cert.serial_number
    assert root["days_until_expiration"] in ("29", "30")


def test_the_serial_number_is_the_leafs_in_whole_bytes_of_lower_case_hex(ca: TestCA) -> None:
    # As BoringSSL's BN_bn2hex writes it for Envoy: a leading zero nibble is kept.
    for _ in range(8):
        certs = ca.issue(ME)
        leaf = x509.load_pem_x509_certificate(certs.cert_chain.encode())
        shown = load_material(certs, ME).leaf.serial_number
        assert len(shown) % 2 == 0 and shown == shown.lower()
        assert int(shown, 16) == leaf.serial_number


def test_a_chain_through_an_intermediate_is_accepted(ca: TestCA) -> None:
    certs = ca.intermediate().issue(ME)
    assert certs.cert_chain.count("BEGIN CERTIFICATE") == 2
    assert load_material(certs, ME).spiffe_id == ME


def test_a_key_of_another_certificate_is_refused(ca: TestCA) -> None:
    (reason,) = reasons(with_key_of(ca.issue(ME), ca.issue(ME)))
    assert "private_key: does not match the certificate" in reason


def test_a_certificate_naming_another_workload_is_refused(ca: TestCA) -> None:
    (reason,) = reasons(ca.issue(spiffe("someone-else")))
    assert spiffe("someone-else") in reason and f"this sidecar is {ME}" in reason


def test_a_certificate_naming_no_spiffe_id_is_refused(ca: TestCA) -> None:
    (reason,) = reasons(ca.issue(None))
    assert "no SPIFFE ID" in reason


def test_a_chain_that_does_not_lead_to_the_ca_is_refused(ca: TestCA) -> None:
    foreign = TestCA.create("another CA").issue(ME)
    bent = WorkloadCerts(ca=ca.pem, cert_chain=foreign.cert_chain, private_key=foreign.private_key)
    (reason,) = reasons(bent)
    assert reason.startswith("cert_chain does not verify against ca:")
    assert "issuer" in reason


def test_an_expired_certificate_is_refused(ca: TestCA) -> None:
    (reason,) = reasons(expired(ca, ME))
    assert "certificate has expired" in reason


def test_a_certificate_not_yet_valid_is_refused(ca: TestCA) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    (reason,) = reasons(ca.issue(ME, not_before=soon, not_after=soon + timedelta(days=1)))
    assert "not yet valid" in reason


def test_a_certificate_only_for_servers_is_refused_as_a_client_would_be(ca: TestCA) -> None:
    # Mutual TLS needs both: it is a client to its upstreams and a server to its callers.
    certs = ca.issue(ME, extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,))
    assert reasons(certs) == [
        "cert_chain does not verify against ca: unsuitable certificate purpose"
    ]


def test_text_that_is_no_pem_is_refused_with_every_reason(ca: TestCA) -> None:
    bad = WorkloadCerts(ca="nope", cert_chain="nope", private_key=SecretStr("nope"))
    assert reasons(bad) == [
        "ca: no PEM certificate (-----BEGIN CERTIFICATE-----)",
        "cert_chain: no PEM certificate (-----BEGIN CERTIFICATE-----)",
        "private_key: not a PEM private key",
    ]


def test_a_sidecar_whose_config_names_no_identity_takes_no_certificate(ca: TestCA) -> None:
    (reason,) = reasons(ca.issue(ME), None)
    assert "names no spiffe_id" in reason


def test_no_reason_ever_quotes_the_key(ca: TestCA) -> None:
    certs = with_key_of(ca.issue(ME), ca.issue(ME))
    key = certs.private_key.get_secret_value()
    body = key.splitlines()[1]
    for reason in reasons(certs) + reasons(certs, spiffe("x")):
        assert body not in reason


def test_readiness_waits_for_a_certificate_when_the_config_asks_for_tls(ca: TestCA) -> None:
    app = Upstream("app", port=8080)
    identity = WorkloadIdentity()
    strict = callee_config(app, mtls="STRICT")
    assert identity.readiness(strict) == NO_CERT_YET
    # Only a cluster with tls asks for it too.
    assert identity.readiness(caller_config(9000)) == NO_CERT_YET
    # Plaintext only, or no identity at all: nothing to wait for.
    assert identity.readiness(callee_config(app, mtls="DISABLE")) is None
    assert identity.readiness(callee_config(app, mtls="STRICT", spiffe_id=None)) is None
    identity.install(ca.issue(CALLEE), CALLEE)
    assert identity.readiness(strict) is None
    renamed = callee_config(app, mtls="STRICT", spiffe_id=spiffe("renamed"))
    problem = identity.readiness(renamed)
    assert problem is not None and spiffe("renamed") in problem


def test_a_refused_certificate_leaves_the_one_in_use(ca: TestCA) -> None:
    identity = WorkloadIdentity()
    first = identity.install(ca.issue(ME), ME)
    with pytest.raises(CertsRejected):
        identity.install(expired(ca, ME), ME)
    assert identity.material is first
    shown = identity.envoy_certs()["certificates"]
    assert isinstance(shown, list) and len(shown) == 1
