"""Tracing as Istio says it: a Telemetry resource for the namespace (its sampling and which
provider gets the spans), the provider itself being Istio's mesh config, which is named in a
gap with the exact entry to add (istiod's install, not a resource of the namespace).

Istio's Telemetry takes one tracing provider: `zipkin` when given, else `otlp`. meshdev's own
keeping of spans for `meshdev traces` has no Istio counterpart; with no collector nothing is
exported (a `tracing:` other than the default is said), except tracing turned off: that is a
Telemetry sampling 0%, or Istio would trace the namespace at its mesh config's rate."""

from __future__ import annotations

import json

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_workloads import Doc, Target, labels, metadata
from meshdev.bridges.kube.report import Gaps
from meshdev.common.sidecar_config import collector_address
from meshdev.config.model import Mesh, Tracing

TELEMETRY = "telemetry.istio.io/v1"
TELEMETRY_NAME = "tracing"
ZIPKIN_PROVIDER = "meshdev-zipkin"
OTLP_PROVIDER = "meshdev-otlp"


def telemetry(mesh: Mesh, target: Target, gaps: Gaps) -> list[Doc]:
    t = mesh.tracing
    if t.sampling <= 0 and t.zipkin is None and t.otlp is None:
        # No provider named: the sampling applies to Istio's default one, which it silences.
        return [_document(mesh, target, {"tracing": [{"randomSamplingPercentage": 0.0}]}, None)]
    if t.zipkin is None and t.otlp is None:
        # Said when the mesh file asks for more than the default (which every mesh has).
        if t != Tracing():
            gaps.add(
                "tracing",
                "meshdev's sidecars keep their spans for `meshdev traces`; Istio's send them to "
                "a collector: give tracing.zipkin or tracing.otlp to export a Telemetry resource",
            )
        return []
    if t.zipkin is not None:
        host, port, path = collector_address(t.zipkin)
        provider = ZIPKIN_PROVIDER
        entry = f"{{name: {provider}, zipkin: {{service: {host}, port: {port}}}}}"
        where = "tracing.zipkin"
        if path != "/api/v2/spans":
            gaps.add(where, f"Istio's Zipkin provider posts to /api/v2/spans, not {path}")
        if t.otlp is not None:
            gaps.add(
                "tracing.otlp",
                "Istio's Telemetry takes one tracing provider: spans go to tracing.zipkin only",
            )
    else:
        assert t.otlp is not None
        host, port, path = collector_address(t.otlp)
        provider = OTLP_PROVIDER
        entry = (
            f"{{name: {provider}, opentelemetry: {{service: {host}, port: {port}, "
            f"http: {{path: {path}}}}}}}"
        )
        where = "tracing.otlp"
    gaps.add(
        where,
        f"Istio's tracing providers are its mesh config's: install Istio with meshConfig."
        f"extensionProviders holding {entry} (the Telemetry resource names it); Istio makes "
        "one CLIENT span per outbound request, not one per try",
    )
    spec: Doc = {
        "tracing": [{"providers": [{"name": provider}], "randomSamplingPercentage": t.sampling}]
    }
    return [_document(mesh, target, spec, {kc.TRACING_ANNOTATION: collectors_annotation(t)})]


def _document(mesh: Mesh, target: Target, spec: Doc, annotations: dict[str, str] | None) -> Doc:
    return {
        "apiVersion": TELEMETRY,
        "kind": "Telemetry",
        "metadata": metadata(TELEMETRY_NAME, target.namespace, labels(mesh), annotations),
        "spec": spec,
    }


def collectors_annotation(t: Tracing) -> str:
    return json.dumps(t.model_dump(include={"zipkin", "otlp"}, exclude_none=True), sort_keys=True)
