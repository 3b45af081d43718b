"""Polling Envoy's admin API: `/stats?format=json` (+ `/clusters?format=json`, `/server_info`)
-> a `SidecarInterval`, with the deltas computed here from the previous poll.

Envoy's JSON does not say which stats are counters, so every value is offered as both;
aggregation only ever takes deltas of counter names and levels of gauge names.
"""

from __future__ import annotations

from meshdev.common.histogram import HistogramSnapshot
from meshdev.telemetry.aggregation.sidecar_interval import (
    HostTotals,
    IntervalHistogram,
    SidecarInterval,
    host_deltas,
)
from meshdev.telemetry.io.envoy_clusters import envoy_clusters
from meshdev.telemetry.io.wire_checks import check_dict, check_list, check_num, opt_int, opt_str


class PollReader:
    """Builds intervals from successive polls; the first poll is a baseline with no deltas."""

    def __init__(self) -> None:
        self._values: dict[str, int] | None = None
        self._cumulative: dict[str, HistogramSnapshot] = {}
        self._host_totals: HostTotals | None = None
        self._last: float | None = None

    def reset(self) -> None:
        """A new connection (maybe to a restarted Envoy): start from a fresh baseline."""
        self._values = None
        self._cumulative = {}
        self._host_totals = None
        self._last = None

    def parse(
        self,
        stats: object,
        received: float,
        *,
        clusters: object = None,
        server_info: object = None,
    ) -> SidecarInterval:
        values, histograms = self._stats(stats)
        previous = self._values
        deltas: dict[str, int] = {}
        if previous is not None:
            for name, v in values.items():
                before = previous.get(name, 0)
                if v != before:
                    # Down means a restart (or a gauge: deltas of gauges are never read).
                    deltas[name] = v - before if v > before else v
        self._values = values
        interval = 0.0 if self._last is None else max(0.0, received - self._last)
        self._last = received
        hosts, breakers = envoy_clusters(clusters, values) if clusters is not None else ([], [])
        self._host_totals = host_deltas(hosts, self._host_totals)
        node, version, hash_ = _server_info(server_info)
        return SidecarInterval(
            node=node,
            received=received,
            interval_s=interval,
            config_version=version,
            config_hash=hash_,
            counters=values,
            deltas=deltas,
            gauges=values,
            histograms=histograms,
            hosts=hosts,
            breakers=breakers,
        )

    def _stats(self, doc: object) -> tuple[dict[str, int], dict[str, IntervalHistogram]]:
        entries = check_list(check_dict(doc, "stats document").get("stats", []), "stats")
        values: dict[str, int] = {}
        histograms: dict[str, IntervalHistogram] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if "histograms" in entry:
                histograms.update(self._histograms(entry["histograms"]))
                continue
            name, value = entry.get("name"), entry.get("value")
            if isinstance(name, str) and isinstance(value, int | float):
                values[name] = int(value)
        return values, histograms

    def _histograms(self, obj: object) -> dict[str, IntervalHistogram]:
        """Detailed buckets give exact intervals (this poll's cumulative minus the last one's);
        summary form only has quantiles of Envoy's own flush interval, kept as they are."""
        out: dict[str, IntervalHistogram] = {}
        if not isinstance(obj, dict):
            return out
        for d in obj.get("details", []) or []:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                continue
            name = d["name"]
            try:
                totals = [
                    (
                        check_num(b["lower_bound"], name),
                        check_num(b["width"], name),
                        int(b["count"]),
                    )
                    for b in d.get("totals", [])
                ]
            except (KeyError, TypeError, ValueError):
                continue
            total_sum = d.get("sum")
            cumulative = HistogramSnapshot.from_buckets(
                totals, float(total_sum) if isinstance(total_sum, int | float) else None
            )
            before = self._cumulative.get(name)
            self._cumulative[name] = cumulative
            if before is None:
                interval = HistogramSnapshot.empty()
            else:
                try:
                    interval = cumulative - before
                except ValueError:  # a restarted Envoy: its totals started over
                    interval = cumulative
            out[name] = IntervalHistogram(interval.count, interval.sum, interval.bucket_data())
        supported = obj.get("supported_quantiles")
        for c in obj.get("computed_quantiles", []) or []:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or c["name"] in out:
                continue
            out[c["name"]] = _summary_histogram(supported, c.get("values"))
        return out


def _summary_histogram(supported: object, values: object) -> IntervalHistogram:
    quantiles: dict[str, float | None] = {}
    if isinstance(supported, list) and isinstance(values, list):
        for q, v in zip(supported, values, strict=False):
            interval = v.get("interval") if isinstance(v, dict) else None
            if isinstance(q, int | float):
                key = f"p{int(q) if float(q).is_integer() else q}"
                quantiles[key] = float(interval) if isinstance(interval, int | float) else None
    return IntervalHistogram(0, 0.0, [], quantiles)


def _server_info(info: object) -> tuple[str, int | None, str | None]:
    if not isinstance(info, dict):
        return "", None, None
    node = info.get("node")
    node_id = opt_str(node.get("id")) if isinstance(node, dict) else None
    # meshdev's /server_info names its serving config; Envoy's has no such field.
    config = info.get("config")
    if isinstance(config, dict):
        return node_id or "", opt_int(config.get("version")), opt_str(config.get("hash"))
    return node_id or "", None, None
