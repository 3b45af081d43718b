"""The sidecar's workload identity: the certificate the control plane delivered last (POST
/certs), as TLS contexts, swapped whole by the next one (rotation). A handshake reads the
contexts once as it starts, so connections already open, or already handshaking, keep theirs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from meshdev.common.sidecar_config import Limits, SidecarConfig
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.tls.material import Material, load_material

NO_CERT_YET = "no workload certificate yet"


def wants_tls(config: SidecarConfig) -> bool:
    """Whether `config` has the sidecar speak TLS anywhere: it names the workload's identity
    and an inbound listener takes mutual TLS or a cluster asks for it."""
    if config.spiffe_id is None:
        return False
    inbound = any(lst.kind == "inbound" and lst.mtls != "DISABLE" for lst in config.listeners)
    return inbound or any(c.tls is not None for c in config.clusters)


class WorkloadIdentity:
    """The current workload certificate's contexts (None until one arrives)."""

    __slots__ = ("handshake_timeout", "material")

    def __init__(self) -> None:
        self.material: Material | None = None
        # The serving config's Limits.tls_handshake_timeout (the data plane sets it per swap).
        self.handshake_timeout = Limits().tls_handshake_timeout

    def install(self, certs: WorkloadCerts, spiffe_id: str | None) -> Material:
        """Check `certs` for the workload `spiffe_id` and make them the ones new handshakes
        use; raises CertsRejected (the current ones stay) with every reason."""
        material = load_material(certs, spiffe_id)
        self.material = material
        return material

    def readiness(self, config: SidecarConfig) -> str | None:
        """Why the sidecar cannot serve `config` yet (None: it can): TLS is asked for and the
        certificate has not come, or names another workload than the config does."""
        if not wants_tls(config):
            return None
        material = self.material
        if material is None:
            return NO_CERT_YET
        if material.spiffe_id != config.spiffe_id:
            return (
                f"the workload certificate names {material.spiffe_id}, but the config's "
                f"spiffe_id is {config.spiffe_id}"
            )
        return None

    def envoy_certs(self, now: datetime | None = None) -> dict[str, object]:
        """Envoy's admin /certs answer: the certificates in use, never the key."""
        material = self.material
        when = now or datetime.now(UTC)
        return {"certificates": [] if material is None else [material.to_json(when)]}
