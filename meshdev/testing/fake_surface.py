"""An in-memory ControlSurface for the admin API's tests, and a config to serve."""

from __future__ import annotations

import re
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import SidecarConfig, parse_config
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.stats.store import Store

_RUNTIME_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def config_document(version: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid per-sidecar config as JSON data, with cluster names that contain dots and pipes."""
    doc: dict[str, Any] = {
        "version": version,
        "mesh": "demo",
        "node": "frontend-0",
        "service": "frontend",
        "listeners": [
            {
                "name": "inbound",
                "kind": "inbound",
                "address": "0.0.0.0",
                "port": 15006,
                "cluster": "inbound|8080",
            },
            {"name": "outbound", "kind": "outbound", "address": "127.0.0.1", "port": 15001},
        ],
        "virtual_hosts": [
            {
                "name": "backend",
                "domains": ["backend"],
                "routes": [
                    {
                        "name": "items",
                        "match": {"prefix": "/items"},
                        "clusters": [
                            {"cluster": "backend.v1", "weight": 90},
                            {"cluster": "backend.v2", "weight": 10},
                        ],
                    },
                ],
            }
        ],
        "clusters": [
            {"name": "inbound|8080", "endpoints": [{"address": "127.0.0.1", "port": 8080}]},
            {
                "name": "backend.v1",
                "endpoints": [
                    {"address": "10.0.0.3", "port": 15006, "pod": "backend-v1-0"},
                    {"address": "10.0.0.4", "port": 15006, "pod": "backend-v1-1"},
                ],
                "circuit_breaker": {"max_connections": 50, "max_requests": 20},
                "outlier_detection": {"consecutive_5xx": 5},
            },
            {
                "name": "backend.v2",
                "endpoints": [{"address": "10.0.0.5", "port": 15006, "pod": "backend-v2-0"}],
            },
        ],
    }
    doc.update(overrides)
    return doc


def make_config(version: int = 1, **overrides: Any) -> SidecarConfig:
    return parse_config(config_document(version, **overrides))


def host(
    cluster: str,
    address: str,
    *,
    port: int = 15006,
    ejected: bool = False,
    rq_total: int = 0,
    rq_success: int = 0,
    rq_error: int = 0,
) -> HostView:
    return HostView(
        cluster=cluster,
        address=address,
        port=port,
        pod=f"pod-{address}",
        ejected=ejected,
        ejected_for=30.0 if ejected else 0.0,
        ejection_count=1 if ejected else 0,
        consecutive_5xx=5 if ejected else 0,
        rq_active=1,
        cx_active=2,
        rq_total=rq_total,
        rq_error=rq_error,
        rq_success=rq_success,
    )


def breaker(cluster: str, *, rq_open: bool = False) -> BreakerView:
    return BreakerView(
        cluster=cluster,
        max_connections=50,
        max_pending_requests=1024,
        max_requests=20,
        max_retries=3,
        cx_active=2,
        rq_pending_active=0,
        rq_active=20 if rq_open else 1,
        rq_retry_active=0,
        cx_open=False,
        rq_pending_open=False,
        rq_open=rq_open,
        rq_retry_open=False,
    )


class FakeSurface:
    """Serves one config; records what the admin API applied and set."""

    def __init__(self, config: SidecarConfig | None = None) -> None:
        self._config = config if config is not None else make_config()
        self._stats = Store()
        self.host_views: list[HostView] = []
        self.breaker_views: list[BreakerView] = []
        self.overrides: dict[str, str] = {}
        self.applied: list[SidecarConfig] = []
        # Set to make the next apply() fail the way a data plane might (a port it can't bind).
        self.apply_error: Exception | None = None

    @property
    def config(self) -> SidecarConfig:
        return self._config

    @property
    def stats(self) -> Store:
        return self._stats

    def apply(self, config: SidecarConfig) -> None:
        if self.apply_error is not None:
            raise self.apply_error
        self.applied.append(config)
        self._config = config

    async def settle(self) -> None:
        pass

    def hosts(self) -> list[HostView]:
        return list(self.host_views)

    def breakers(self) -> list[BreakerView]:
        return list(self.breaker_views)

    def runtime(self) -> dict[str, str]:
        return dict(self.overrides)

    def set_runtime(self, values: dict[str, str]) -> None:
        bad = [k for k in values if not _RUNTIME_KEY.match(k)]
        if bad:
            raise ValueError(f"bad runtime key(s): {', '.join(sorted(bad))}")
        for k, v in values.items():
            if v == "":
                self.overrides.pop(k, None)
            else:
                self.overrides[k] = v
