"""Kubernetes + Istio, both ways (docs/bridges-kubernetes.md).

`export.py` writes a mesh as the Deployments, Services and Istio resources that run it on a
cluster; `importer.py` reads Istio's and Kubernetes' documents back into a mesh.yaml. Both
share `conventions.py` (names, labels, annotations, durations), and `canonical.py` says which
differences a round trip through a cluster's files may make. Nothing here talks to a cluster.
"""
