"""`meshdev status` and the dashboard read GET /certs with the same rules (common/workload_certs):
the same leaf, the same moment, whatever the answer holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meshdev.common.workload_certs import spiffe_id, timestamp, workload_leaves
from meshdev.status import cert_expiry
from meshdev.telemetry.aggregation.certs import from_envoy_certs

ME = spiffe_id("shop", "backend")
OTHER = spiffe_id("shop", "frontend")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()


def _leaf(uri: str, expiration: object) -> dict[str, object]:
    return {"subject_alt_names": [{"uri": uri}], "expiration_time": expiration}


ANSWERS = [
    # named first, whatever the order of the chains
    {"certificates": [{"cert_chain": [_leaf(OTHER, "2026-12-05T00:00:00Z")]},
                      {"cert_chain": [_leaf(ME, "2026-12-04T08:00:00+02:00")]}]},
    # nothing names it: the first chain's leaf
    {"certificates": [{"cert_chain": [_leaf(OTHER, "2026-12-05T00:00:00.5Z")]},
                      {"cert_chain": [_leaf("", "2027-01-01T00:00:00Z")]}]},
    # a CA certificate is never the workload's, however it is named
    {"certificates": [{"ca_cert": [_leaf(ME, "2036-01-01T00:00:00Z")],
                       "cert_chain": [_leaf(OTHER, "2026-12-06T00:00:00Z")]}]},
]  # fmt: skip


@pytest.mark.parametrize("answer", ANSWERS)
def test_status_and_dashboard_date_the_same_certificate(answer: dict[str, object]) -> None:
    shown = cert_expiry(answer, ME)
    kept = from_envoy_certs(answer, ME, NOW)
    assert shown is not None and kept is not None
    assert datetime.fromtimestamp(kept.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == shown


def test_only_leaves_of_chains_are_workload_certificates() -> None:
    ca_only = {"certificates": [{"ca_cert": [_leaf(ME, "2036-01-01T00:00:00Z")]}]}
    assert workload_leaves(ca_only, ME) == []
    assert cert_expiry(ca_only, ME) is None
    assert from_envoy_certs(ca_only, ME, NOW) is None


@pytest.mark.parametrize("value", ["2026-12-04T08:30:00", "tomorrow", 1795643347, None, ""])
def test_a_timestamp_that_names_no_moment_is_none(value: object) -> None:
    assert timestamp(value) is None
