"""Fakes and sample data for tests and benchmarks: a scripted telemetry source, a synthetic
sidecar, sample views, an in-memory admin surface. Production never imports this package
(an import-linter contract enforces it).
"""
