"""The control plane gives every pod of a mesh with a security section its certificate, from
the mesh's CA, as soon as its sidecar's admin API answers, and renews it at half its life.

The pods are stand-in sidecars on real loopback sockets (meshdev.testing.certs_sidecar): they
take POST /certs with the token, report not ready until they have certificates, and start
listening a moment after the runtime says the pod started, as a real sidecar does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from meshdev.common.workload_certs import WorkloadCerts, spiffe_id
from meshdev.config import parse_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, Pod
from meshdev.runtime.base import RuntimeFailure
from meshdev.security import ca as mesh_ca
from meshdev.testing.certs_sidecar import CertsSidecar
from tests.security.standins import StandIns
from tests.support import wait_until

MESH = """
name: certs
services:
  frontend: {image: example/app, port: 8080}
  backend: {image: example/app, port: 8080, replicas: 2}
ingress:
  port: 8000
  routes: [{name: web, match: {prefix: /}, to: frontend}]
"""
SECURITY = "security: {mtls: STRICT}\n"


def mesh(*, security: bool = True, backends: int = 2) -> Mesh:
    text = MESH.replace("replicas: 2", f"replicas: {backends}")
    return parse_mesh((text + (SECURITY if security else "")).encode(), "mesh.yaml")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
async def runtime() -> AsyncIterator[StandIns]:
    standins = StandIns()
    yield standins
    await standins.teardown()


def control_plane(
    runtime: StandIns,
    said: list[str],
    *,
    cert_ttl: float | None = None,
    cert_retry: tuple[float, float] = (0.5, 30.0),
) -> ControlPlane:
    return ControlPlane(
        runtime,
        "s3cret",
        progress=said.append,
        ready_timeout=10,
        cert_ttl=cert_ttl,
        cert_retry=cert_retry,
    )


def _leaf(certs: WorkloadCerts) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certs.cert_chain.encode())


def _identity(certs: WorkloadCerts, root_pem: str) -> list[x509.GeneralName]:
    """The certificate's subjects once its path to `root_pem` is verified."""
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
    subjects = verifier.verify(_leaf(certs), []).subjects
    assert subjects is not None
    return list(subjects)


def _ca_pem(state: Path) -> str:
    return (state / "certs" / mesh_ca.CA_FOLDER / mesh_ca.CERT_FILE).read_text()


def _expires(certs: WorkloadCerts) -> datetime:
    return _leaf(certs).not_valid_after_utc


async def test_up_gives_every_pod_a_certificate_naming_its_identity_before_it_is_ready(
    state: Path, runtime: StandIns
) -> None:
    said: list[str] = []
    control = control_plane(runtime, said)
    report = await control.up(mesh())
    assert report.ok, report.errors
    root = _ca_pem(state)
    assert said.count(f"made the mesh's CA in {state / 'certs' / 'ca'}") == 1
    expected = {
        "ingress": spiffe_id("certs", "ingress"),
        "frontend-0": spiffe_id("certs", "frontend"),
        "backend-0": spiffe_id("certs", "backend"),
        "backend-1": spiffe_id("certs", "backend"),
    }
    assert {name: s.config.spiffe_id for name, s in runtime.sidecars.items()} == expected
    for name, sidecar in runtime.sidecars.items():
        (certs,) = sidecar.received
        assert _identity(certs, root) == [x509.UniformResourceIdentifier(expected[name])]
        pod = control.pods[name]
        assert pod.spiffe_id == expected[name]
        assert pod.cert_expires == _expires(certs)
    # One identity, but a certificate (and key) of its own for each pod.
    keys = {s.received[0].private_key.get_secret_value() for s in runtime.sidecars.values()}
    assert len(keys) == len(runtime.sidecars)
    recorded = {p["name"]: p for p in control.snapshot()["pods"]}
    backend = recorded["backend-1"]
    assert backend["spiffe_id"] == expected["backend-1"]
    assert backend["cert_expires"] == _expires(runtime.sidecars["backend-1"].received[0]).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    await control.down()


async def test_a_mesh_without_security_makes_no_ca_and_pushes_no_certificates(
    state: Path, runtime: StandIns
) -> None:
    control = control_plane(runtime, [])
    report = await control.up(mesh(security=False))
    assert report.ok, report.errors
    assert all(s.attempts == 0 for s in runtime.sidecars.values())
    assert not (state / "certs" / mesh_ca.CA_FOLDER).exists()
    assert {p["spiffe_id"] for p in control.snapshot()["pods"]} == {None}
    assert {p["cert_expires"] for p in control.snapshot()["pods"]} == {None}
    await control.down()


async def test_the_next_up_of_the_mesh_issues_from_the_same_ca(
    state: Path, runtime: StandIns
) -> None:
    first = control_plane(runtime, [])
    await first.up(mesh())
    root = _ca_pem(state)
    await first.down()
    again = control_plane(runtime, [])
    report = await again.up(mesh())
    assert report.ok, report.errors
    certs = runtime.sidecars["frontend-0"].received[0]
    assert _identity(certs, root) == [
        x509.UniformResourceIdentifier(spiffe_id("certs", "frontend"))
    ]
    assert certs.ca == root
    await again.down()


