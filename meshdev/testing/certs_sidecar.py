"""A stand-in for a sidecar's admin API as far as workload certificates go, on a real loopback
socket: POST /certs (with the admin token, a WorkloadCerts body), GET /ready answering 503
until certificates arrived when its config names an identity, GET /certs in Envoy's shape,
GET /config_dump and POST /config.

The control plane's delivery and rotation, and `meshdev status`, are tested against it, over
HTTP as they talk to real sidecars. Its socket is bound at once but listens only from
`listen()`, so a client meets what it meets while a real sidecar starts: a refused connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from cryptography import x509
from pydantic import ValidationError

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.common.workload_certs import CERTS_PATH, WorkloadCerts

TOKEN_HEADER = "x-meshdev-token"


class CertsSidecar:
    def __init__(self, config: SidecarConfig, token: str) -> None:
        self.config = config
        self.token = token
        # Every set of certificates it took, in order.
        self.received: list[WorkloadCerts] = []
        # The next this many POST /certs answer `fail_status` (a sidecar in trouble).
        self.failures_left = 0
        self.fail_status = 500
        # Every POST /certs, taken or not.
        self.attempts = 0
        # GET /certs asked; False: it has no such endpoint (404), as an older sidecar.
        self.certs_asked = 0
        self.serves_certs = True
        # Called after each POST /config it took.
        self.on_config: Callable[[], None] = lambda: None
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        app = web.Application()
        app.router.add_post(CERTS_PATH, self._post_certs)
        app.router.add_get(CERTS_PATH, self._get_certs)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/config_dump", self._config_dump)
        app.router.add_post("/config", self._post_config)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def certs(self) -> WorkloadCerts | None:
        return self.received[-1] if self.received else None

    async def listen(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def close(self) -> None:
        await self._runner.cleanup()
        self._sock.close()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get(TOKEN_HEADER) == self.token

    async def _post_certs(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if not self._authorized(request):
            return web.Response(status=403, text="admin token required\n")
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=self.fail_status, text="not now\n")
        try:
            certs = WorkloadCerts.model_validate_json(await request.read())
        except ValidationError as exc:
            return _rejected(f"bad certificates: {exc}")
        # As the real sidecar: only a certificate for the identity its config names.
        named = _pems(certs.cert_chain)[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        uris = named.value.get_values_for_type(x509.UniformResourceIdentifier)
        if self.config.spiffe_id is None:
            return _rejected("the config names no spiffe_id")
        if uris != [self.config.spiffe_id]:
            return _rejected(f"the certificate names {uris}, not {self.config.spiffe_id}")
        self.received.append(certs)
        return web.json_response({"ok": True})

    async def _get_certs(self, request: web.Request) -> web.Response:
        self.certs_asked += 1
        if not self.serves_certs:
            return web.Response(status=404, text="invalid path\n")
        return web.json_response(envoy_certs(self.certs))

    async def _ready(self, request: web.Request) -> web.Response:
        if self.config.spiffe_id is not None and not self.received:
            return web.Response(status=503, text="PRE_INITIALIZING: no certificates yet\n")
        return web.Response(text="LIVE\n")

    async def _config_dump(self, request: web.Request) -> web.Response:
        config = self.config
        body = {
            "version": config.version,
            "hash": config.content_hash(),
            "config": config.model_dump(mode="json"),
        }
        return web.json_response(body)

    async def _post_config(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=403, text="admin token required\n")
        self.config = SidecarConfig.model_validate(json.loads(await request.read()))
        self.on_config()
        return web.json_response({"version": self.config.version})


def _rejected(reason: str) -> web.Response:
    return web.json_response({"error": "certificates rejected", "reasons": [reason]}, status=400)


def envoy_certs(certs: WorkloadCerts | None) -> dict[str, object]:
    """Envoy's GET /certs answer (admin.v3.Certificates) for certificates given inline."""
    if certs is None:
        return {"certificates": []}
    return {
        "certificates": [
            {
                "ca_cert": [_details(c) for c in _pems(certs.ca)],
                "cert_chain": [_details(c) for c in _pems(certs.cert_chain)],
            }
        ]
    }


def _pems(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def _details(cert: x509.Certificate) -> dict[str, object]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: list[dict[str, str]] = []
    else:
        names = [{"uri": u} for u in sans.get_values_for_type(x509.UniformResourceIdentifier)]
        names += [{"dns": d} for d in sans.get_values_for_type(x509.DNSName)]
    left = cert.not_valid_after_utc - datetime.now(UTC)
    return {
        "path": "<inline>",
        "serial_number": format(cert.serial_number, "x"),
        "subject_alt_names": names,
        # proto3 JSON writes a uint64 as a string.
        "days_until_expiration": str(max(left.days, 0)),
        "valid_from": _timestamp(cert.not_valid_before_utc),
        "expiration_time": _timestamp(cert.not_valid_after_utc),
    }


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
