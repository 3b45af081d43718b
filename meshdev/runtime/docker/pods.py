"""What a pod's two containers are made of, computed without talking to the engine: images,
commands, environment, labels, published ports, and the sidecar's config as an archive.

The sidecar owns the pod's network namespace: it joins the mesh network and publishes its admin
port and inbound listener on the host's loopback (random host ports), the gateway also its
ingress port. The app joins the sidecar's namespace (`network_mode=container:<sidecar>`), so it
listens on 127.0.0.1 and shares the sidecar's /etc/hosts.

Before the app starts, a one-shot capture container (the proxy image as root, the pod's only
container with NET_ADMIN: Istio's istio-init) joins the namespace too, redirects the pod's TCP
to the sidecar with iptables and writes every service's virtual address into the shared hosts
file; the app then reaches `http://backend` or `redis:6379` with any client, no HTTP_PROXY.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from meshdev.common import sidecar_config as sc
from meshdev.plan import HOSTS_FILE, Placement, PodSpec, app_env
from meshdev.runtime.docker.names import (
    APP_MOUNT,
    PROXY_UID,
    capture_name,
    container_name,
    pod_labels,
)

LOOPBACK = "127.0.0.1"
ANY = "0.0.0.0"
TOKEN_ENV = "MESHDEV_ADMIN_TOKEN"
CONFIG_ENV = "MESHDEV_SIDECAR_CONFIG"
# A port binding: (host ip,) for a random host port, (host ip, port) for a fixed one.
Binding = tuple[str] | tuple[str, int]


def placement(
    pod: str, address: str = "", *, captured: bool = True, host_address: str | None = None
) -> Placement:
    """Inside a container every listener may bind all interfaces; the app and the outbound
    listener share the pod's loopback; the pod's traffic is captured (unless `up
    --no-capture`: then its app uses HTTP_PROXY, as on the process runtime); the host is the
    mesh network's gateway (`host_address`, once the network exists)."""
    return Placement(
        pod,
        address=address,
        listen=ANY,
        local=LOOPBACK,
        public=ANY,
        captured=captured,
        host_address=host_address,
    )


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    name: str
    image: str
    labels: dict[str, str]
    environment: dict[str, str]
    command: list[str] | None = None
    hostname: str | None = None
    working_dir: str | None = None
    ports: dict[int | str, Binding] = field(default_factory=dict)
    binds: dict[str, Mapping[str, str]] | None = None
    alias: str | None = None  # a DNS name on the mesh network (the pod's name)
    init: bool = False
    entrypoint: list[str] | None = None
    user: str | None = None
    cap_add: tuple[str, ...] = ()

    def create_args(
        self, api: docker.APIClient, *, network: str | None = None, join: str | None = None
    ) -> dict[str, Any]:
        """Arguments of APIClient.create_container: on `network`, or in `join`'s namespace."""
        host_config = api.create_host_config(
            port_bindings=dict(self.ports) or None,
            binds=self.binds,
            network_mode=f"container:{join}" if join else None,
            init=self.init or None,
            cap_add=list(self.cap_add) or None,
        )
        args: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "labels": self.labels,
            "environment": self.environment,
            "command": self.command,
            "entrypoint": self.entrypoint,
            "user": self.user,
            "hostname": self.hostname,
            "working_dir": self.working_dir,
            "ports": list(self.ports) or None,
            "host_config": host_config,
            # HTTP_PROXY is meshdev's to set (the sidecar's outbound listener), never the
            # proxies of the user's docker config.
            "use_config_proxy": False,
        }
        if network is not None:
            endpoint = api.create_endpoint_config(aliases=[self.alias] if self.alias else None)
            args["networking_config"] = api.create_networking_config(
                {network: endpoint}  # type: ignore[arg-type]  # the stub is wrong: it's a dict
            )
        return args


