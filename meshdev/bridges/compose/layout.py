"""The names a meshdev-written docker-compose.yml uses, shared by its writer and its reader.

Each pod is two compose services sharing one network namespace: the sidecar (a real Envoy)
named after the pod, and the app, `<pod>-app`, with `network_mode: service:<pod>`. Labels
(Compose's metadata for tools) say what Compose has no word for: which mesh service, version
and pod a container is, and what port, protocol and health path the app has, so that
`meshdev import compose` gives the mesh's services back.
"""

from __future__ import annotations

from typing import Final

LABEL_PREFIX: Final = "dev.meshdev."
LABEL_MESH: Final = LABEL_PREFIX + "mesh"
LABEL_ROLE: Final = LABEL_PREFIX + "role"  # sidecar | gateway | app
LABEL_POD: Final = LABEL_PREFIX + "pod"
LABEL_SERVICE: Final = LABEL_PREFIX + "service"
LABEL_VERSION: Final = LABEL_PREFIX + "version"
LABEL_PORT: Final = LABEL_PREFIX + "port"
LABEL_PROTOCOL: Final = LABEL_PREFIX + "protocol"
LABEL_HEALTH_PATH: Final = LABEL_PREFIX + "health-path"
LABEL_EXCLUDED_PORTS: Final = LABEL_PREFIX + "excluded-ports"

APP_SUFFIX: Final = "-app"
# Where the docker runtime mounts the mesh file's folder for a service that has only a
# command (meshdev.runtime.docker.names.APP_MOUNT, which a bridge may not import).
APP_MOUNT: Final = "/app"
BOOTSTRAP_DIR: Final = "envoy"
BOOTSTRAP_MOUNT: Final = "/etc/envoy/envoy.yaml"
# The host ports the sidecars' read-only admin listeners are published on, one per pod in
# plan order: Envoy's usual admin port first.
ADMIN_HOST_PORT: Final = 9901
DEFAULT_ENVOY_IMAGE: Final = "envoyproxy/envoy:v1.36-latest"


def app_service(pod: str) -> str:
    return pod + APP_SUFFIX
