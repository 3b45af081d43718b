"""Where pods run: one interface (base.py), two rooms (docker/, process/), and what both use:
choosing one (select.py), finding a running mesh (detect.py), probes (readiness.py) and the
control plane's loopback HTTP client (loopback.py).
"""
