"""The namespace's Telemetry -> mesh.yaml's `tracing:`: its sampling, and the collectors an
export recorded beside the provider it names (Istio keeps a provider's address in its mesh
config, which no file of the namespace holds)."""

from __future__ import annotations

import json
from typing import Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_tracing import OTLP_PROVIDER, ZIPKIN_PROVIDER
from meshdev.bridges.kube.import_docs import Source

# Istio's meshConfig.defaultConfig.tracing.sampling when a Telemetry does not say one.
ISTIO_DEFAULT_SAMPLING = 1.0
_PROVIDERS = {ZIPKIN_PROVIDER: "zipkin", OTLP_PROVIDER: "otlp"}


def _percent(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100


def _collectors(t: Source) -> dict[str, str]:
    try:
        raw: Any = json.loads(t.annotations().get(kc.TRACING_ANNOTATION, "{}"))
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or not all(
        k in ("zipkin", "otlp") and isinstance(v, str) for k, v in raw.items()
    ):
        t.say(("metadata", "annotations"), f"{kc.TRACING_ANNOTATION} is not meshdev's: left out")
        return {}
    return raw


def read_telemetries(telemetries: list[Source]) -> dict[str, Any] | None:
    """mesh.yaml's `tracing:` from the namespace-wide Telemetry, None when there is none."""
    out: dict[str, Any] | None = None
    for t in telemetries:
        scoped = [k for k in ("selector", "targetRef", "targetRefs") if t.get("spec", k)]
        if scoped:
            t.note(("spec", scoped[0]), "meshdev traces every workload alike: left out")
            continue
        if out is not None:
            t.note((), "a second Telemetry of the namespace: left out")
            continue
        tracing = t.get("spec", "tracing")
        if not isinstance(tracing, list) or not tracing or not isinstance(tracing[0], dict):
            continue
        out = {}
        first = ("spec", "tracing", 0)
        sampling = t.get(*first, "randomSamplingPercentage")
        if sampling is None:
            t.say(
                first,
                "no randomSamplingPercentage: Istio's mesh config's is taken, "
                f"{ISTIO_DEFAULT_SAMPLING:g}% by default",
            )
            out["sampling"] = ISTIO_DEFAULT_SAMPLING
        elif _percent(sampling):
            t.take(*first, "randomSamplingPercentage")
            out["sampling"] = float(sampling)
        else:
            t.note((*first, "randomSamplingPercentage"), "not a percentage: left out")
        providers = t.get(*first, "providers")
        if providers is None:
            continue
        names = [p.get("name") if isinstance(p, dict) else None for p in providers or [None]]
        collectors = _collectors(t)
        kinds = [_PROVIDERS.get(n) if isinstance(n, str) else None for n in names]
        if len(kinds) == 1 and kinds[0] is not None and kinds[0] in collectors:
            t.take(*first, "providers")
            # The export records both collectors where Istio's Telemetry takes one.
            out.update(collectors)
        else:
            t.note(
                (*first, "providers"),
                "Istio's tracing providers are its mesh config's, whose addresses these files "
                "do not hold: give tracing.zipkin or tracing.otlp",
            )
    return out