async def test_a_pod_added_by_a_reload_gets_its_certificate(state: Path, runtime: StandIns) -> None:
    control = control_plane(runtime, [])
    await control.up(mesh())
    before = {name: len(s.received) for name, s in runtime.sidecars.items()}
    report = await control.apply(mesh(backends=3))
    assert report.ok, report.errors
    assert report.started == ("backend-2",)
    (certs,) = runtime.sidecars["backend-2"].received
    assert _identity(certs, _ca_pem(state)) == [
        x509.UniformResourceIdentifier(spiffe_id("certs", "backend"))
    ]
    assert control.pods["backend-2"].cert_expires == _expires(certs)
    # The pods that were there keep the certificates they have.
    assert {name: len(runtime.sidecars[name].received) for name in before} == before
    await control.down()


async def test_a_reload_that_adds_security_delivers_certificates_right_after_the_config(
    state: Path, runtime: StandIns
) -> None:
    """A sidecar takes only a certificate for the identity its config names (as the real one
    does), so the config that names it goes first and its certificate straight after; the
    configs that ask for TLS (the rounds through PERMISSIVE, meshdev/security/staging.py)
    come once it has it."""
    order: list[tuple[str, int]] = []
    control = control_plane(runtime, [])
    await control.up(mesh(security=False))
    for name, sidecar in runtime.sidecars.items():
        assert sidecar.config.spiffe_id is None

        def config_seen(name: str = name, sidecar: CertsSidecar = sidecar) -> None:
            order.append((name, len(sidecar.received)))

        sidecar.on_config = config_seen
    report = await control.apply(mesh())
    assert report.ok, report.errors
    assert report.started == ()
    for name in runtime.sidecars:
        assert [seen for who, seen in order if who == name] == [0, 1, 1]
    for name, sidecar in runtime.sidecars.items():
        assert sidecar.config.spiffe_id is not None
        (certs,) = sidecar.received
        assert _identity(certs, _ca_pem(state)) == [
            x509.UniformResourceIdentifier(sidecar.config.spiffe_id)
        ]
        assert control.pods[name].spiffe_id == sidecar.config.spiffe_id
        assert control.pods[name].rotation is not None
    await control.down()


async def test_a_certificate_a_reload_could_not_deliver_is_retried_in_the_background(
    state: Path, runtime: StandIns
) -> None:
    said: list[str] = []
    control = control_plane(runtime, said, cert_retry=(0.01, 0.05))
    await control.up(mesh(security=False))
    sidecar = runtime.sidecars["backend-1"]
    sidecar.failures_left = 3
    report = await control.apply(mesh())
    assert report.errors == (
        "backend-1: certificates rejected (500): not now; its config v2 asks for TLS: "
        "retrying the certificate",
    )
    await wait_until(lambda: sidecar.received, "backend-1's certificate, retried")
    await wait_until(
        lambda: "backend-1: certificate delivered after 4 tries" in said,
        lambda: f"the retry's success in {said}",
    )
    # The reload's report said the failure: the retries do not say it again.
    assert not any("failed" in line for line in said)
    await wait_until(lambda: control.pods["backend-1"].cert_expires, "backend-1's record")
    await control.down()


async def test_certificates_are_renewed_at_half_their_life_with_a_fresh_key(
    state: Path, runtime: StandIns
) -> None:
    # Two seconds: certificate times have whole seconds, and each renewal must end later.
    control = control_plane(runtime, [], cert_ttl=2.0)
    await control.up(mesh())
    sidecar = runtime.sidecars["backend-0"]
    pod = control.pods["backend-0"]

    def renewed_twice() -> bool:
        certs = sidecar.certs
        return (
            len(sidecar.received) >= 3
            and certs is not None
            and (pod.cert_expires == _expires(certs))
        )

    await wait_until(renewed_twice, "two renewals of backend-0's certificate")
    root = _ca_pem(state)
    identity = [x509.UniformResourceIdentifier(spiffe_id("certs", "backend"))]
    assert all(_identity(c, root) == identity for c in sidecar.received)
    assert len({_leaf(c).serial_number for c in sidecar.received}) == len(sidecar.received)
    assert len({c.private_key.get_secret_value() for c in sidecar.received}) == len(
        sidecar.received
    )
    # Each renewal ends later than the one before.
    ends = [_expires(c) for c in sidecar.received]
    assert ends == sorted(ends)
    assert ends[0] < ends[-1]
    await control.down()


