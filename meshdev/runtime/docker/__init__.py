"""The docker runtime: a pod is a sidecar container owning the network namespace plus the app's
container joined to it, one bridge network per mesh, everything labelled (runtime.py is the
entry point).
"""
