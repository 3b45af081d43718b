"""`meshdev status`'s security fields: each pod's identity, its certificate's end and its
inbound mTLS mode, read from the sidecars (stand-ins on loopback serving Envoy's GET /certs,
given their certificates by a real control plane), and Envoy's /certs shape read alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from meshdev.common.workload_certs import spiffe_id
from meshdev.config import parse_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane
from meshdev.status import cert_expiry, gather_status, render_table
from tests.security.standins import StandIns

MESH = """
name: shop
services:
  frontend: {image: example/app, port: 8080}
  backend: {image: example/app, port: 8080}
ingress:
  port: 8000
  routes: [{name: web, match: {prefix: /}, to: frontend}]
"""
SECURED = MESH + "security: {mtls: STRICT}\npolicies:\n  backend: {mtls: PERMISSIVE}\n"
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _mesh(text: str) -> Mesh:
    return parse_mesh(text.encode(), "mesh.yaml")


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ControlPlane, StandIns]]:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    runtime = StandIns()
    control = ControlPlane(runtime, "s3cret", ready_timeout=10)
    report = await control.up(_mesh(request.param))
    assert report.ok, report.errors
    yield control, runtime
    await control.down()


def _rows(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in status["pods"]}


@pytest.mark.parametrize("running", [SECURED], indirect=True)
async def test_status_shows_each_pods_identity_certificate_end_and_mtls_mode(
    running: tuple[ControlPlane, StandIns],
) -> None:
    control, runtime = running
    # No session state: all of it comes from the sidecars.
    rows = _rows(await gather_status("shop", runtime, None))
    security = {n: (r["spiffe_id"], r["mtls"]) for n, r in rows.items()}
    assert security == {
        "ingress": (spiffe_id("shop", "ingress"), None),
        "frontend-0": (spiffe_id("shop", "frontend"), "STRICT"),
        "backend-0": (spiffe_id("shop", "backend"), "PERMISSIVE"),
    }
    for name, row in rows.items():
        expires = control.pods[name].cert_expires
        assert expires is not None
        assert row["cert_expires"] == expires.strftime(ISO)
        assert row["ready"] is True


@pytest.mark.parametrize("running", [SECURED], indirect=True)
async def test_status_reads_the_certificate_the_sidecar_holds_now(
    running: tuple[ControlPlane, StandIns],
) -> None:
    """A renewal shows at once, without the session writing anything."""
    control, runtime = running
    assert control.ca is not None
    sidecar = runtime.sidecars["backend-0"]
    sidecar.received.append(control.ca.issue(spiffe_id("shop", "backend"), 7 * 24 * 3600.0))
    row = _rows(await gather_status("shop", runtime, None))["backend-0"]
    leaf = x509.load_pem_x509_certificate(sidecar.received[-1].cert_chain.encode())
    assert row["cert_expires"] == leaf.not_valid_after_utc.strftime(ISO)
    recorded = control.pods["backend-0"].cert_expires
    assert recorded is not None
    assert row["cert_expires"] != recorded.strftime(ISO)


@pytest.mark.parametrize("running", [MESH], indirect=True)
async def test_a_mesh_without_security_shows_no_identity_and_asks_no_certificates(
    running: tuple[ControlPlane, StandIns],
) -> None:
    _, runtime = running
    status = await gather_status("shop", runtime, None)
    security = {n: (r["spiffe_id"], r["cert_expires"], r["mtls"]) for n, r in _rows(status).items()}
    assert security == {
        "ingress": (None, None, None),
        "frontend-0": (None, None, "DISABLE"),
        "backend-0": (None, None, "DISABLE"),
    }
    assert all(s.certs_asked == 0 for s in runtime.sidecars.values())
    assert "MTLS" not in render_table(status)


@pytest.mark.parametrize("running", [SECURED], indirect=True)
async def test_a_sidecar_without_a_certs_endpoint_keeps_the_rest_of_its_row(
    running: tuple[ControlPlane, StandIns],
) -> None:
    _, runtime = running
    runtime.sidecars["frontend-0"].serves_certs = False
    row = _rows(await gather_status("shop", runtime, None))["frontend-0"]
    assert row["cert_expires"] is None
    assert row["spiffe_id"] == spiffe_id("shop", "frontend")
    assert row["mtls"] == "STRICT"
    assert row["ready"] is True
    assert row["config_version"] == 1


@pytest.mark.parametrize("running", [SECURED], indirect=True)
async def test_the_table_of_a_secured_mesh_shows_mode_and_certificate_end(
    running: tuple[ControlPlane, StandIns],
) -> None:
    control, runtime = running
    table = render_table(await gather_status("shop", runtime, None)).splitlines()
    assert table[1].split()[-4:] == ["CONFIG", "MTLS", "CERT", "EXPIRES"]
    backend = next(line for line in table if line.startswith("backend-0 "))
    expires = control.pods["backend-0"].cert_expires
    assert expires is not None
    assert backend.split()[-2:] == ["PERMISSIVE", expires.strftime(ISO)]
    ingress = next(line for line in table if line.startswith("ingress "))
    assert ingress.split()[-2] == "-"


# -- Envoy's /certs, read alone -----------------------------------------------------------------

BACKEND = spiffe_id("shop", "backend")


def _details(uri: str, expiration: object) -> dict[str, object]:
    return {
        "path": "<inline>",
        "serial_number": "1f",
        "subject_alt_names": [{"uri": uri}],
        "days_until_expiration": "0",
        "valid_from": "2026-12-03T08:00:00Z",
        "expiration_time": expiration,
    }


def test_the_expiry_is_the_certificate_naming_the_pods_identity() -> None:
    answer = {
        "certificates": [
            {"ca_cert": [_details("", "2036-12-01T00:00:00Z")], "cert_chain": []},
            {
                "ca_cert": [],
                "cert_chain": [_details(spiffe_id("shop", "other"), "2026-12-03T10:00:00Z")],
            },
            {
                "ca_cert": [_details("", "2036-12-01T00:00:00Z")],
                "cert_chain": [
                    _details(BACKEND, "2026-12-04T08:00:00.250Z"),
                    _details("", "2030-01-01T00:00:00Z"),
                ],
            },
        ]
    }
    assert cert_expiry(answer, BACKEND) == "2026-12-04T08:00:00Z"


def test_an_expiry_with_an_offset_or_nanoseconds_is_given_in_utc() -> None:
    def one(expiration: str) -> dict[str, object]:
        return {"certificates": [{"cert_chain": [_details(BACKEND, expiration)]}]}

    assert cert_expiry(one("2026-12-04T10:30:00+02:00"), BACKEND) == "2026-12-04T08:30:00Z"
    assert cert_expiry(one("2026-12-04T08:30:00.123456789Z"), BACKEND) == "2026-12-04T08:30:00Z"


def test_without_a_certificate_naming_it_the_first_workload_certificate_counts() -> None:
    answer = {"certificates": [{"cert_chain": [_details("", "2026-12-05T00:00:00Z")]}]}
    assert cert_expiry(answer, BACKEND) == "2026-12-05T00:00:00Z"


@pytest.mark.parametrize(
    "answer",
    [
        {"certificates": []},
        {"certificates": [{"ca_cert": [_details("", "2036-12-01T00:00:00Z")], "cert_chain": []}]},
        {"certificates": [{"cert_chain": [_details(BACKEND, "tomorrow")]}]},
        {"certificates": [{"cert_chain": [_details(BACKEND, "2026-12-04T08:30:00")]}]},
        {"certificates": [{"cert_chain": [_details(BACKEND, 1795643347)]}]},
        {"certificates": "none"},
        ["not", "envoy"],
        None,
    ],
)
def test_an_answer_without_a_readable_workload_certificate_has_no_expiry(answer: object) -> None:
    assert cert_expiry(answer, BACKEND) is None
