"""`meshdev export grafana`: a Grafana dashboard of the mesh's figures over Prometheus."""
