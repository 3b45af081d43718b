"""A public Envoy Grafana dashboard nobody here wrote, against a real Prometheus scraping the
example mesh under load (process runtime, Debian's `prometheus` binary): every query that a
real HTTP/1 Envoy fills returns data from meshdev's sidecars.

The dashboard is grafana.com's "Envoy proxy monitoring" (6693). Its JSON was not to be had
here, so its queries are our own copy, reconstructed from two public descriptions of that
dashboard: the panel-by-panel query list published with the AWS App Mesh voting-app sample
(server statistics; request/response summary; network traffic patterns; traffic in bytes; its
`$cluster` and `$hosts` variables), and the three CDS update panels of Google Cloud's port of
the same dashboard (`monitoring-dashboard-samples/dashboards/envoy-proxy`): 34 queries, the
number the issue counted. Grafana's "All" for a variable is `.*` here.

What a real Envoy cannot fill either is listed in `UNFILLABLE` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.meshrun import MeshUp, env_for, example_copy, get
from tests.support import MESHDEV, free_port, need_prometheus

pytestmark = [pytest.mark.slow]

C = 'envoy_cluster_name=~"$cluster"'
CH = 'envoy_cluster_name=~"$cluster",host=~"$hosts"'

# (panel, query), in the dashboard's order.
QUERIES: list[tuple[str, str]] = [
    # Variables (Grafana's label_values, asked as a query of the same series).
    ("variable cluster", "count by (envoy_cluster_name) (envoy_cluster_upstream_rq_total)"),
    ("variable hosts", f'count by (host) (envoy_cluster_upstream_rq_total{{{C},host!=""}})'),
    # Server statistics (global).
    ("Live Servers", "sum(envoy_server_live)"),
    (
        "Cluster State",
        "(sum(envoy_cluster_membership_total)-sum(envoy_cluster_membership_healthy)) == bool 0",
    ),
    (
        "Unhealthy Clusters",
        "(sum(envoy_cluster_membership_healthy) - sum(envoy_cluster_membership_total))",
    ),
    ("Avg uptime per node", "avg(envoy_server_uptime)"),
    ("Allocated Memory", "sum(envoy_server_memory_allocated)"),
    ("Heap Size", "sum(envoy_server_memory_heap_size)"),
    # Request/response summary, by $cluster and $hosts.
    ("Total Requests", f"sum(envoy_cluster_external_upstream_rq_completed{{{CH}}})"),
    (
        "Response - 2xx",
        f'sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code="200"}})',
    ),
    (
        "Success Rate (non 5xx)",
        f'1 - (1 - (sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code="200"}})'
        f'/sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code=~".*"}})))',
    ),
    (
        "Response - 3xx",
        f'sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code=~"3.*"}})',
    ),
    (
        "Response - 4xx",
        f'sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code=~"4.*"}})',
    ),
    (
        "Response - 5xx",
        f'sum(envoy_cluster_external_upstream_rq{{{CH},envoy_response_code=~"5.*"}})',
    ),
    # Network traffic patterns (upstream by service, downstream global).
    ("Egress CPS/RPS: egress CPS", f"sum(rate(envoy_cluster_upstream_cx_total{{{C}}}[10s]))"),
    ("Egress CPS/RPS: egress RPS", f"sum(rate(envoy_cluster_upstream_rq_total{{{C}}}[10s]))"),
    (
        "Egress CPS/RPS: pending req to",
        f"sum(rate(envoy_cluster_upstream_rq_pending_total{{{C}}}[10s]))",
    ),
    (
        "Egress CPS/RPS: lb healthy panic RPS",
        f"sum(rate(envoy_cluster_lb_healthy_panic{{{C}}}[10s]))",
    ),
    ("Upstream Received Requests", f"rate(envoy_cluster_upstream_rq_total{{{CH}}}[10s])"),
    ("Upstream Connection Summary", f"sum(envoy_cluster_upstream_cx_active{{{C}}})"),
    ("Global Downstream Requests", "sum(rate(envoy_http_downstream_rq_total[10s]))"),
    # Network traffic details in bytes.
    ("Upstream - Sent", f"sum(envoy_cluster_upstream_cx_tx_bytes_total{{{C}}})"),
    ("Upstream - Sent Buffered", f"sum(envoy_cluster_upstream_cx_tx_bytes_buffered{{{C}}})"),
    ("Upstream - Received", f"sum(envoy_cluster_upstream_cx_rx_bytes_total{{{C}}})"),
    (
        "Upstream - Received Buffered",
        f"sum(envoy_cluster_upstream_cx_rx_bytes_buffered{{{C}}})",
    ),
    ("Downstream Global - Sent", "sum(envoy_http_downstream_cx_tx_bytes_total)"),
    ("Downstream Global - Sent Buffered", "sum(envoy_http_downstream_cx_tx_bytes_buffered)"),
    ("Downstream Global - Received", "sum(envoy_http_downstream_cx_rx_bytes_total)"),
    (
        "Downstream Global - Received Buffered",
        "sum(envoy_http_downstream_cx_rx_bytes_buffered)",
    ),
    (
        "Upstream Network Traffic",
        f"irate(envoy_cluster_upstream_cx_rx_bytes_total{{{CH}}}[10s])",
    ),
    (
        "Downstream Network Traffic",
        "irate(envoy_http_downstream_cx_rx_bytes_total{}[10s])",
    ),
    # CDS updates (Google Cloud's port of the same dashboard).
    ("CDS Update Attempts", "rate(envoy_cluster_manager_cds_update_attempt[5m])"),
    ("CDS Update Success", "rate(envoy_cluster_manager_cds_update_success[5m])"),
    ("CDS Update Failure", "rate(envoy_cluster_manager_cds_update_failure[5m])"),
]

# Panels no Envoy fills on its own, and why.
UNFILLABLE = {
    # `host` is no Envoy label: the voting-app's stats exporter added it (Envoy's
    # /stats/prometheus labels clusters, not hosts), so the variable lists nothing there
    # either; the panels that filter on it still fill, `host=~".*"` matching the label's
    # absence.
    "variable hosts",
}

PROMETHEUS = "prometheus: {{port: {prom}, scrape_interval: 1s}}\n"


def expand(query: str) -> str:
    return query.replace("$cluster", ".*").replace("$hosts", ".*")


def ask(prom: str, query: str) -> list[object]:
    status, body = get(f"{prom}/api/v1/query?query={urllib.parse.quote(expand(query))}")
    assert status == 200, (query, body)
    result: list[object] = json.loads(body)["data"]["result"]
    return result


def test_the_queries_are_the_dashboards_34() -> None:
    assert len(QUERIES) == 34
    assert len({panel for panel, _ in QUERIES}) == 34
    assert {panel for panel, _ in QUERIES} >= UNFILLABLE


def test_a_public_envoy_dashboard_fills_from_meshdevs_sidecars(tmp_path: Path) -> None:
    need_prometheus()
    name = f"dash-{os.getpid()}"
    port, prom_port = free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    mesh_file = example_copy(tmp_path, name, port)
    mesh_file.write_text(mesh_file.read_text() + PROMETHEUS.format(prom=prom_port))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    base = f"http://127.0.0.1:{port}"
    try:
        up.wait_for("ready:")
        load = subprocess.Popen(
            [MESHDEV, "load", f"{base}/items", "--rps", "20", "--duration", "12s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Answers of every class the dashboard splits by: the frontend says what it is asked.
        for code in (301, 404, 503):
            for _ in range(3):
                assert get(f"{base}/status/{code}")[0] == code
        load.wait(60)
        # Prometheus has scraped every sidecar since the load: each target's last scrape
        # started after it ended.
        ended = time.time()
        deadline = time.monotonic() + 30
        while True:
            _, body = get(f"{prom}/api/v1/targets")
            targets = json.loads(body)["data"]["activeTargets"]
            scraped = [t for t in targets if t["health"] == "up"]
            if len(scraped) == 7 and all(_epoch(t["lastScrape"]) > ended + 1 for t in scraped):
                break
            assert time.monotonic() < deadline, f"targets not all scraped after the load: {targets}"
            time.sleep(0.5)
        empty = [panel for panel, query in QUERIES if not ask(prom, query)]
        filled = len(QUERIES) - len(empty)
        print(f"\n{filled} of {len(QUERIES)} queries filled; empty: {empty}")
        assert set(empty) == UNFILLABLE, f"{filled}/{len(QUERIES)} filled; empty: {empty}"
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


def _epoch(rfc3339: str) -> float:
    """Prometheus's lastScrape (`2024-05-01T10:00:00.123456789Z`, or with an offset) as epoch
    seconds: Python's parser takes at most six digits of a fraction."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
