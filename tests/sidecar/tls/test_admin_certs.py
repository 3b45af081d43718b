"""The workload certificate on the admin API: POST /certs (with the token) checks and installs
it, GET /certs shows it in Envoy's shape, /ready waits for it, and the key is never shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from cryptography import x509

from meshdev.common.workload_certs import CERTS_PATH, WorkloadCerts
from meshdev.sidecar.main import Sidecar
from meshdev.testing.certs import TestCA, spiffe, with_key_of
from tests.sidecar.helpers import sidecar, stat, upstreams
from tests.sidecar.tls.meshtls import CALLEE, callee_config
from tests.support import LOCALHOST

AUTH = {"x-meshdev-token": "test-token"}


def body_of(certs: WorkloadCerts) -> str:
    """The JSON the control plane posts (the key in clear, as it travels on loopback)."""
    return certs.model_dump_json(context=None, round_trip=True).replace(
        '"**********"', f'"{_json_escape(certs.private_key.get_secret_value())}"'
    )


def _json_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def hex_serial(number: int) -> str:
    """A serial as Envoy shows it: BoringSSL's BN_bn2hex, whole bytes in lower-case hex."""
    text = format(number, "x")
    return "0" + text if len(text) % 2 else text


def leaf_serial(certs: WorkloadCerts) -> str:
    return hex_serial(x509.load_pem_x509_certificate(certs.cert_chain.encode()).serial_number)


@asynccontextmanager
async def admin(mtls: str = "STRICT") -> AsyncIterator[tuple[Sidecar, aiohttp.ClientSession]]:
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls=mtls)) as sc:
        base = f"http://{LOCALHOST}:{sc.admin_port}"
        async with aiohttp.ClientSession(base_url=base) as session:
            yield sc, session


async def post(session: aiohttp.ClientSession, data: str, **kw: Any) -> tuple[int, Any]:
    headers = kw.pop("headers", AUTH)
    async with session.post(CERTS_PATH, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_ready_waits_for_the_certificate_that_post_certs_installs() -> None:
    ca = TestCA.create()
    async with admin() as (sc, session):
        async with session.get("/ready") as resp:
            assert resp.status == 503
            assert await resp.json() == {
                "error": "no workload certificate yet",
                "state": "INITIALIZING",
            }
        async with session.get(CERTS_PATH) as resp:
            assert await resp.json() == {"certificates": []}
        certs = ca.issue(CALLEE)
        status, answer = await post(session, body_of(certs))
        assert status == 200, answer
        (entry,) = answer["certificates"]
        assert entry["cert_chain"][0]["serial_number"] == leaf_serial(certs)
        async with session.get("/ready") as resp:
            assert (resp.status, await resp.text()) == (200, "LIVE\n")
        assert stat(sc, "certs.update_success") == 1


async def test_a_plaintext_mesh_is_ready_without_a_certificate() -> None:
    async with admin(mtls="DISABLE") as (_, session), session.get("/ready") as resp:
        assert resp.status == 200


async def test_get_certs_answers_envoys_shape_and_a_new_post_replaces_it() -> None:
    ca = TestCA.create()
    async with admin() as (_, session):
        first, second = ca.issue(CALLEE), ca.issue(CALLEE)
        assert (await post(session, body_of(first)))[0] == 200
        assert (await post(session, body_of(second)))[0] == 200
        async with session.get(CERTS_PATH) as resp:
            shown = await resp.json()
        (entry,) = shown["certificates"]
        (root,) = entry["ca_cert"]
        (leaf,) = entry["cert_chain"]
        assert set(leaf) == {
            "path",
            "serial_number",
            "subject_alt_names",
            "days_until_expiration",
            "valid_from",
            "expiration_time",
        }
        assert leaf["serial_number"] == leaf_serial(second)
        assert leaf["subject_alt_names"] == [{"uri": CALLEE}]
        assert root["serial_number"] == hex_serial(ca.cert.serial_number)
        assert root["subject_alt_names"] == []
        async with session.head(CERTS_PATH) as resp:
            assert resp.status == 200


async def test_post_certs_needs_the_token() -> None:
    ca = TestCA.create()
    async with admin() as (sc, session):
        body = body_of(ca.issue(CALLEE))
        assert (await post(session, body, headers={}))[0] == 401
        assert (await post(session, body, headers={"x-meshdev-token": "guess"}))[0] == 403
        assert sc.plane.tls.material is None


async def test_unusable_certificates_are_refused_with_reasons_and_the_old_ones_stay() -> None:
    ca = TestCA.create()
    async with admin() as (sc, session):
        good = ca.issue(CALLEE)
        assert (await post(session, body_of(good)))[0] == 200
        foreign = TestCA.create("other").issue(CALLEE)
        cases = {
            "private_key: does not match": with_key_of(ca.issue(CALLEE), ca.issue(CALLEE)),
            "but this sidecar is": ca.issue(spiffe("an-impostor")),
            "does not verify against ca": WorkloadCerts(
                ca=ca.pem,
                cert_chain=foreign.cert_chain,
                private_key=foreign.private_key,
            ),
        }
        for expected, certs in cases.items():
            status, answer = await post(session, body_of(certs))
            assert status == 400
            assert answer["error"] == "certificates rejected"
            assert any(expected in r for r in answer["reasons"]), answer
        status, answer = await post(session, '{"ca": "x"}')
        assert status == 400
        assert {r.split(":")[0] for r in answer["reasons"]} == {"cert_chain", "private_key"}
        assert (await post(session, "not json"))[0] == 400
        assert stat(sc, "certs.update_rejected") == 5
        async with session.get(CERTS_PATH) as resp:
            shown = await resp.json()
        assert shown["certificates"][0]["cert_chain"][0]["serial_number"] == leaf_serial(good)


async def test_the_key_is_never_shown() -> None:
    ca = TestCA.create()
    async with admin() as (_, session):
        certs = ca.issue(CALLEE)
        key_body = certs.private_key.get_secret_value().splitlines()[1]
        texts = [(await post(session, body_of(certs)))[1].__repr__()]
        bad = with_key_of(ca.issue(CALLEE), certs)
        texts.append((await post(session, body_of(bad)))[1].__repr__())
        for path in (CERTS_PATH, "/config_dump", "/stats", "/server_info", "/clusters"):
            async with session.get(path) as resp:
                texts.append(await resp.text())
        assert all(key_body not in text for text in texts)
        assert all("PRIVATE KEY" not in text for text in texts)
