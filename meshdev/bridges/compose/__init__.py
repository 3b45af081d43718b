"""Compose: the mesh as a docker-compose.yml with Envoy sidecars (export.py), and a
docker-compose.yml as a mesh.yaml (import_.py)."""
