"""The request pipeline (pipeline.py): listener -> route -> filters -> forwarding with retries
under the route timeout (forward.py), headers both ways, local replies, upgraded (WebSocket)
streams after their 101 (upgrade.py) and the access log.
"""
