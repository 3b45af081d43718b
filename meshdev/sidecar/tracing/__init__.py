"""Distributed tracing in the data plane (docs/tracing.md): trace context on the wire
(context.py), the spans a hop makes (span.py), the ring GET /spans reads (ring.py), the
exporters to Zipkin and OTLP collectors (export.py), and the tracer that decides and
collects (tracer.py). The request path (proxy/) calls it only for sampled requests."""

from meshdev.sidecar.tracing.span import RequestTrace, Span
from meshdev.sidecar.tracing.tracer import Tracer

__all__ = ["RequestTrace", "Span", "Tracer"]
