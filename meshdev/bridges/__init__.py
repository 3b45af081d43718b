"""Bridges to the real engine: a mesh exported to what Kubernetes + Istio, Envoy and Compose
run unchanged, and Istio's or Compose's files imported as a mesh.yaml.

Pure translations between documents: they read the mesh model and the plan (the same rendered
sidecar configs meshdev's own sidecars serve) and never start, call or inspect anything. Each
target is its own room (kubernetes/, istio/, envoy/, compose/); what a target cannot express is
reported by field, never silently dropped.
"""
