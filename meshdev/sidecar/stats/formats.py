"""/stats in Envoy's three dialects: text, JSON and Prometheus text format 0.0.4.

Histograms show two views, as Envoy's do: `interval` (what the last stats flush saw; the admin
app owns that flush) and `cumulative` (since start). Every rendering takes an optional compiled
`?filter=` regex, matched (re.search, like Envoy's RE2 partial match) against the full stat
name before tag extraction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from meshdev.common.histogram import (
    EMPTY,
    ENVOY_QUANTILES,
    HistogramSnapshot,
    round_significant,
)
from meshdev.common.stattags import TagExtractor
from meshdev.sidecar.stats.store import Store

# Envoy's default histogram buckets (ms), with two more below 0.5 ms: local hops are fast.
PROMETHEUS_BOUNDS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BadFilter(ValueError):
    """`?filter=` is not a valid regular expression."""


def compile_filter(raw: str | None) -> re.Pattern[str] | None:
    if raw is None or raw == "":
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        raise BadFilter(f"invalid filter regex {raw!r}: {exc}") from None


def _keep(name_filter: re.Pattern[str] | None, name: str) -> bool:
    return name_filter is None or name_filter.search(name) is not None


def format_number(value: float) -> str:
    """Envoy's `{}` style: `nan`, `12`, `12.5`."""
    if math.isnan(value):
        return "nan"
    value = round_significant(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def json_number(value: float) -> float | None:
    return None if math.isnan(value) else round_significant(value)


def percent(q: float) -> float | int:
    """0.999 -> 99.9, 0.5 -> 50 (Envoy lists supported quantiles in percent)."""
    p = round(float(q) * 100, 6)
    return int(p) if p.is_integer() else p


def _scalars(store: Store, name_filter: re.Pattern[str] | None) -> list[tuple[str, int]]:
    items = [(c.name, c.value) for c in store.counters() if _keep(name_filter, c.name)]
    items += [(g.name, g.value) for g in store.gauges() if _keep(name_filter, g.name)]
    items.sort()
    return items


def _histograms(
    store: Store,
    intervals: Mapping[str, HistogramSnapshot],
    name_filter: re.Pattern[str] | None,
) -> Iterator[tuple[str, HistogramSnapshot, HistogramSnapshot]]:
    for h in store.histograms():
        if _keep(name_filter, h.name):
            yield h.name, intervals.get(h.name, EMPTY), h.snapshot()


def render_text(
    store: Store,
    intervals: Mapping[str, HistogramSnapshot],
    name_filter: re.Pattern[str] | None = None,
) -> str:
    """`name: value` lines, then `name: P0(interval,cumulative) P25(...) ...` per histogram."""
    lines = [f"{name}: {value}" for name, value in _scalars(store, name_filter)]
    for name, interval, cumulative in _histograms(store, intervals, name_filter):
        if cumulative.count == 0:
            lines.append(f"{name}: No recorded values")
            continue
        parts = [
            f"P{percent(q)}({format_number(interval.quantile(q))},"
            f"{format_number(cumulative.quantile(q))})"
            for q in ENVOY_QUANTILES
        ]
        lines.append(f"{name}: {' '.join(parts)}")
    return "\n".join(lines) + "\n" if lines else ""


def render_json(
    store: Store,
    intervals: Mapping[str, HistogramSnapshot],
    name_filter: re.Pattern[str] | None = None,
    *,
    detailed_buckets: bool = False,
) -> dict[str, object]:
    """Envoy's /stats?format=json; `detailed_buckets` is Envoy's `histogram_buckets=detailed`.

    The detailed buckets (lower_bound, width, count) are what a client needs to merge the same
    histogram across sidecars: every sidecar uses the same bucket boundaries.
    """
    stats: list[dict[str, object]] = [
        {"name": name, "value": value} for name, value in _scalars(store, name_filter)
    ]
    supported = [percent(q) for q in ENVOY_QUANTILES]
    histograms = list(_histograms(store, intervals, name_filter))
    if detailed_buckets:
        details = [
            {
                "name": name,
                "totals": _bucket_objects(cumulative),
                "intervals": _bucket_objects(interval),
                "percentiles": _quantile_pairs(interval, cumulative),
                "count": cumulative.count,
                "sum": cumulative.sum,
            }
            for name, interval, cumulative in histograms
        ]
        stats.append({"histograms": {"supported_percentiles": supported, "details": details}})
    else:
        computed = [
            {"name": name, "values": _quantile_pairs(interval, cumulative)}
            for name, interval, cumulative in histograms
        ]
        stats.append(
            {"histograms": {"supported_quantiles": supported, "computed_quantiles": computed}}
        )
    return {"stats": stats}


def _quantile_pairs(
    interval: HistogramSnapshot, cumulative: HistogramSnapshot
) -> list[dict[str, float | None]]:
    return [
        {
            "interval": json_number(interval.quantile(q)),
            "cumulative": json_number(cumulative.quantile(q)),
        }
        for q in ENVOY_QUANTILES
    ]


def _bucket_objects(snapshot: HistogramSnapshot) -> list[dict[str, float]]:
    return [
        {"lower_bound": lower, "width": width, "count": n}
        for lower, width, n in snapshot.bucket_data()
    ]


# -- Prometheus ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Family:
    # Envoy's /stats/prometheus types every counter `counter`, every gauge `gauge` and every
    # histogram `histogram`, whatever its name (`upstream_rq_retry` is a counter without
    # `_total`, `membership_total` a gauge with it), so queries and recording rules written
    # against Envoy see the same types here; promtool's naming lint flags both, for Envoy as
    # for meshdev. A counter and a gauge folded into one family are `untyped`.
    kind: str  # counter | gauge | histogram | untyped
    help: str
    samples: list[tuple[tuple[tuple[str, str], ...], float | HistogramSnapshot]] = field(
        default_factory=list
    )


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _sample_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def render_prometheus(
    store: Store,
    tags: TagExtractor,
    name_filter: re.Pattern[str] | None = None,
    *,
    bounds: Sequence[float] = PROMETHEUS_BOUNDS,
) -> str:
    """Prometheus text format 0.0.4 with Envoy's names, tags, and cumulative histograms."""
    families: dict[str, _Family] = {}

    def add(name: str, kind: str, value: float | HistogramSnapshot) -> None:
        tagged = tags.extract(name)
        fam = families.get(tagged.family)
        if fam is None:
            fam = families[tagged.family] = _Family(kind, f"{kind} {tagged.template}")
        elif fam.kind != kind:
            # A counter and a gauge folded into one family: say nothing false about its type.
            fam.kind = "untyped" if "histogram" not in (kind, fam.kind) else fam.kind
        fam.samples.append((tagged.labels, value))

    for c in store.counters():
        if _keep(name_filter, c.name):
            add(c.name, "counter", c.value)
    for g in store.gauges():
        if _keep(name_filter, g.name):
            add(g.name, "gauge", g.value)
    for h in store.histograms():
        if _keep(name_filter, h.name):
            add(h.name, "histogram", h.snapshot())

    out: list[str] = []
    for family in sorted(families):
        fam = families[family]
        out.append(f"# HELP {family} {_escape_help(fam.help)}")
        out.append(f"# TYPE {family} {fam.kind}")
        for labels, value in sorted(fam.samples, key=lambda s: s[0]):
            if isinstance(value, HistogramSnapshot):
                out.extend(_histogram_lines(family, labels, value, bounds))
            else:
                out.append(f"{family}{_label_text(labels)} {_sample_value(value)}")
    return "\n".join(out) + "\n" if out else ""


def _histogram_lines(
    family: str,
    labels: tuple[tuple[str, str], ...],
    snapshot: HistogramSnapshot,
    bounds: Sequence[float],
) -> Iterator[str]:
    for bound, n in zip(bounds, snapshot.counts_at_or_below(bounds), strict=True):
        yield f"{family}_bucket{_label_text((*labels, ('le', _le(bound))))} {n}"
    yield f"{family}_bucket{_label_text((*labels, ('le', '+Inf')))} {snapshot.count}"
    yield f"{family}_sum{_label_text(labels)} {_sample_value(snapshot.sum)}"
    yield f"{family}_count{_label_text(labels)} {snapshot.count}"