async def test_a_failed_renewal_is_retried_and_said_once(state: Path, runtime: StandIns) -> None:
    said: list[str] = []
    control = control_plane(runtime, said, cert_ttl=1.0, cert_retry=(0.01, 0.05))
    await control.up(mesh())
    sidecar = runtime.sidecars["frontend-0"]
    sidecar.failures_left = 5
    await wait_until(lambda: len(sidecar.received) >= 2, "frontend-0's renewed certificate")
    await wait_until(
        lambda: any(line.startswith("frontend-0: certificate renewed after") for line in said),
        lambda: f"the renewal's success in {said}",
    )
    failed = [line for line in said if line.startswith("frontend-0: certificate renewal failed")]
    assert failed == [
        "frontend-0: certificate renewal failed, retrying: frontend-0: certificates rejected "
        "(500): not now"
    ]
    assert "frontend-0: certificate renewed after 6 tries" in said
    assert sidecar.attempts >= 7  # the first delivery, five refused, one taken
    assert not any("stopped" in line for line in said)
    await control.down()


async def test_a_sidecar_that_refuses_its_certificates_fails_the_start_in_words(
    state: Path, runtime: StandIns
) -> None:
    def refusing(sidecar: CertsSidecar) -> None:
        if sidecar.config.node == "backend-1":
            sidecar.failures_left, sidecar.fail_status = 1000, 400

    runtime.prepare_sidecar = refusing
    control = control_plane(runtime, [])
    with pytest.raises(RuntimeFailure, match=r"^backend-1: certificates rejected \(400\): not now"):
        await control.up(mesh())
    # That start's pods are stopped again, and nothing renews certificates of pods gone.
    assert sorted(runtime.stopped) == ["backend-0", "backend-1", "frontend-0", "ingress"]
    assert control.pods == {}


async def test_a_pod_that_exits_while_starting_fails_with_the_runtimes_words(
    state: Path,
) -> None:
    """The certificate push waits for an admin API that never comes; the runtime's readiness
    wait, which runs beside it, sees the exit and says why."""
    runtime = StandIns(exits_at_start=True)
    control = control_plane(runtime, [])
    with pytest.raises(RuntimeFailure, match=r"^pod \S+ exited while starting \(code 1\)$"):
        await asyncio.wait_for(control.up(mesh()), 20)


async def test_stopping_the_mesh_stops_every_renewal(state: Path, runtime: StandIns) -> None:
    control = control_plane(runtime, [])
    await control.up(mesh())
    pods: list[Pod] = list(control.pods.values())
    renewals = [p.rotation for p in pods]
    assert all(task is not None and not task.done() for task in renewals)
    await control.down()
    for task in renewals:
        assert task is not None
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
    assert all(p.rotation is None and p.cert_expires is None for p in pods)


async def test_a_ca_that_cannot_be_used_stops_up_before_any_pod_starts(
    state: Path, runtime: StandIns
) -> None:
    mesh_ca.load_or_create(state / "certs", "certs")
    (state / "certs" / mesh_ca.CA_FOLDER / mesh_ca.KEY_FILE).chmod(0o644)
    control = control_plane(runtime, [])
    with pytest.raises(RuntimeFailure, match=r"ca-key\.pem is readable by others \(mode 0644\)"):
        await control.up(mesh())
    assert runtime.sidecars == {}


async def test_a_reload_that_adds_security_with_an_unusable_ca_keeps_serving(
    state: Path, runtime: StandIns
) -> None:
    control = control_plane(runtime, [])
    await control.up(mesh(security=False))
    mesh_ca.load_or_create(state / "certs", "certs")
    (state / "certs" / mesh_ca.CA_FOLDER / mesh_ca.KEY_FILE).chmod(0o644)
    report = await control.apply(mesh())
    assert not report.ok
    assert len(report.errors) == 1
    assert "is readable by others" in report.errors[0]
    assert control.version == 1
    assert all(s.config.spiffe_id is None and s.attempts == 0 for s in runtime.sidecars.values())
    await control.down()


async def test_a_reload_that_removes_security_goes_back_through_permissive(
    state: Path, runtime: StandIns
) -> None:
    """Pushed at once, a callee already on plaintext refuses a caller still sending TLS: first
    every callee takes both (with the identity it has), then callers send plaintext, then the
    saved config, which forgets the identity (meshdev/security/staging.py)."""
    seen: dict[str, list[tuple[str, bool, bool]]] = {}
    control = control_plane(runtime, [])
    await control.up(mesh())
    for name, sidecar in runtime.sidecars.items():

        def config_seen(name: str = name, sidecar: CertsSidecar = sidecar) -> None:
            cfg = sidecar.config
            inbound = [lst.mtls for lst in cfg.listeners if lst.kind == "inbound"]
            seen.setdefault(name, []).append(
                (
                    inbound[0] if inbound else "-",
                    any(c.tls is not None for c in cfg.clusters),
                    cfg.spiffe_id is not None,
                )
            )

        sidecar.on_config = config_seen
    report = await control.apply(mesh(security=False))
    assert report.ok, report.errors
    # Every pod calls the others (each sidecar has every cluster): TLS until the second round.
    for name, configs in seen.items():
        inbound = "-" if name.startswith("ingress") else "PERMISSIVE"
        assert configs == [
            (inbound, True, True),
            (inbound, False, True),
            ("-" if name.startswith("ingress") else "DISABLE", False, False),
        ], name
    assert len(seen) == 4
    assert all(control.pods[name].spiffe_id is None for name in runtime.sidecars)
    await control.down()