def config_hash(config: bytes) -> str:
    try:
        return sc.SidecarConfig.model_validate_json(config).content_hash()
    except ValueError:
        # The sidecar will reject this config and say why; the label only tells configs apart.
        return hashlib.sha256(config).hexdigest()[:16]


def sidecar_plan(
    mesh: str,
    spec: PodSpec,
    image: str,
    token: str,
    config: bytes,
    ingress_port: int | None,
) -> ContainerPlan:
    ports: dict[int | str, Binding] = {sc.ADMIN_PORT: (LOOPBACK,)}
    if spec.is_ingress:
        assert ingress_port is not None
        ports[ingress_port] = (LOOPBACK, ingress_port)
    else:
        # Published too, so the host can poke one replica (and health checks go through it).
        ports[sc.INBOUND_PORT] = (LOOPBACK,)
    return ContainerPlan(
        name=container_name(mesh, spec.name, "sidecar"),
        image=image,
        labels=pod_labels(
            mesh, spec, "ingress" if spec.is_ingress else "sidecar", config_hash(config)
        ),
        # The first config travels in the environment: copying a file into the container
        # would cost an engine round trip per pod (~0.2 s under load).
        environment={TOKEN_ENV: token, CONFIG_ENV: config.decode()},
        command=["--config", f"env:{CONFIG_ENV}"],
        hostname=spec.name,
        ports=ports,
        alias=spec.name,
    )


def capture_plan(mesh: str, spec: PodSpec, image: str, hosts: Mapping[str, str]) -> ContainerPlan:
    """The pod's one-shot capture step (module doc): `meshdev capture-init` as root with
    NET_ADMIN, in the sidecar's namespace; `hosts`: every service name and its address."""
    inbound_excluded = [sc.ADMIN_PORT, sc.INBOUND_PORT, *spec.excluded_ports]
    command = [
        "capture-init",
        f"--proxy-uid={PROXY_UID}",
        f"--outbound-port={sc.OUTBOUND_PORT}",
        f"--inbound-port={sc.INBOUND_PORT}",
        f"--exclude-inbound-ports={','.join(map(str, inbound_excluded))}",
        f"--exclude-outbound-ports={','.join(map(str, spec.excluded_ports))}",
        f"--hosts-file={HOSTS_FILE}",
        *(f"--host={name}={address}" for name, address in sorted(hosts.items())),
    ]
    return ContainerPlan(
        name=capture_name(mesh, spec.name),
        image=image,
        labels=pod_labels(mesh, spec, "capture", None),
        environment={},
        command=command,
        entrypoint=["meshdev"],
        user="0:0",
        cap_add=("NET_ADMIN", "NET_RAW"),
    )


def app_plan(
    mesh: str,
    spec: PodSpec,
    image: str | None,
    base_image: str,
    folder: Path,
    *,
    captured: bool = True,
) -> ContainerPlan:
    """`image`: the pod's built or named image; None runs `command` in the base image with
    `folder` (the mesh file's) mounted as the working folder."""
    command: list[str] | None = None
    if isinstance(spec.command, str):
        command = ["sh", "-c", spec.command]
    elif spec.command is not None:
        command = list(spec.command)
    name = container_name(mesh, spec.name, "app")
    labels = pod_labels(mesh, spec, "app", None)
    # Docker's init (tini) as PID 1, signalling the whole process group: `docker stop`'s
    # SIGTERM then reaches the app even behind `sh -c` (dash does not exec its last command,
    # and a PID 1 without a handler ignores SIGTERM), so pods stop at once, not after a kill.
    where = placement(spec.name, captured=captured)
    env = {**app_env(spec, where), "TINI_KILL_PROCESS_GROUP": "1"}
    if image is not None:
        # The image's own WORKDIR stays the working folder.
        return ContainerPlan(name, image, labels, env, command, init=True)
    return ContainerPlan(
        name,
        base_image,
        labels,
        env,
        command,
        working_dir=APP_MOUNT,
        binds={str(folder): {"bind": APP_MOUNT, "mode": "rw"}},
        init=True,
    )
