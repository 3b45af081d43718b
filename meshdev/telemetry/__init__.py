"""Telemetry: watch every sidecar's admin API and aggregate it into `MeshView`s.

Two rooms, and the way between them goes one way only:

- `io/` talks to the sidecars: `source.TelemetrySource` (what the dashboard runs, and the
  `ViewSource` protocol it is used through) keeps one `client.SidecarClient` per sidecar,
  which reads meshdev's /stats/stream or polls a real Envoy's /stats (`stream_reader`,
  `poll_reader`, `envoy_clusters`, checked by `wire_checks`) into `SidecarInterval`s.
- `aggregation/` is pure: no sockets, no clocks, nothing from io/. `mesh.Aggregator` turns
  each sidecar's latest `sidecar_interval.SidecarInterval` into one `view.MeshView`, the plain
  data the dashboard renders.

io/ imports aggregation/, never the other way. Nothing here imports the terminal UI, the data
plane (what both sides share is in meshdev.common) or the fakes the dashboard's tests use
instead of a live source: production code never loads those.
"""
