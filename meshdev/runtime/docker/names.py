"""How the docker runtime names and labels what it creates, and reads those labels back.

Names are for people (`docker ps`); labels are how meshdev finds its objects again, also from
another process (`meshdev status`, `meshdev down`) and after a crash, so every query filters by
the mesh's label and never by a name prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from meshdev.plan import PodSpec
from meshdev.runtime.base import (
    LABEL_CONFIG,
    LABEL_MESH,
    LABEL_POD,
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_SUBSET,
    Container,
)

Role = Literal["sidecar", "app", "ingress", "capture"]
# The roles of a pod's long-lived containers; a capture container is gone once its pod runs.
ROLES: tuple[Role, ...] = ("sidecar", "app", "ingress")

# Where the sidecar reads its first config inside its container (readable by uid 1337).
CONFIG_DIR = "/etc/meshdev"
CONFIG_FILE = "sidecar.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
# Istio's sidecar user (Dockerfile.proxy's USER).
PROXY_UID = 1337
# Command-only services run in the base image with their folder mounted here.
APP_MOUNT = "/app"
PROXY_REPO = "meshdev-proxy"


def network_name(mesh: str) -> str:
    return f"meshdev-{mesh}"


def container_name(mesh: str, pod: str, container: Container) -> str:
    base = f"meshdev-{mesh}-{pod}"
    return f"{base}-app" if container == "app" else base


def capture_name(mesh: str, pod: str) -> str:
    """The pod's one-shot container that sets up its traffic capture."""
    return f"meshdev-{mesh}-{pod}-capture"


def app_image_name(mesh: str, owner: PodSpec) -> str:
    """The tag of an image built from a folder, named after the first pod that uses it."""
    who = owner.service if owner.subset is None else f"{owner.service}-{owner.subset}"
    return f"meshdev-{mesh}-{who}:latest"


def mesh_filter(mesh: str) -> dict[str, list[str]]:
    return {"label": [f"{LABEL_MESH}={mesh}"]}


def pod_labels(mesh: str, spec: PodSpec, role: Role, config_hash: str | None) -> dict[str, str]:
    labels = {
        LABEL_MESH: mesh,
        LABEL_POD: spec.name,
        LABEL_SERVICE: spec.service,
        LABEL_ROLE: role,
    }
    if spec.subset is not None:
        labels[LABEL_SUBSET] = spec.subset
    if config_hash is not None:
        labels[LABEL_CONFIG] = config_hash
    return labels


def role_of(labels: Mapping[str, str]) -> Role | None:
    role = labels.get(LABEL_ROLE)
    for known in ROLES:
        if role == known:
            return known
    return None
