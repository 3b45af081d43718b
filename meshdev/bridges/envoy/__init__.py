"""Envoy: every pod's sidecar config as an Envoy v3 bootstrap (export.py is the entry)."""
