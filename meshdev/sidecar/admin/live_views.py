"""The admin API's views (admin/views.py) of a compiled config's live clusters and hosts."""

from __future__ import annotations

from meshdev.common.breaker_view import BreakerView
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.compiled import Compiled


def host_views(compiled: Compiled) -> list[HostView]:
    """Every host of the config's clusters, as its balancer and outlier detector see it now."""
    views: list[HostView] = []
    for cluster in compiled.clusters.values():
        detector = cluster.detector
        for h in cluster.hosts:
            views.append(
                HostView(
                    cluster=cluster.name,
                    address=h.address,
                    port=h.port,
                    pod=h.pod,
                    ejected=h.ejected,
                    ejected_for=detector.remaining(h) if detector is not None else 0.0,
                    ejection_count=h.ejection_count,
                    consecutive_5xx=h.consecutive_5xx,
                    rq_active=h.rq_active,
                    cx_active=h.pool.cx_active + h.tcp_cx_active,
                    rq_total=h.rq_total,
                    rq_error=h.rq_error,
                    rq_success=h.rq_success,
                )
            )
    return views


def breaker_views(compiled: Compiled) -> list[BreakerView]:
    """Each cluster's breaker: the connection budget's limits and the request breaker's."""
    views: list[BreakerView] = []
    for cluster in compiled.clusters.values():
        budget = cluster.state.budget
        br = cluster.breaker
        views.append(
            BreakerView(
                cluster=cluster.name,
                max_connections=budget.max_connections,
                max_pending_requests=budget.max_pending_requests,
                max_requests=br.max_requests,
                max_retries=br.max_retries,
                cx_active=budget.cx_active,
                rq_pending_active=budget.rq_pending_active,
                rq_active=br.rq_active.value,
                rq_retry_active=br.retry_active.value,
                cx_open=budget.cx_open,
                rq_pending_open=budget.rq_pending_open,
                rq_open=br.rq_active.value >= br.max_requests,
                rq_retry_open=br.retry_active.value >= br.max_retries,
            )
        )
    return views
