"""Telemetry's I/O: the admin API clients (meshdev's /stats/stream, or a real Envoy polled), the
server-sent-events parser, the readers that turn documents into `SidecarInterval`s, and the
`TelemetrySource` that watches every sidecar.
"""
