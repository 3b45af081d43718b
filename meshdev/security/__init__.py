"""The mesh's security on the control side: its certificate authority (ca.py), which issues
every workload its SPIFFE certificate, as Istio's istiod does. The control plane delivers and
rotates them (control.py); the data plane never imports this package: it must never hold the
CA's key."""
