"""The stats of HTTP/2 connections, under Envoy's names.

Per listener (the connection manager's, `http.<listener>.`): `downstream_cx_http2_total`,
`downstream_cx_http2_active`, `downstream_rq_too_many_premature_resets`. The codec's, at the
root as Envoy's downstream codec (`http2.`): `rx_reset`, `tx_reset`, `header_overflow`,
`rx_messaging_error`, `outbound_control_flood`, `goaway_sent`, and meshdev's
`too_many_streams` (streams refused over SETTINGS_MAX_CONCURRENT_STREAMS, which Envoy's
nghttp2 refuses without a stat of its own).
"""

from __future__ import annotations

from meshdev.sidecar.stats.store import Counter, Gauge, Store


class Http2StatSet:
    """The counters one downstream HTTP/2 connection moves (see the module doc)."""

    __slots__ = (
        "downstream_cx_http2_active",
        "downstream_cx_http2_total",
        "downstream_rq_too_many_premature_resets",
        "goaway_sent",
        "header_overflow",
        "outbound_control_flood",
        "rx_messaging_error",
        "rx_reset",
        "too_many_streams",
        "tx_reset",
    )

    def __init__(self, store: Store, listener: str) -> None:
        p = f"http.{listener}."
        self.downstream_cx_http2_total: Counter = store.counter(p + "downstream_cx_http2_total")
        self.downstream_cx_http2_active: Gauge = store.gauge(p + "downstream_cx_http2_active")
        self.downstream_rq_too_many_premature_resets: Counter = store.counter(
            p + "downstream_rq_too_many_premature_resets"
        )
        self.rx_reset: Counter = store.counter("http2.rx_reset")
        self.tx_reset: Counter = store.counter("http2.tx_reset")
        self.header_overflow: Counter = store.counter("http2.header_overflow")
        self.rx_messaging_error: Counter = store.counter("http2.rx_messaging_error")
        self.outbound_control_flood: Counter = store.counter("http2.outbound_control_flood")
        self.goaway_sent: Counter = store.counter("http2.goaway_sent")
        self.too_many_streams: Counter = store.counter("http2.too_many_streams")
