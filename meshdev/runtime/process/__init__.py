"""The process runtime: the same pods as local processes, each pod on its own loopback address,
labelled through their environment so `down` finds leftovers (runtime.py is the entry point).
"""
